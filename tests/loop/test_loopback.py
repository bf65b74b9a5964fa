"""In-process MCP servers served on loopback for CLI backends: reachable with the run's token
only, and stopped (port closed, no task or socket left) when the run ends."""

from __future__ import annotations

import socket

import httpx2
import pytest
from mcp.server import MCPServer

from chia_async.errors import InvalidRequestError
from chia_async.loop.loopback import loopback_tools
from chia_async.loop.mcp import McpToolbox
from chia_async.tools import ChiaTool
from tests.loop.test_mcp import no_leaks

__all__ = ["no_leaks"]


def calc() -> MCPServer:
    server = MCPServer("calc", log_level="CRITICAL")

    @server.tool(description="Add two integers.")
    async def add(a: int, b: int) -> int:
        return a + b

    return server


async def test_in_process_tools_become_token_protected_http_tools() -> None:
    other = ChiaTool.http("http://127.0.0.1:9/mcp", name="other")
    tools = [ChiaTool.in_process(calc(), name="calc", allowed_tools=["add"]), other]
    async with loopback_tools(tools) as served:
        http, unchanged = served
        assert unchanged is other
        assert http.transport == "http" and http.name == "calc"
        assert http.url.startswith("http://127.0.0.1:") and http.allowed_tools == ("add",)
        assert "Bearer" not in repr(http)  # header values never in the repr
        async with httpx2.AsyncClient() as client:
            refused = await client.post(http.url, json={})
            wrong = await client.post(http.url, json={}, headers={"Authorization": "Bearer x"})
        assert refused.status_code == wrong.status_code == 401
        async with McpToolbox([http]) as box:
            outcome = await box.call("calc", "add", {"a": 2, "b": 3})
            assert (outcome.text, outcome.is_error) == ("5", False)
        port = int(http.url.split(":")[2].split("/")[0])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass  # stopped: nothing listens any more


async def test_tools_without_in_process_servers_pass_through() -> None:
    tools = [ChiaTool.http("http://127.0.0.1:9/mcp", name="x")]
    async with loopback_tools(tools) as served:
        assert served == tuple(tools)


async def test_an_object_that_is_not_a_server_is_a_typed_error() -> None:
    with pytest.raises(InvalidRequestError, match="needs an mcp server object"):
        async with loopback_tools([ChiaTool.in_process(object(), name="bad")]):
            pass
