"""MCP connections held across calls: :class:`ToolboxPool`.

A tool loop that opens its MCP connections for every call pays the handshake and a
``tools/list`` per call — that is where peer libraries lose most of a tool loop's time. The
pool keeps one open :class:`~chia_async.loop.mcp.McpToolbox` per distinct tool list, per LLM
object and event loop, and hands it to every call that uses the same tools, concurrently:

* a call's first use opens the connections (every later call waits for the same open);
* the tool list is the toolbox's cache, refreshed only when a server reports a change, so a
  steady-state call sends no ``tools/list`` at all; the compiled declarations are cached per
  toolbox revision and provider dialect, so they are not rebuilt either;
* a toolbox unused for ``keepalive`` seconds is closed (its stdio servers stopped), and so is
  one that lost a connection — the next call opens a fresh one;
* everything is closed when the LLM object's loop shuts down, when the LLM object is
  garbage-collected, or at once with ``await llm.aclose()``.

Each toolbox is entered and exited by its own *holder task* (the toolbox's task groups must be
exited by the task that entered them), so a call that is cancelled cancels its own tool calls —
the MCP requests are cancelled on the server — and never the shared connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from chia_async.loop.clients import LoopLocal
from chia_async.loop.schema import CompiledTools, ToolSpec, compile_tools
from chia_async.tools import ChiaTool

if TYPE_CHECKING:  # mcp is imported only when a call has tools
    from chia_async.loop.mcp import McpToolbox

__all__ = ["DEFAULT_KEEPALIVE", "PooledToolbox", "ToolCatalog", "ToolboxPool", "open_toolbox"]

logger = logging.getLogger("chia_async.loop")

#: how long an unused pooled toolbox stays open, in seconds
DEFAULT_KEEPALIVE = 60.0


@functools.cache
def _no_tools(dialect: str) -> CompiledTools:
    return compile_tools([], dialect)


class ToolCatalog:
    """An open toolbox and its compiled declarations, cached per dialect and revision."""

    def __init__(self, box: McpToolbox | None) -> None:
        self.box = box
        self._compiled: dict[str, tuple[int, CompiledTools]] = {}

    async def compiled(self, dialect: str) -> CompiledTools:
        """The tool declarations for ``dialect``; re-listed and recompiled only after a
        server reported a change (no MCP request otherwise)."""
        box = self.box
        cached = self._compiled.get(dialect)
        if box is None:
            return _no_tools(dialect)
        if cached is not None and not box.stale and cached[0] == box.revision:
            return cached[1]
        tools = await box.list_tools()
        revision = box.revision
        if cached is None or cached[0] != revision:
            specs = [
                ToolSpec(
                    server=t.server,
                    name=t.name,
                    description=t.description,
                    input_schema=t.input_schema,
                )
                for t in tools
            ]
            cached = self._compiled[dialect] = (revision, compile_tools(specs, dialect))
        return cached[1]


class PooledToolbox:
    """One open toolbox shared by the calls that use the same tools."""

    def __init__(self, tools: tuple[ChiaTool, ...], node_id: str, keepalive: float) -> None:
        self.tools = tools
        from chia_async.loop.mcp import McpToolbox

        self.box = McpToolbox(tools, node_id=node_id)
        self.catalog = ToolCatalog(self.box)
        self.ready = asyncio.Event()
        self.error: BaseException | None = None
        self.users = 0
        self.last_used = time.monotonic()
        self._keepalive = keepalive
        self._wake = asyncio.Event()
        self._stopping = False
        self.task: asyncio.Task[None] | None = None

    @property
    def usable(self) -> bool:
        return (
            not self._stopping
            and self.error is None
            and (not self.ready.is_set() or self.box.alive)
        )

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def release(self) -> None:
        self.users -= 1
        self.last_used = time.monotonic()
        self._wake.set()

    async def hold(self) -> None:
        """The holder task: open the toolbox, keep it while used or fresh, then close it."""
        try:
            async with self.box:
                self.ready.set()
                while not self._stopping and self.box.alive:
                    self._wake.clear()
                    idle_for = time.monotonic() - self.last_used
                    if self.users == 0 and idle_for >= self._keepalive:
                        self._stopping = True
                        break
                    timeout = None if self.users else self._keepalive - idle_for
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
        except BaseException as exc:  # the open failed (typed), or the loop is shutting down
            if not self.ready.is_set():
                self.error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            self._stopping = True
            self.ready.set()


class ToolboxPool:
    """The pooled toolboxes of one LLM object on one event loop."""

    def __init__(self) -> None:
        self._entries: list[PooledToolbox] = []

    async def acquire(
        self, tools: Sequence[ChiaTool], node_id: str, keepalive: float = DEFAULT_KEEPALIVE
    ) -> PooledToolbox:
        """An open toolbox for ``tools`` (shared); pair with :meth:`PooledToolbox.release`.

        Raises the typed error of a failed open (the failed entry is dropped, so the next
        call tries again).
        """
        key = tuple(tools)
        entry = next((e for e in self._entries if e.tools == key and e.usable), None)
        if entry is None:
            self._entries = [e for e in self._entries if e.usable]
            entry = PooledToolbox(key, node_id, keepalive)
            self._entries.append(entry)
            entry.task = asyncio.get_running_loop().create_task(
                entry.hold(), name=f"mcp-pool:{node_id}"
            )
        entry.users += 1
        try:
            await entry.ready.wait()
        except BaseException:
            entry.release()
            raise
        if entry.error is not None:
            entry.release()
            with contextlib.suppress(ValueError):
                self._entries.remove(entry)
            raise entry.error
        return entry

    async def aclose(self) -> None:
        """Close every pooled toolbox now and wait for them (stdio servers stopped)."""
        entries, self._entries = self._entries, []
        tasks = [e.task for e in entries if e.task is not None]
        for entry in entries:
            entry.stop()
        if tasks:
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*tasks, return_exceptions=True)


async def _close_pool(pool: ToolboxPool) -> None:
    await pool.aclose()


def _new_pool() -> ToolboxPool:
    return ToolboxPool()


@contextlib.asynccontextmanager
async def open_toolbox(llm: Any, tools: Sequence[ChiaTool]) -> AsyncIterator[ToolCatalog]:
    """The MCP tools of one call: pooled on ``llm`` (see the module docstring), or opened for
    this call only when ``llm.mcp_keepalive`` is 0 or None."""
    if not tools:
        yield ToolCatalog(None)
        return
    node_id = getattr(llm, "logging_name", "")
    keepalive = getattr(llm, "mcp_keepalive", DEFAULT_KEEPALIVE) or 0.0
    if not keepalive > 0:
        from chia_async.loop.mcp import McpToolbox

        async with McpToolbox(tools, node_id=node_id) as box:
            yield ToolCatalog(box)
        return
    pools = vars(llm).get("_mcp_pools")
    if pools is None:
        pools = LoopLocal(_new_pool, _close_pool)
        vars(llm)["_mcp_pools"] = pools
    pool = await pools.get()
    entry = await pool.acquire(tools, node_id, float(keepalive))
    try:
        yield entry.catalog
    finally:
        entry.release()
