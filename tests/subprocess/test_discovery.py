"""find_cli and probe_version against real executables."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chia_async import errors
from chia_async.subprocess import build_child_env, find_cli, probe_version

from .conftest import assert_group_gone

INSTALL = "npm install -g @anthropic-ai/claude-code"


def test_missing_cli_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(errors.CLINotFoundError) as info:
        find_cli("claude", install_command=INSTALL, node_id="n", search_path=str(tmp_path))
    error = info.value
    assert INSTALL in str(error)
    assert error.install_command == INSTALL
    assert error.cli == "claude"
    assert error.node_id == "n"
    assert not error.retryable


def test_missing_explicit_path(tmp_path: Path) -> None:
    with pytest.raises(errors.CLINotFoundError, match="npm install"):
        find_cli("claude", explicit_path=tmp_path / "nope", install_command=INSTALL)


def test_a_file_that_is_not_executable_is_not_found(tmp_path: Path) -> None:
    path = tmp_path / "claude"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o644)
    with pytest.raises(errors.CLINotFoundError):
        find_cli("claude", explicit_path=str(path), install_command=INSTALL)
    with pytest.raises(errors.CLINotFoundError):
        find_cli("claude", install_command=INSTALL, search_path=str(tmp_path))


def test_found_on_the_search_path_and_by_explicit_path(
    make_cli: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = make_cli("fake-cli")
    found = find_cli("fake-cli", install_command=INSTALL, search_path=str(cli.parent))
    assert found == str(cli)
    assert os.path.isabs(found)
    assert find_cli("other", explicit_path=str(cli), install_command=INSTALL) == str(cli)
    # a relative explicit path is resolved against the working directory
    monkeypatch.chdir(cli.parent)
    assert find_cli("x", explicit_path="./fake-cli", install_command=INSTALL) == str(cli)
    # a bare explicit name is looked up on PATH like the default name
    monkeypatch.setenv("PATH", str(cli.parent))
    assert find_cli("claude", explicit_path="fake-cli", install_command=INSTALL) == str(cli)


@pytest.mark.usefixtures("no_leaks")
async def test_probe_version(make_cli: Callable[..., Path]) -> None:
    assert await probe_version(str(make_cli("fake-cli"))) == "1.2.3"


@pytest.mark.usefixtures("no_leaks")
async def test_probe_version_printed_on_stderr(make_cli: Callable[..., Path]) -> None:
    assert await probe_version(str(make_cli("fake-cli-err", "version-stderr"))) == "2.0.1-beta.3"


@pytest.mark.usefixtures("no_leaks")
async def test_probe_without_a_version_or_a_binary_is_none(
    make_cli: Callable[..., Path], tmp_path: Path
) -> None:
    assert await probe_version(str(make_cli("fake-noise", "noise"))) is None
    assert await probe_version(str(tmp_path / "missing")) is None


@pytest.mark.usefixtures("no_leaks")
async def test_a_hanging_probe_is_cut_at_the_timeout_and_leaves_nothing(
    make_cli: Callable[..., Path], tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    cli = make_cli("fake-hang", "grandchild")
    env = build_child_env(explicit={"FAKE_CLI_PIDFILE": str(pidfile)})
    started = time.monotonic()
    assert await probe_version(str(cli), timeout=0.5, env=env) is None
    assert time.monotonic() - started < 3
    leader, grandchild = map(int, pidfile.read_text().split())
    await assert_group_gone(leader, grandchild)
