"""In-process MCP servers on a loopback port, for tools that another process must reach.

The provider tool loop talks to a :meth:`ChiaTool.in_process <chia_async.tools.ChiaTool.in_process>`
server in memory. A coding-agent CLI is another process, so for a CLI backend the runtime
serves the same server object over streamable HTTP on ``127.0.0.1`` for the duration of one
run, and hands the CLI a :meth:`ChiaTool.http <chia_async.tools.ChiaTool.http>` pointing at it::

    async with loopback_tools(attempt.tools, node_id="codex") as tools:
        ...  # tools: every in_process tool replaced by an http one; the others unchanged

Each server runs in the caller's event loop (its tools may use the application's loop-bound
objects), on a port the OS picks, and only answers requests carrying a bearer token made for
that run: another local user or process cannot call the tools. The server is stopped — its
connections closed, its session manager shut down — when the block exits, on every path.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

from chia_async.errors import InvalidRequestError
from chia_async.redaction import register_secret
from chia_async.tools import ChiaTool

__all__ = ["loopback_tools"]

logger = logging.getLogger("chia_async.loop")

_START_TIMEOUT = 10.0
_SHUTDOWN_GRACE = 1.0


@contextlib.asynccontextmanager
async def loopback_tools(
    tools: Sequence[ChiaTool], *, node_id: str = ""
) -> AsyncIterator[tuple[ChiaTool, ...]]:
    """``tools`` with every in-process server served on loopback for the block's duration."""
    if not any(tool.transport == "in_process" for tool in tools):
        yield tuple(tools)
        return
    async with contextlib.AsyncExitStack() as stack:
        served: list[ChiaTool] = []
        for tool in tools:
            if tool.transport != "in_process":
                served.append(tool)
                continue
            url, token = await stack.enter_async_context(_serve(tool, node_id))
            served.append(
                ChiaTool.http(
                    url,
                    name=tool.name,
                    headers={"Authorization": f"Bearer {token}"},
                    allowed_tools=tool.allowed_tools,
                    tool_timeout=tool.tool_timeout,
                )
            )
        yield tuple(served)


@contextlib.asynccontextmanager
async def _serve(tool: ChiaTool, node_id: str) -> AsyncIterator[tuple[str, str]]:
    import uvicorn

    build = getattr(tool.server, "streamable_http_app", None)
    if build is None:
        raise InvalidRequestError(
            node_id,
            f"tool {tool.name!r}: in_process needs an mcp server object (mcp.server.MCPServer "
            f"or mcp.server.Server), got {type(tool.server).__name__}",
        )
    token = secrets.token_urlsafe(32)
    register_secret(token)
    app = _RequireToken(build(streamable_http_path="/mcp"), token)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level="critical",
            access_log=False,
            lifespan="on",
            ws="none",
            timeout_graceful_shutdown=int(_SHUTDOWN_GRACE),
        )
        server = _InLoopServer(config)
        task = asyncio.get_running_loop().create_task(
            server.serve(sockets=[sock]), name=f"mcp-loopback:{tool.name}"
        )
        try:
            async with asyncio.timeout(_START_TIMEOUT):
                while not server.started:
                    if task.done():
                        break
                    await asyncio.sleep(0.001)
            if not server.started:
                error = task.exception() if task.done() and not task.cancelled() else None
                raise InvalidRequestError(
                    node_id, f"tool {tool.name!r}: its loopback MCP server did not start: {error}"
                )
            logger.debug("serving in-process MCP server %r on 127.0.0.1:%d", tool.name, port)
            yield f"http://127.0.0.1:{port}/mcp", token
        finally:
            server.stop()
            await asyncio.shield(asyncio.wait({task}, timeout=_SHUTDOWN_GRACE * 5))
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.shield(asyncio.wait({task}, timeout=_SHUTDOWN_GRACE))
    finally:
        sock.close()


class _RequireToken:
    """ASGI middleware: HTTP requests must carry ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self._app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or ()).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"text/plain")],
                    }
                )
                await send({"type": "http.response.body", "body": b"unauthorized"})
                return
        await self._app(scope, receive, send)


@functools.cache
def _server_class() -> type[Any]:
    import uvicorn

    class InLoopServer(uvicorn.Server):
        """uvicorn in the caller's loop: no signal handlers, prompt start and stop."""

        def __init__(self, config: uvicorn.Config) -> None:
            super().__init__(config)
            self._exit = asyncio.Event()

        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield  # the application owns the process's signals

        def stop(self) -> None:
            self.should_exit = True
            self._exit.set()

        async def main_loop(self) -> None:
            await self._exit.wait()  # not uvicorn's 100 ms polling

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for server in self.servers:
                server.close()
            for connection in list(self.server_state.connections):
                connection.shutdown()
            tasks = set(self.server_state.tasks)
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=_SHUTDOWN_GRACE)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=_SHUTDOWN_GRACE)
            await asyncio.sleep(0)
            if self.config.lifespan != "off":
                await self.lifespan.shutdown()

    return InLoopServer


def _InLoopServer(config: Any) -> Any:
    return _server_class()(config)
