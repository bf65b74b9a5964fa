"""Shared helpers for the subprocess tests: the fake CLI, leak checks, group checks."""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from chia_async.subprocess import ProcessSpec, build_child_env, live_process_groups

FAKE_CLI = Path(__file__).with_name("fake_cli.py")

#: how long init may take to reap orphaned zombies (here it sweeps about once a second)
REAP_TIMEOUT = 10.0


def fake_argv(*args: str) -> list[str]:
    return [sys.executable, str(FAKE_CLI), *args]


def fake_spec(*args: str, env: Mapping[str, str] | None = None, **options: Any) -> ProcessSpec:
    """A spec running the fake CLI in the mode ``args`` with the allowlisted environment."""
    options.setdefault("total_timeout", 30.0)  # a hung test fails instead of hanging
    return ProcessSpec(argv=fake_argv(*args), env=build_child_env(explicit=env), **options)


def open_fds() -> dict[int, str]:
    fds: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the directory handle of this very listing
    return fds


@pytest.fixture
async def no_leaks() -> AsyncIterator[None]:
    """Fail the test if it left a process group registered or a file descriptor open.

    Measured inside the test's event loop, so the loop's own descriptors are on both sides;
    zero tolerance: a supervised run owns exactly its three pipes and closes them.
    """
    before = open_fds()
    yield
    assert live_process_groups() == frozenset()
    after = open_fds()
    leaked = {fd: target for fd, target in after.items() if before.get(fd) != target}
    assert not leaked, f"file descriptors leaked: {leaked}"


def group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, state) of every process whose process group is ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            data = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        if int(fields[2]) == pgid:
            members.append((int(entry), fields[0].decode()))
    return members


def process_state(pid: int) -> str | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split()[0].decode()


async def assert_group_gone(pgid: int, *pids: int) -> None:
    """Assert that nothing of group ``pgid`` (and none of ``pids``) is left.

    First strictly, at once: no member is still running — the supervisor's guarantee.
    Then eventually: the group and the pids vanish entirely once init has reaped the
    orphaned zombies (descendants whose parent died with them are init's to reap).
    """
    running = [(pid, st) for pid, st in group_members(pgid) if st not in ("Z", "X")]
    assert not running, f"still running in group {pgid}: {running}"
    for pid in pids:
        assert process_state(pid) in (None, "Z", "X"), f"pid {pid} still running"
    deadline = time.monotonic() + REAP_TIMEOUT
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, f"group {pgid} not reaped: {group_members(pgid)}"
        await anyio.sleep(0.05)
    while any(process_state(pid) is not None for pid in pids):
        assert time.monotonic() < deadline, f"pids not reaped: {pids}"
        await anyio.sleep(0.05)


@pytest.fixture
def make_cli(tmp_path: Path) -> Callable[..., Path]:
    """Write an executable wrapper that runs the fake CLI with fixed leading arguments."""

    def make(name: str, *args: str) -> Path:
        path = tmp_path / "bin" / name
        path.parent.mkdir(exist_ok=True)
        quoted = " ".join(f"'{a}'" for a in (sys.executable, str(FAKE_CLI), *args))
        path.write_text(f'#!/bin/sh\nexec {quoted} "$@"\n')
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return path

    return make
