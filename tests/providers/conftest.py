"""Checks every provider-backend test runs under: nothing but loopback is reached, and no
socket or pipe outlives an async test."""

from __future__ import annotations

import inspect
import socket
import time
from collections.abc import Iterator

import pytest

from tests.cli_support import open_fds


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection off this machine (a metadata server, a token endpoint) fails the test."""
    original = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = str(address[0])  # type: ignore[index]
            if not (host.startswith("127.") or host in ("::1", "localhost")):
                raise AssertionError(f"a test tried to reach {address!r}")
        return original(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(autouse=True)
def no_fd_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    if not inspect.iscoroutinefunction(request.function):
        # sync calls share the process-wide background loop, whose clients are long-lived
        yield
        return
    before = open_fds()
    yield
    deadline = time.monotonic() + 5
    while open_fds() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_fds() <= before, "sockets or pipes leaked"
