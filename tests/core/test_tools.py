"""ChiaTool descriptions: validation and secret-free reprs."""

from __future__ import annotations

import pickle

import pytest

from chia_async.tools import ChiaTool


def test_http_stdio_and_in_process() -> None:
    http = ChiaTool.http("http://127.0.0.1:8000/mcp", name="calc", allowed_tools=["add"])
    assert http.transport == "http" and http.allowed_tools == ("add",)
    stdio = ChiaTool.stdio("python", "-m", "server", name="files", env={"A": "1"})
    assert stdio.command == ("python", "-m", "server")
    server = type("FakeServer", (), {"name": "My Server!"})()
    local = ChiaTool.in_process(server)
    assert local.name == "My_Server_" and local.server is server
    assert pickle.loads(pickle.dumps(http)) == http


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: ChiaTool.http("ftp://x"), "http"),
        (lambda: ChiaTool.http("http://x", name="bad name"), "name"),
        (lambda: ChiaTool.http("http://x", name="x" * 65), "name"),
        (lambda: ChiaTool.stdio([]), "command"),
        (lambda: ChiaTool.in_process(None), "server"),
        (lambda: ChiaTool.http("http://x", tool_timeout=0), "tool_timeout"),
    ],
)
def test_bad_tools_are_rejected(build, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        build()


def test_repr_hides_header_and_env_values() -> None:
    tool = ChiaTool.http("https://h/mcp", headers={"Authorization": "Bearer sekrit-123"})
    stdio = ChiaTool.stdio("srv", env={"API_KEY": "sekrit-456"})
    assert "sekrit" not in repr(tool) and "Authorization" in repr(tool)
    assert "sekrit" not in repr(stdio) and "API_KEY" in repr(stdio)
