"""Packaging contracts: a cheap `import chia_async`, lazy public names, clear errors for
missing extras, py.typed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import chia_async
from chia_async.extras import MissingExtraError, require

HEAVY = [
    "openai",
    "anthropic",
    "google.genai",
    "aioboto3",
    "botocore",
    "mcp",
    "ray",
    "httpx2",
    "pydantic",
    "uvicorn",
    "anyio",
]


def python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_import_chia_async_loads_no_sdk_mcp_or_ray() -> None:
    out = python(
        f"""
        import json, sys
        import chia_async
        print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
        """
    )
    assert json.loads(out) == []


def test_public_names_resolve_lazily() -> None:
    out = python(
        """
        import sys
        import chia_async
        assert "chia_async.base" not in sys.modules
        chia_async.TextDelta
        assert "chia_async.events" in sys.modules
        assert "chia_async.base" not in sys.modules
        print(chia_async.LLMCallBase.__name__)
        """
    )
    assert out.strip() == "LLMCallBase"


def test_every_exported_name_exists() -> None:
    import chia_async.testing

    for module in (chia_async, chia_async.testing):
        for name in module.__all__:
            if name == "ScriptedModelServer":
                continue  # needs the testing extra; covered by its own tests
            assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError):
        _ = chia_async.NoSuchThing  # type: ignore[attr-defined]


def test_missing_extra_names_the_pip_install() -> None:
    out = python(
        """
        import sys
        sys.modules["openai"] = None  # as if not installed
        from chia_async.extras import require
        try:
            require("openai", "openai", feature="OpenAICompatLLM")
        except ImportError as exc:
            print(type(exc).__name__, "|", exc)
        """
    )
    assert out.startswith("MissingExtraError |")
    assert "pip install 'chia-async[openai]'" in out
    assert "OpenAICompatLLM" in out


def test_require_returns_the_module() -> None:
    assert require("json", "none", feature="x") is json
    with pytest.raises(MissingExtraError):
        require("chia_async_no_such_module", "all", feature="x")


def test_py_typed_is_shipped() -> None:
    assert (Path(chia_async.__file__).parent / "py.typed").exists()


def test_scripted_server_without_the_testing_extra_names_it() -> None:
    out = python(
        """
        import sys
        sys.modules["uvicorn"] = None
        try:
            from chia_async.testing import ScriptedModelServer
        except ImportError as exc:
            print(exc)
        """
    )
    assert "pip install 'chia-async[testing]'" in out
