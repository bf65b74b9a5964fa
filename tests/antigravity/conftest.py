"""Leak checks for the Antigravity tests: no child process, process group or descriptor
may outlive a test, whatever path the call took."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from chia_async import sync
from chia_async.subprocess import live_process_groups
from tests.cli_support import children_of_this_process


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    sync.background_loop()  # process-wide and long-lived by design: not a per-call leak
    baseline = set(children_of_this_process())
    before_fds = open_fds()
    yield
    deadline = time.monotonic() + 5
    while (set(children_of_this_process()) - baseline or live_process_groups()) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.02)
    assert not set(children_of_this_process()) - baseline, "child processes left behind"
    assert not live_process_groups(), "a process group is still registered for teardown"
    deadline = time.monotonic() + 5
    while open_fds() > before_fds and time.monotonic() < deadline:
        time.sleep(0.02)
    assert open_fds() <= before_fds, "file descriptors leaked"
