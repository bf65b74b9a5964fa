"""Fixtures for the ``chia-async`` command's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chia_async.cli import builtin_scripts
from tests.cli_support import children_of_this_process


@pytest.fixture
def scripted(model_server: Any) -> Any:
    """The scripted model server with ``chia-async serve``'s built-in scripts."""
    for script, _ in builtin_scripts():
        model_server.add(script)
    return model_server


@pytest.fixture
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch ``$XDG_STATE_HOME`` (where ``run`` keeps sessions) and ``$HOME``."""
    home = tmp_path / "home"
    home.mkdir()
    state = tmp_path / "state"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "CODEX_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return state


@pytest.fixture(autouse=True)
def no_children_left() -> Iterator[None]:
    """Every process a command started (stdio MCP servers, CLIs) is gone when it returns."""
    before = set(children_of_this_process())
    yield
    left = set(children_of_this_process()) - before
    assert not left, f"child processes left behind: {left}"
