"""A real ``mcp.server.MCPServer`` for the McpToolbox tests, served three ways.

``build_server()`` returns the server and the :class:`ServerState` it records into; the tests
use it in-process and over streamable HTTP (a uvicorn thread, see :class:`ThreadedHttpServer`).
Run as a script it serves the same tools over stdio::

    python tests/loop/mcp_test_server.py [--legacy]

Tools: ``add``, ``echo``, ``slow(seconds)``, ``fail`` (raises), ``grow`` (adds a tool named
``extra`` and announces the change), ``stats`` (the request counts and cancellations the server
saw — the only window into a stdio server), ``getenv(name)``, ``cwd``, ``spawn_helper``
(starts a long-sleeping process in the server's process group and returns its pid) and
``exit_now`` (the server process dies mid-call).
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp_types import METHOD_NOT_FOUND


@dataclass
class ServerState:
    """What the server saw: requests per method, tool runs started and cancelled."""

    methods: collections.Counter[str] = field(default_factory=collections.Counter)
    started: collections.Counter[str] = field(default_factory=collections.Counter)
    cancelled: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "methods": dict(self.methods),
            "started": dict(self.started),
            "cancelled": self.cancelled,
        }


def build_server(
    name: str = "testserver", *, legacy: bool = False
) -> tuple[MCPServer[Any], ServerState]:
    """The test server; ``legacy=True`` refuses ``server/discover``, so clients fall back to
    the 2025-11-25 handshake (as with a server built on an older SDK)."""
    state = ServerState()
    # CRITICAL: the `fail` tool would otherwise print a full traceback on every run.
    server: MCPServer[Any] = MCPServer(name, log_level="CRITICAL")

    async def count(ctx: Any, call_next: Any) -> Any:
        state.methods[ctx.method] += 1
        if legacy and ctx.method == "server/discover":
            raise MCPError(METHOD_NOT_FOUND, "Method not found")
        return await call_next(ctx)

    server.middleware.append(count)

    # Every tool is async: a sync tool would run in anyio's worker threads, which outlive a
    # test and would blur the "no thread left" checks.
    @server.tool(description="Add two integers.")
    async def add(a: int, b: int) -> int:
        state.started["add"] += 1
        return a + b

    @server.tool(description="Return the text unchanged.")
    async def echo(text: str) -> str:
        state.started["echo"] += 1
        return text

    @server.tool(description="Sleep for the given number of seconds.")
    async def slow(seconds: float) -> str:
        state.started["slow"] += 1
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            state.cancelled += 1
            raise
        return f"slept {seconds}"

    @server.tool(description="Always fails.")
    async def fail() -> str:
        raise RuntimeError("the fail tool failed")

    @server.tool(description="Add a tool named 'extra' and announce the change.")
    async def grow(ctx: Context) -> str:
        async def extra(x: str) -> str:
            return x * 2

        if "extra" not in {t.name for t in await server.list_tools()}:
            server.add_tool(extra, name="extra", description="Double a string.")
        # 2026-07-28 clients hear about it through their subscriptions/listen stream, earlier
        # ones through notifications/tools/list_changed on the session.
        await ctx.notify_tools_changed()
        await ctx.session.send_tool_list_changed()
        return "grown"

    @server.tool(description="Requests and cancellations this server saw.")
    async def stats() -> dict[str, Any]:
        return state.snapshot()

    @server.tool(description="The value of an environment variable, or null.")
    async def getenv(name: str) -> str | None:
        return os.environ.get(name)

    @server.tool(description="The server's working directory.")
    async def cwd() -> str:
        return os.getcwd()

    @server.tool(description="Start a helper process in this server's process group.")
    async def spawn_helper() -> int:
        helper = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return helper.pid

    @server.tool(description="Kill this server process.")
    async def exit_now() -> str:
        os._exit(3)

    return server, state


def loopback_socket() -> socket.socket:
    """A listening loopback socket whose accepted connections get TCP_NODELAY.

    asyncio sets TCP_NODELAY only on sockets whose ``proto`` is IPPROTO_TCP, and accepted
    sockets inherit the listener's: with a plain ``socket.socket()`` (proto 0) every response
    written as headers + body waits ~40 ms for the client's delayed ACK.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


class ThreadedHttpServer:
    """An ASGI app served by uvicorn on ``http://127.0.0.1:PORT`` in a background thread."""

    def __init__(self, app: Any, path: str = "/mcp") -> None:
        self._app = app
        self._path = path
        self._sock = loopback_socket()
        self.port: int = self._sock.getsockname()[1]
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self._path}"

    def start(self) -> ThreadedHttpServer:
        import uvicorn

        config = uvicorn.Config(
            self._app,
            log_level="critical",
            access_log=False,
            lifespan="on",
            ws="none",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)

        def serve() -> None:
            try:
                asyncio.run(self._server.serve(sockets=[self._sock]))
            except BaseException as exc:  # surfaced by start()
                self._error = exc
            finally:
                self._sock.close()

        self._thread = threading.Thread(target=serve, name="mcp-http-test-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"test HTTP server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("test HTTP server did not start within 15 s")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=5)
        assert not self._thread.is_alive(), "test HTTP server thread did not stop"
        self._thread = None


if __name__ == "__main__":
    build_server(legacy="--legacy" in sys.argv)[0].run("stdio")
