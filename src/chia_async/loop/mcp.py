"""MCP sessions for the provider tool loop: :class:`McpToolbox`.

One toolbox is opened per ``stream()`` call for that call's :class:`~chia_async.tools.ChiaTool`
list, and every iteration of the tool loop reuses it::

    async with McpToolbox(tools, node_id="claude-api") as box:
        specs = await box.list_tools()            # listed once at open, then from cache
        outcome = await box.call("files", "read", {"path": "README.md"})
        outcome.text, outcome.is_error            # failures come back as data, not exceptions

Why this shape — peers lose most of a tool loop's time to reconnecting or re-listing tools
every turn; here a connection is opened once, tools are listed once, and a call costs one MCP
request.

**One task owns each session.** The ``mcp`` client enters anyio task groups and cancel scopes
that must be exited by the task that entered them, and a transport failure (an HTTP POST that
cannot connect) cancels the task that opened the session. So every connection runs as a
long-lived *owner task* in the box's task group: it opens the session, lists the tools, reports
that it is ready, then serves *jobs* sent over a memory channel, each in its own child task so
that calls overlap, and closes the session when the box closes. A failing transport therefore
takes down its owner, never the caller: pending and later calls to that server come back as
error outcomes naming the cause.

**The channel protocol.** A job is a coroutine function to run against the session, a cancel
scope and a completion event. The caller registers it as pending, ``send_nowait``\\ s it
(the channel is unbounded, so sending never blocks and cannot be interrupted half-way), and
waits for the event under the call's deadline. The owner runs the job inside the job's own
scope; the caller cancels that scope when its deadline passes or when it is itself cancelled,
which cancels the MCP request (the SDK tells the server) and leaves the session usable. When
an owner ends, for whatever reason, it fails every pending job with the reason.

**Transports.**

* ``http``: the SDK's streamable HTTP client over an ``httpx2`` client carrying the tool's
  headers. Responses with an error status are recorded so that a failed handshake can be told
  apart: 401/403 is an authentication error, 404 a wrong URL, 5xx a server error.
* ``stdio``: our own small transport (newline-delimited JSON-RPC over the child's pipes)
  rather than the SDK's, for three guarantees the SDK's does not give: the environment is
  :func:`~chia_async.subprocess.environment.build_child_env` (PATH, HOME, locale... plus the
  tool's ``env``, never an inherited API key), stderr is kept as a bounded tail that goes into
  error messages, and closing sweeps the child's whole process group, so a helper the server
  started cannot outlive it.
* ``in_process``: connected **in memory** (``mcp.Client(server)``), not served on a loopback
  port. The SDK's in-process path runs the server's real request handling (argument validation,
  error mapping, the 2026-07-28 per-request protocol, change subscriptions) without the wire.
  Measured on the development machine (bench/mcp_loop.py and ad-hoc runs): in memory ~0.4 ms
  per call and ~2 ms to open; uvicorn on loopback in the same loop ~6 ms per call, ~100 ms to
  start and ~150 ms to stop (and ~45 ms per call when uvicorn ran in a thread and its socket
  lacked ``TCP_NODELAY``). Tools also run on the caller's event loop, so an in-process tool may
  use the application's loop-bound objects (connection pools, locks), which a server thread
  with its own loop would break. (A CLI backend, whose CLI is another process, does need the
  server on a port; that is not this module's job.)

**Tool lists.** Listed once at open (every page) and cached. A server that advertises
``tools.listChanged`` is watched: on 2026-07-28 connections through a ``subscriptions/listen``
stream opened *before* the first listing (so no change can slip between the two); on earlier
protocol versions through ``notifications/tools/list_changed``. A change marks the cache stale
and the next :meth:`McpToolbox.list_tools` re-lists that server only; :attr:`McpToolbox.revision`
tells the loop whether to recompile its tool declarations.

**Errors.** Opening raises a typed :class:`~chia_async.errors.ChiaError` naming the tool (see
:class:`McpToolbox`); after that nothing raises but cancellation: an unknown server or tool,
arguments the tool rejects, a tool that fails, a timeout and a lost connection all come back
as a :class:`ToolOutcome` with ``is_error=True`` and a message the model can act on. Messages
never contain header values, ``env`` values, URL credentials or query strings.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Self, TypeVar
from urllib.parse import urlsplit

import anyio
import anyio.abc
import orjson

try:
    import httpx2
    import mcp_types
    from mcp import Client

    # the type Transport (re-exported as mcp.client.Transport) yields; listed in its __all__
    from mcp.client._transport import TransportStreams
    from mcp.client.streamable_http import streamable_http_client
    from mcp.server import Server
    from mcp.server.mcpserver import MCPServer
    from mcp.shared.exceptions import MCPError
    from mcp.shared.message import SessionMessage
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "chia_async.loop.mcp needs the 'mcp' package (>= 2.3); install a provider extra, "
        "e.g. pip install 'chia-async[anthropic]'"
    ) from exc

from chia_async import __version__
from chia_async.errors import (
    AuthenticationError,
    ChiaError,
    InvalidRequestError,
    ProcessError,
    ServerError,
)
from chia_async.errors import TimeoutError as CallTimeoutError
from chia_async.redaction import REDACTED, redact
from chia_async.subprocess.environment import build_child_env
from chia_async.tools import ChiaTool

__all__ = ["CLOSE_TIMEOUT", "CONNECT_TIMEOUT", "McpTool", "McpToolbox", "ToolOutcome"]

logger = logging.getLogger("chia_async.loop.mcp")

#: Default bound on opening one connection: spawn or connect, handshake, first listing.
CONNECT_TIMEOUT = 30.0
#: Default bound on closing the box gracefully before the remaining connections are cancelled.
CLOSE_TIMEOUT = 10.0

# A paginating server that never ends its listing cannot hang the open.
_MAX_LIST_PAGES = 100
# stdio teardown, after stdin is closed (the MCP way to ask a stdio server to exit): the grace
# to exit on its own, then SIGTERM to the group and its grace, then SIGKILL and the wait for
# the kernel to deliver it. At most _EXIT_GRACE + _TERM_GRACE + _KILL_WAIT, shielded.
_EXIT_GRACE = 2.0
_TERM_GRACE = 2.0
_KILL_WAIT = 1.0
_EXIT_POLL = 0.01
# stdout lines longer than this are dropped (the request they answer then times out) rather
# than buffered without bound; 64 MiB matches the CLI line cap.
_MAX_LINE = 64 * 1024 * 1024
_STDERR_TAIL = 4096
_READ_CHUNK = 256 * 1024
# Re-opening a lost change subscription backs off up to this many seconds.
_RELISTEN_MAX_DELAY = 30.0

_CLIENT_INFO = mcp_types.Implementation(name="chia_async", version=__version__)

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Public data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class McpTool:
    """One tool a server offers: what the model is told about it.

    ``server`` is the :attr:`ChiaTool.name <chia_async.tools.ChiaTool.name>` it came from;
    ``input_schema`` is the server's JSON Schema for the arguments, as sent (treat it as
    read-only: it is shared with the box's cache).
    """

    server: str
    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """The result of :meth:`McpToolbox.call`, ready to go back to the model.

    ``text`` is the tool's text content (non-text blocks are summarised, e.g.
    ``[image image/png]``; a result with only structured content is its JSON); for a failure it
    is a message saying what went wrong. ``structured`` is the tool's ``structuredContent``
    (None when it sent none), ``content`` its content blocks as plain JSON-ready dicts (for
    providers that accept images in tool results), ``duration`` the seconds the call took as
    the caller saw it.
    """

    text: str
    is_error: bool
    structured: Any = None  # Any already admits None; Optional[Any] would force checks on users
    duration: float = 0.0
    content: tuple[dict[str, Any], ...] = ()


# --------------------------------------------------------------------------------------------
# The box
# --------------------------------------------------------------------------------------------


class McpToolbox:
    """The MCP connections of one call, opened together and closed together.

    ``async with McpToolbox(tools, node_id=...) as box`` connects to every tool's server
    concurrently. It must be entered and exited by the same task, and its methods called from
    tasks of the same event loop (any number of them at once).

    Opening raises, after closing whatever did open, the first failure in ``tools`` order, as:

    * :class:`~chia_async.errors.InvalidRequestError` — the tool is misconfigured and retrying
      cannot help: the stdio command does not exist or is not executable, ``cwd`` is missing,
      the URL answers 404 or another 4xx, ``in_process`` got something that is not an ``mcp``
      server. (Not :class:`~chia_async.errors.CLINotFoundError`: that class is for the
      backends' own CLIs and carries an install command; a tool's command is the caller's.)
    * :class:`~chia_async.errors.AuthenticationError` — the server answered 401 or 403: the
      tool's headers are missing or wrong. Never retried.
    * :class:`~chia_async.errors.ServerError` — the server is unreachable (refused, DNS, reset),
      answered 5xx, or broke the handshake. Transient, so the call's retry policy may retry.
    * :class:`~chia_async.errors.ProcessError` — the stdio server exited during the handshake;
      carries its exit code and stderr tail.
    * :class:`~chia_async.errors.TimeoutError` — no ready session within ``connect_timeout``.

    Every message names the tool (``MCP server 'files' (stdio: npx ...)``) and contains no
    header or ``env`` value.

    Closing — normal exit, an exception, cancellation — is shielded from cancellation and
    bounded: in-flight calls are cancelled, every session is closed (stdio servers get EOF, then
    SIGTERM and SIGKILL to their process group; no process is left), and a connection still
    closing after ``close_timeout`` is cancelled, which leaves at most the stdio kill sequence
    (≤ 5 s) to run.
    """

    def __init__(
        self,
        tools: Sequence[ChiaTool],
        *,
        node_id: str = "",
        connect_timeout: float = CONNECT_TIMEOUT,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        checked = tuple(tools)
        for tool in checked:
            if not isinstance(tool, ChiaTool):
                raise TypeError(f"tools must be ChiaTool objects, got {type(tool).__name__}")
        names = [tool.name for tool in checked]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"two tools share the name {duplicates[0]!r}; names must be unique")
        if not connect_timeout > 0 or not close_timeout > 0:
            raise ValueError("connect_timeout and close_timeout must be positive")
        self._node_id = node_id
        self._close_timeout = close_timeout
        self._connections = {
            tool.name: _Connection(tool, node_id=node_id, connect_timeout=connect_timeout)
            for tool in checked
        }
        self._task_group: anyio.abc.TaskGroup | None = None
        self._state = "new"  # new -> open -> closed

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError("an McpToolbox can be entered only once")
        self._state = "open"
        started = time.perf_counter()
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        try:
            for connection in self._connections.values():
                task_group.start_soon(connection.run, name=f"mcp-owner:{connection.tool.name}")
            # Each owner bounds its own open by connect_timeout, so this wait is bounded too.
            for connection in self._connections.values():
                await connection.opened.wait()
            failures = [c.open_error for c in self._connections.values() if c.open_error]
            if failures:
                for extra in failures[1:]:
                    logger.warning("%s", extra)
                raise failures[0]
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        logger.debug(
            "opened %d MCP connection(s) in %.1f ms",
            len(self._connections),
            (time.perf_counter() - started) * 1000,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._state == "closed":
            return
        self._state = "closed"
        task_group = self._task_group
        if task_group is None:
            return
        connections = list(self._connections.values())
        # Shielded: a cancelled caller still gets every session closed and every stdio server
        # stopped. Owner tasks are shielded as well (see _Connection.run), so nothing but this
        # method ends them; the task group's own exit below then only collects finished tasks.
        with anyio.CancelScope(shield=True):
            for connection in connections:
                connection.stop()
            with anyio.move_on_after(self._close_timeout):
                for connection in connections:
                    await connection.closed.wait()
            for connection in connections:
                if not connection.closed.is_set():
                    logger.warning(
                        "%s did not close within %g s; cancelling it",
                        connection.label,
                        self._close_timeout,
                    )
                    connection.abort()
            for connection in connections:
                await connection.closed.wait()
        # All owners have finished. Not passing the body's exception on: anyio would wrap it in
        # an ExceptionGroup, and the caller should see the exception its body raised.
        await task_group.__aexit__(None, None, None)

    # -- the loop's API -------------------------------------------------------------------

    @property
    def servers(self) -> tuple[str, ...]:
        """The server names, in the order the tools were given."""
        return tuple(self._connections)

    @property
    def alive(self) -> bool:
        """Open, and no connection has been lost (a pooled toolbox that is not is replaced)."""
        return self._state == "open" and not any(
            c.closed.is_set() or c.lost for c in self._connections.values()
        )

    @property
    def stale(self) -> bool:
        """A server reported that its tools changed: :meth:`list_tools` will re-list it."""
        return any(c.stale for c in self._connections.values())

    @property
    def revision(self) -> int:
        """Grows whenever a listing changes (a server re-listed after ``list_changed``).

        The loop can compare it between iterations and recompile its tool declarations only
        when it moved. Reading it does not re-list anything; :meth:`list_tools` does.
        """
        return sum(c.revision for c in self._connections.values())

    async def list_tools(self) -> list[McpTool]:
        """Every offered tool of every server, in server order, then the server's order.

        Served from the cache filled at open: no MCP request, unless a server reported that
        its tools changed since, in which case that server (only) is listed again first. A
        re-listing that fails keeps the previous list (with a warning). Respects
        :attr:`ChiaTool.allowed_tools <chia_async.tools.ChiaTool.allowed_tools>`.
        """
        self._check_open()
        stale = [c for c in self._connections.values() if c.stale]
        if stale:
            async with anyio.create_task_group() as tg:
                for connection in stale:
                    tg.start_soon(connection.refresh)
        return [tool for c in self._connections.values() for tool in c.tools]

    async def call(
        self, server: str, tool: str, arguments: Mapping[str, Any] | None = None
    ) -> ToolOutcome:
        """Call ``tool`` on ``server`` with ``arguments``; never raises but cancellation.

        The call is bounded by the tool's ``tool_timeout``. It fails as an outcome with
        ``is_error=True`` when the server or tool is unknown (or not in ``allowed_tools``),
        ``arguments`` is not a JSON object, the tool rejects the arguments or fails, the
        deadline passes (the request is then cancelled on the server) or the connection is
        lost. Cancelling the caller cancels the request and leaves the session usable.
        Concurrent calls, to one server or several, run concurrently.
        """
        started = time.perf_counter()

        def failed(message: str) -> ToolOutcome:
            return ToolOutcome(message, True, duration=time.perf_counter() - started)

        if self._state != "open":
            return failed("Error: the MCP connections of this call are closed")
        connection = self._connections.get(server)
        if connection is None:
            known = ", ".join(repr(name) for name in self._connections) or "none"
            return failed(f"Error: there is no MCP server named {server!r} (servers: {known})")
        # Typed as a mapping, but it comes from a model: check what actually arrived.
        given: object = {} if arguments is None else arguments
        if not isinstance(given, Mapping):
            return failed(
                f"Error: the arguments of {tool!r} must be a JSON object, "
                f"got {type(given).__name__}"
            )
        if not connection.offers(tool) and connection.stale:
            await connection.refresh()  # a tool announced since the last listing
        if not connection.offers(tool):
            return failed(connection.unknown_tool_message(tool))
        text, is_error, structured, content = await connection.call_tool(tool, dict(given))
        return ToolOutcome(text, is_error, structured, time.perf_counter() - started, content)

    def _check_open(self) -> None:
        if self._state != "open":
            raise RuntimeError("the McpToolbox is not open (use it inside 'async with')")


# --------------------------------------------------------------------------------------------
# One connection and its owner task
# --------------------------------------------------------------------------------------------


class _ConnectionLost(Exception):
    """Internal: the owner task of a connection is gone; ``str()`` says why."""


class _JobTimeout(Exception):
    """Internal: a job did not finish within its deadline (it has been cancelled)."""


@dataclass(eq=False, slots=True)
class _Job(Generic[T]):
    """A unit of work for an owner task: run ``fn`` against the session, report back."""

    fn: Callable[[Client], Awaitable[T]]
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)
    result: T | None = None
    error: BaseException | None = None

    def finish(self, result: T | None = None, error: BaseException | None = None) -> None:
        if not self.done.is_set():  # first outcome wins: the job's own or the owner's failure
            self.result, self.error = result, error
            self.done.set()


class _Connection:
    """One MCP server: its owner task, its job channel and its cached tool list."""

    def __init__(self, tool: ChiaTool, *, node_id: str, connect_timeout: float) -> None:
        self.tool = tool
        self.label = _describe(tool)
        self._node_id = node_id
        self._connect_timeout = connect_timeout
        self.opened = anyio.Event()  # set once open succeeded or failed
        self.closed = anyio.Event()  # set when the owner task has finished
        self.open_error: ChiaError | None = None
        self._lost: str | None = None  # why the owner ended (or None while it runs)
        self._send, self._receive = anyio.create_memory_object_stream[_Job[Any]](math.inf)
        self._pending: set[_Job[Any]] = set()
        self._life = anyio.CancelScope(shield=True)
        self._open_deadline = math.inf
        self._stopping = False
        self._stderr = _Tail()
        self._http_status: list[int] = []
        # tool cache: the listing, the change counter it reflects, and the latest counter
        self.tools: tuple[McpTool, ...] = ()
        self._names: frozenset[str] = frozenset()
        self._changes = 0
        self._listed_at = 0
        self.revision = 0
        self._refresh_lock = anyio.Lock()

    # -- the box's side -------------------------------------------------------------------

    @property
    def stale(self) -> bool:
        return self._listed_at != self._changes and self._lost is None

    @property
    def lost(self) -> bool:
        """The session ended or is ending (the server went away, or the box is closing)."""
        return self._lost is not None

    def offers(self, name: str) -> bool:
        return name in self._names

    def unknown_tool_message(self, name: str) -> str:
        if self.tool.allowed_tools is not None and name not in self.tool.allowed_tools:
            reason = "is not among the tools allowed for this call"
        else:
            reason = "does not exist"
        offered = ", ".join(sorted(self._names)[:50]) or "none"
        return (
            f"Error: tool {name!r} {reason} on MCP server {self.tool.name!r} (available: {offered})"
        )

    def stop(self) -> None:
        """Ask the owner to close: at once if still opening, else after its job loop drains."""
        self._stopping = True
        self._send.close()
        if not self.opened.is_set():
            self._life.cancel()

    def _close_lost(self, reason: str) -> None:
        """The session is unusable: record why and let the owner close it."""
        if self._lost is None:
            self._lost = reason
        self._send.close()

    def abort(self) -> None:
        """Cancel the owner outright (close took too long); its stdio kill still runs."""
        self._life.cancel()

    async def refresh(self) -> None:
        """List the tools again if a change was reported since the last listing."""
        async with self._refresh_lock:  # one re-listing at a time, shared by all who wait
            if not self.stale:
                return
            target = self._changes
            try:
                tools = await self._request(self._fetch_tools, within=self._connect_timeout)
            except Exception as exc:
                # Keep serving the old list rather than failing the turn; try again only on
                # the next change notice, so a broken server is not re-listed every iteration.
                logger.warning(
                    "%s: re-listing tools failed, keeping the old list: %s", self.label, exc
                )
                self._listed_at = target
                return
            self._install(tools, target)

    async def call_tool(
        self, name: str, arguments: dict[str, Any]
    ) -> tuple[str, bool, Any, tuple[dict[str, Any], ...]]:
        timeout = self.tool.tool_timeout

        async def run(client: Client) -> mcp_types.CallToolResult:
            return await client.call_tool(name, arguments)

        try:
            result = await self._request(run, within=timeout)
        except _JobTimeout:
            return (
                f"Error: tool {name!r} on MCP server {self.tool.name!r} did not finish within "
                f"{timeout:g} s and was cancelled",
                True,
                None,
                (),
            )
        except _ConnectionLost as exc:
            return f"Error: MCP server {self.tool.name!r} is not connected: {exc}", True, None, ()
        except MCPError as exc:
            if exc.code == mcp_types.CONNECTION_CLOSED:
                # The server hung up (a stdio server exited, a session was terminated): stop
                # the owner now, so the rest of the call fails fast and the process is reaped.
                reason = f"the server closed the connection{self._stderr_note()}"
                self._close_lost(reason)
                return (
                    f"Error: MCP server {self.tool.name!r} is not connected: {reason}",
                    True,
                    None,
                    (),
                )
            message = self._scrub(exc.message)
            return f"Error: tool {name!r} failed: MCP error {exc.code}: {message}", True, None, ()
        except Exception as exc:
            # e.g. structured content that does not match the tool's output schema
            message = self._scrub(str(exc) or type(exc).__name__)
            return f"Error: tool {name!r} failed: {message}", True, None, ()
        return _render(result)

    async def _request(self, fn: Callable[[Client], Awaitable[T]], *, within: float) -> T:
        """Run ``fn`` in the owner task, waiting ``within`` seconds; see the module docstring."""
        if self._lost is not None:
            raise _ConnectionLost(self._lost)
        job: _Job[T] = _Job(fn)
        self._pending.add(job)
        try:
            try:
                self._send.send_nowait(job)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                raise _ConnectionLost(self._lost or "the connection is closing") from None
            with anyio.move_on_after(within):
                await job.done.wait()
            if not job.done.is_set():
                raise _JobTimeout
            if job.error is not None:
                raise job.error
            return job.result  # type: ignore[return-value]  # set together with done
        finally:
            if not job.done.is_set():
                # Timed out or cancelled: cancel the request in the owner task. The caller does
                # not wait for it; the SDK tells the server and the session stays usable.
                job.scope.cancel()
            self._pending.discard(job)

    # -- the owner task -------------------------------------------------------------------

    async def run(self) -> None:
        """The owner task: open, serve jobs until stopped, close. Never raises.

        Its whole life is shielded from outside cancellation: only :meth:`stop` and
        :meth:`abort` (called by the box's shielded close) end it, so an outer cancellation can
        never interrupt a session half-closed or skip stopping a stdio server.
        """
        reason = "the MCP connections of this call were closed"
        try:
            with self._life:
                self._open_deadline = anyio.current_time() + self._connect_timeout
                self._life.deadline = self._open_deadline
                try:
                    async with AsyncExitStack() as stack:
                        client = await self._open(stack)
                        async with anyio.create_task_group() as tasks:
                            if _watches_changes(client):
                                await tasks.start(self._watch_changes, client)
                            listed_at = self._changes  # a notice during the listing re-lists
                            self._install(await self._fetch_tools(client), listed_at)
                            self._warn_missing_allowed()
                            self._life.deadline = math.inf  # opened: no connect deadline now
                            self.opened.set()
                            async with self._receive:
                                async for job in self._receive:
                                    tasks.start_soon(self._execute, client, job)
                            tasks.cancel_scope.cancel()  # closing: abandon in-flight calls
                except Exception as exc:
                    if not self.opened.is_set() and anyio.current_time() >= self._open_deadline:
                        pass  # the connect deadline cut the handshake short: reported below
                    elif not self.opened.is_set():
                        self.open_error = self._classify(exc)
                        reason = str(self.open_error)
                    else:
                        reason = f"the connection was lost: {self._explain(exc)}"
                        logger.warning("%s: %s", self.label, reason)
            if not self.opened.is_set() and self.open_error is None:
                if self._stopping:
                    reason = "the call ended before the connection was ready"
                else:
                    self.open_error = CallTimeoutError(
                        node_id=self._node_id,
                        raw_message=(
                            f"{self.label} did not become ready within "
                            f"{self._connect_timeout:g} s{self._stderr_note()}"
                        ),
                        timeout=self._connect_timeout,
                    )
                    reason = str(self.open_error)
            elif self.opened.is_set() and self._life.cancelled_caught and not self._stopping:
                reason = "the connection was cancelled"
        finally:
            if self._lost is None:  # a reason recorded earlier (_close_lost) is the better one
                self._lost = reason
            reason = self._lost
            self._receive.close()
            for job in list(self._pending):
                job.finish(error=_ConnectionLost(reason))
            self.opened.set()
            self.closed.set()

    async def _execute(self, client: Client, job: _Job[Any]) -> None:
        with job.scope:
            try:
                result = await job.fn(client)
            except Exception as exc:
                job.finish(error=exc)
            else:
                job.finish(result)
        # Cancelled by the caller (deadline, caller cancelled): absorbed by job.scope above.
        # Cancelled because the owner is going away: propagates; run() fails the job.

    async def _open(self, stack: AsyncExitStack) -> Client:
        tool = self.tool

        async def on_message(message: Any) -> None:
            if isinstance(message, mcp_types.ToolListChangedNotification):
                self._changes += 1
            elif isinstance(message, Exception):
                logger.debug("%s: transport reported %r", self.label, message)

        target: Any
        if tool.transport == "in_process":
            if not isinstance(tool.server, MCPServer | Server):
                raise _OpenError(
                    InvalidRequestError(
                        node_id=self._node_id,
                        raw_message=(
                            f"{self.label}: ChiaTool.in_process needs an mcp.server.MCPServer or "
                            f"mcp.server.lowlevel.Server, got {type(tool.server).__name__}"
                        ),
                    )
                )
            target = tool.server
        elif tool.transport == "http":
            target = _http_transport(tool, self._http_status)
        else:
            target = _stdio_transport(tool, self._stderr, node_id=self._node_id, label=self.label)
        client = Client(
            target,
            cache=None,  # the box is the cache; a second layer would hide list_changed
            message_handler=on_message,
            client_info=_CLIENT_INFO,
        )
        return await stack.enter_async_context(client)

    async def _fetch_tools(self, client: Client) -> tuple[McpTool, ...]:
        listed: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_LIST_PAGES):
            page = await client.list_tools(cursor=cursor)
            listed.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        else:
            logger.warning("%s: tool listing truncated at %d pages", self.label, _MAX_LIST_PAGES)
        allowed = self.tool.allowed_tools
        return tuple(
            McpTool(
                server=self.tool.name,
                name=t.name,
                description=t.description or t.title or "",
                input_schema=t.input_schema,
            )
            for t in listed
            if allowed is None or t.name in allowed
        )

    def _install(self, tools: tuple[McpTool, ...], listed_at: int) -> None:
        if tools != self.tools:
            self.revision += 1
        self.tools = tools
        self._names = frozenset(t.name for t in tools)
        self._listed_at = listed_at

    def _warn_missing_allowed(self) -> None:
        if self.tool.allowed_tools is not None:
            missing = sorted(set(self.tool.allowed_tools) - self._names)
            if missing:
                logger.warning("%s offers no tool named %s", self.label, ", ".join(missing))

    async def _watch_changes(
        self, client: Client, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep a ``subscriptions/listen`` stream open (2026-07-28 connections).

        Reports started once the first subscription is acknowledged, so the first listing
        comes after it. Events also reach ``on_message`` (the SDK tees them), which does the
        counting; this task only notices a lost stream, re-listens with backoff and marks the
        cache stale, since changes during the gap were not seen.
        """
        delay = 0.5
        started = False
        while True:
            try:
                async with client.listen(tools_list_changed=True) as subscription:
                    if started:
                        self._changes += 1  # re-subscribed: whatever changed meanwhile was missed
                    else:
                        task_status.started()
                        started = True
                    delay = 0.5
                    async for _event in subscription:
                        pass
            except Exception as exc:  # SubscriptionLost, MCPError...: never fatal to the session
                logger.debug("%s: change subscription ended: %r", self.label, exc)
                if isinstance(exc, MCPError) and exc.code == mcp_types.METHOD_NOT_FOUND:
                    if not started:
                        task_status.started()
                    return
            if not started:
                task_status.started()  # no subscription: the tools are listed all the same
                started = True
            await anyio.sleep(delay)
            delay = min(delay * 2, _RELISTEN_MAX_DELAY)

    # -- errors ---------------------------------------------------------------------------

    def _classify(self, exc: BaseException) -> ChiaError:
        """The typed open error for ``exc`` (see :class:`McpToolbox`)."""
        for leaf in _leaves(exc):
            if isinstance(leaf, _OpenError):
                return leaf.error
        node = self._node_id
        status = self._http_status[-1] if self._http_status else None
        detail = self._explain(exc)
        # A network failure first: a 4xx recorded earlier may be the answer to a probe the SDK
        # recovered from (a legacy server refusing server/discover).
        if any(isinstance(leaf, httpx2.TransportError) for leaf in _leaves(exc)):
            return ServerError(node_id=node, raw_message=f"{self.label} is unreachable: {detail}")
        if status in (401, 403):
            return AuthenticationError(
                node_id=node,
                raw_message=f"{self.label} refused the connection with HTTP {status}: "
                "check the tool's headers",
            )
        if status == 404:
            return InvalidRequestError(
                node_id=node, raw_message=f"{self.label}: no MCP endpoint at this URL (HTTP 404)"
            )
        if status is not None and 400 <= status < 500:
            return InvalidRequestError(
                node_id=node, raw_message=f"{self.label} rejected the handshake with HTTP {status}"
            )
        if status is not None:
            return ServerError(
                node_id=node, raw_message=f"{self.label} failed the handshake with HTTP {status}"
            )
        if self.tool.transport == "stdio" and self._stderr.exit_code is not None:
            return ProcessError(
                node_id=node,
                exit_code=self._stderr.exit_code,
                stderr=self._scrub(self._stderr.text()),
                raw_message=f"{self.label} exited during the MCP handshake",
            )
        return ServerError(node_id=node, raw_message=f"{self.label} failed to open: {detail}")

    def _explain(self, exc: BaseException) -> str:
        """A one-line, secret-free description of the most telling leaf of ``exc``."""
        leaves = [
            leaf for leaf in _leaves(exc) if not isinstance(leaf, anyio.get_cancelled_exc_class())
        ]
        leaf = leaves[0] if leaves else exc
        if isinstance(leaf, MCPError):
            text = f"MCP error {leaf.code}: {leaf.message}"
        else:
            text = f"{type(leaf).__name__}: {leaf}" if str(leaf) else type(leaf).__name__
        return self._scrub(text) + self._stderr_note()

    def _stderr_note(self) -> str:
        tail = self._stderr.text().strip()
        if not tail:
            return ""
        return f" (stderr: {self._scrub(tail[-500:])})"

    def _scrub(self, text: str) -> str:
        """Remove the tool's own secrets (header and env values, the raw URL) from ``text``."""
        tool = self.tool
        if tool.url:
            text = text.replace(tool.url, _display_url(tool.url))
        for value in (*tool.headers.values(), *tool.env.values()):
            if len(value) >= 4:
                text = text.replace(value, REDACTED)
        return redact(text)


class _OpenError(Exception):
    """Internal: carries an already-classified open error out of a transport."""

    def __init__(self, error: ChiaError) -> None:
        super().__init__(str(error))
        self.error = error


def _watches_changes(client: Client) -> bool:
    """Whether to open a change subscription: a 2026-07-28 server announcing listChanged."""
    capabilities = client.server_capabilities
    return (
        client.protocol_version in MODERN_PROTOCOL_VERSIONS
        and capabilities is not None
        and capabilities.tools is not None
        and bool(capabilities.tools.list_changed)
    )


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _describe(tool: ChiaTool) -> str:
    """How messages name a tool: its name and where it lives, without secrets."""
    if tool.transport == "http":
        where = f"http: {_display_url(tool.url or '')}"
    elif tool.transport == "stdio":
        where = "stdio: " + " ".join(tool.command)
        if len(where) > 120:
            where = where[:117] + "..."
    else:
        where = f"in-process {type(tool.server).__name__}"
    return f"MCP server {tool.name!r} ({where})"


def _display_url(url: str) -> str:
    """``url`` without credentials, query or fragment (any of which may hold a token)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"
    except ValueError:
        return "<invalid URL>"


def _render(
    result: mcp_types.CallToolResult,
) -> tuple[str, bool, Any, tuple[dict[str, Any], ...]]:
    """Text for the model, plus the structured and raw content of a tool result."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.ImageContent):
            parts.append(f"[image {block.mime_type}]")
        elif isinstance(block, mcp_types.AudioContent):
            parts.append(f"[audio {block.mime_type}]")
        elif isinstance(block, mcp_types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, mcp_types.TextResourceContents):
                parts.append(resource.text)
            else:
                parts.append(f"[resource {resource.uri}]")
        elif isinstance(block, mcp_types.ResourceLink):
            parts.append(f"[resource link {block.uri}]")
    structured = result.structured_content
    if not parts and structured is not None:
        parts.append(orjson.dumps(structured, default=str).decode())
    content = tuple(
        block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content
    )
    return "\n".join(parts), bool(result.is_error), structured, content


# --------------------------------------------------------------------------------------------
# Transports
# --------------------------------------------------------------------------------------------


@asynccontextmanager
async def _http_transport(tool: ChiaTool, statuses: list[int]) -> AsyncIterator[TransportStreams]:
    """Streamable HTTP with the tool's headers; error statuses are recorded in ``statuses``."""

    async def record(response: httpx2.Response) -> None:
        if response.status_code >= 400:
            statuses.append(response.status_code)

    # No read timeout: calls have their own deadline, and change subscriptions are
    # long-lived streams the server keeps alive with pings.
    timeout = httpx2.Timeout(30.0, read=None)
    http = httpx2.AsyncClient(
        headers=dict(tool.headers), timeout=timeout, event_hooks={"response": [record]}
    )
    async with http, streamable_http_client(tool.url or "", http_client=http) as streams:
        yield streams


class _Tail:
    """The last bytes a stdio server wrote to stderr, and its exit code once known."""

    def __init__(self) -> None:
        self._data = bytearray()
        self.exit_code: int | None = None
        self.closing = False  # we started the teardown
        self.hung_up = False  # stdout ended before we did

    def add(self, chunk: bytes) -> None:
        self._data += chunk
        if len(self._data) > _STDERR_TAIL:
            del self._data[: len(self._data) - _STDERR_TAIL]

    def text(self) -> str:
        return self._data.decode("utf-8", "replace")


@asynccontextmanager
async def _stdio_transport(
    tool: ChiaTool, tail: _Tail, *, node_id: str, label: str
) -> AsyncIterator[TransportStreams]:
    """Newline-delimited JSON-RPC over a child's stdin/stdout, in its own process group."""
    if tool.cwd is not None and not await anyio.Path(tool.cwd).is_dir():
        raise _OpenError(
            InvalidRequestError(
                node_id=node_id, raw_message=f"{label}: cwd {tool.cwd!r} is not a directory"
            )
        )
    try:
        process = await anyio.open_process(
            list(tool.command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tool.cwd,
            env=build_child_env(explicit=tool.env),
            start_new_session=True,  # its own group: the teardown signals all it spawned
        )
    except FileNotFoundError:
        raise _OpenError(
            InvalidRequestError(
                node_id=node_id, raw_message=f"{label}: command {tool.command[0]!r} was not found"
            )
        ) from None
    except PermissionError:
        raise _OpenError(
            InvalidRequestError(
                node_id=node_id,
                raw_message=f"{label}: command {tool.command[0]!r} is not executable",
            )
        ) from None
    except OSError as exc:
        raise _OpenError(
            InvalidRequestError(
                node_id=node_id, raw_message=f"{label}: could not start: {exc.strerror or exc}"
            )
        ) from None
    assert process.stdin is not None
    assert process.stdout is not None
    assert process.stderr is not None
    stdin, stdout, stderr = process.stdin, process.stdout, process.stderr
    # The session reads server messages from `incoming` and writes its own to `outgoing`.
    incoming_send, incoming = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    outgoing, outgoing_receive = anyio.create_memory_object_stream[SessionMessage](0)

    async def read_stdout() -> None:
        buffer = bytearray()
        forwarding = True
        skipping = False  # inside a line over _MAX_LINE: drop up to its end
        async with incoming_send:
            with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                while True:
                    try:
                        buffer += await stdout.receive(_READ_CHUNK)
                    except anyio.EndOfStream:
                        # Before we asked it to stop: the server hung up by itself.
                        tail.hung_up = not tail.closing
                        return
                    while (end := buffer.find(b"\n")) >= 0:
                        line = bytes(buffer[:end])
                        del buffer[: end + 1]
                        if skipping:
                            skipping = False
                        elif forwarding and line.strip():
                            try:
                                await incoming_send.send(_parse_line(line))
                            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                                # The session is gone; keep draining so the server is never
                                # blocked on a full pipe while it shuts down.
                                forwarding = False
                    if len(buffer) > _MAX_LINE:
                        logger.warning("%s: dropped a stdout line over %d bytes", label, _MAX_LINE)
                        buffer.clear()
                        skipping = True

    async def write_stdin() -> None:
        try:
            async with outgoing_receive:
                async for message in outgoing_receive:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await stdin.send(data.encode() + b"\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            # The server stopped reading (it exited or closed stdin): end the session's input
            # so pending requests fail now instead of at their deadlines.
            incoming_send.close()

    stderr_done = anyio.Event()

    async def read_stderr() -> None:
        try:
            with contextlib.suppress(
                anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError
            ):
                while True:
                    tail.add(await stderr.receive(_READ_CHUNK))
        finally:
            stderr_done.set()

    try:
        async with anyio.create_task_group() as pipes:
            pipes.start_soon(read_stdout)
            pipes.start_soon(write_stdin)
            pipes.start_soon(read_stderr)
            try:
                yield incoming, outgoing
            finally:
                with anyio.CancelScope(shield=True):
                    tail.closing = True
                    outgoing.close()
                    incoming.close()
                    await _stop_process_group(process, stdin, label)
                    if tail.hung_up:  # it exited before we asked: its exit code is its own
                        tail.exit_code = process.returncode
                    # Keep the last stderr the group wrote before it died (for error messages).
                    with anyio.move_on_after(0.5):
                        await stderr_done.wait()
                pipes.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(_KILL_WAIT):
            await process.aclose()


def _parse_line(line: bytes) -> SessionMessage | Exception:
    """One stdout line as a message; a line that is not JSON-RPC is passed on as an error."""
    try:
        return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:
        return exc


async def _stop_process_group(
    process: anyio.abc.Process, stdin: anyio.abc.ByteSendStream, label: str
) -> None:
    """EOF, grace, SIGTERM to the group, grace, SIGKILL; then sweep what is left of the group.

    Bounded by ``_EXIT_GRACE + _TERM_GRACE + _KILL_WAIT`` plus the sweep's grace; the caller
    shields it. The sweep matters when the leader exits on EOF but left helpers behind in its
    group: ``killpg`` reaches them even though their parent is gone.
    """
    pgid = process.pid  # start_new_session: the leader's pid is the group id
    with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        await stdin.aclose()
    if not await _wait_exit(process, _EXIT_GRACE):
        _signal_group(pgid, signal.SIGTERM)
        if not await _wait_exit(process, _TERM_GRACE):
            _signal_group(pgid, signal.SIGKILL)
            if not await _wait_exit(process, _KILL_WAIT):
                logger.warning("%s: process %d survived SIGKILL", label, pgid)
    if _group_alive(pgid):
        _signal_group(pgid, signal.SIGTERM)
        with anyio.move_on_after(_KILL_WAIT):
            while _group_alive(pgid):  # noqa: ASYNC110 - a group's end has no event to wait on
                await anyio.sleep(_EXIT_POLL)
        _signal_group(pgid, signal.SIGKILL)


async def _wait_exit(process: anyio.abc.Process, within: float) -> bool:
    """Whether the process exited within ``within`` seconds.

    Polls the return code: on asyncio ``wait()`` also waits for the pipes to close, which a
    surviving grandchild may hold open, and no event exists for "the leader exited".
    """
    with anyio.move_on_after(within):
        while process.returncode is None:  # noqa: ASYNC110 - see above
            await anyio.sleep(_EXIT_POLL)
    return process.returncode is not None


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` has a member that is not a zombie.

    ``killpg(pgid, 0)`` alone counts zombies, and a member killed after its parent exited is
    a zombie until init reaps it, which in containers whose PID 1 does not reap is never; so on
    Linux the members are looked up in /proc.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True  # no /proc: trust killpg
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # after the command: state, ppid, pgrp
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False
