"""McpToolbox against real MCP servers: in-process, streamable HTTP, stdio, and mcp-server-time.

No mocks: every test talks MCP to a real ``mcp.server.MCPServer`` (tests/loop/mcp_test_server.py)
or to a third-party server from PyPI. After every test, the ``no_leaks`` fixture checks that no
thread, file descriptor (socket, pipe) or child process is left behind.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pickle
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from chia_async.errors import (
    AuthenticationError,
    ChiaError,
    InvalidRequestError,
    ProcessError,
    ServerError,
)
from chia_async.errors import TimeoutError as CallTimeoutError
from chia_async.loop.mcp import McpTool, McpToolbox, ToolOutcome
from chia_async.tools import ChiaTool
from tests.loop.mcp_test_server import (
    ServerState,
    ThreadedHttpServer,
    build_server,
    loopback_socket,
)

SERVER_SCRIPT = str(Path(__file__).with_name("mcp_test_server.py"))
BASE_TOOLS = [
    "add",
    "echo",
    "slow",
    "fail",
    "grow",
    "stats",
    "getenv",
    "cwd",
    "spawn_helper",
    "exit_now",
]


# --------------------------------------------------------------------------------------------
# Leak checks
# --------------------------------------------------------------------------------------------


def _children() -> set[int]:
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return pids


def _fds() -> set[tuple[str, str]]:
    """Open descriptors as (number, target): a new socket that reuses a number still shows."""
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.add((fd, os.readlink(f"/proc/self/fd/{fd}")))
        except OSError:  # the descriptor listdir itself used, already closed
            continue
    return fds


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail the test if it leaves a thread, a file descriptor or a child process behind.

    Set up before (and so torn down after) every other fixture of the test, the event loop
    included. Waits a little for things that end asynchronously (asyncio's child-watcher
    threads, sockets in the middle of closing).
    """
    threads, fds, children = _threads(), _fds(), _children()
    yield
    deadline = time.monotonic() + 5
    while True:
        extra_threads = {t for t in _threads() - threads if t.is_alive()}
        extra_fds = _fds() - fds
        extra_children = _children() - children
        if not (extra_threads or extra_fds or extra_children) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not extra_threads, f"threads left: {extra_threads}"
    assert not extra_children, f"child processes left: {extra_children}"
    assert not extra_fds, f"file descriptors left: {sorted(extra_fds)}"


# --------------------------------------------------------------------------------------------
# The three ways of serving the test server
# --------------------------------------------------------------------------------------------


@dataclass
class Served:
    """A test server as a ChiaTool, and a way to read what it saw."""

    tool: ChiaTool
    state: ServerState | None  # None for stdio: read through the `stats` tool

    async def stats(self, box: McpToolbox) -> dict[str, Any]:
        if self.state is not None:
            return self.state.snapshot()
        outcome = await box.call(self.tool.name, "stats")
        assert not outcome.is_error, outcome.text
        return dict(outcome.structured)

    async def lists(self, box: McpToolbox) -> int:
        return int((await self.stats(box))["methods"].get("tools/list", 0))


def stdio_tool(name: str = "stdio", **kwargs: Any) -> ChiaTool:
    return ChiaTool.stdio(sys.executable, SERVER_SCRIPT, name=name, **kwargs)


@contextlib.contextmanager
def serve_http(*, legacy: bool = False) -> Iterator[Served]:
    server, state = build_server(legacy=legacy)
    http = ThreadedHttpServer(server.streamable_http_app(streamable_http_path="/mcp")).start()
    try:
        yield Served(ChiaTool.http(http.url, name="http", tool_timeout=10), state)
    finally:
        http.stop()


@pytest.fixture
def http_served() -> Iterator[Served]:
    with serve_http() as served:
        yield served


# http_legacy: a server that refuses server/discover, so the session falls back to the
# 2025-11-25 handshake: list_changed then arrives as a plain notification, cancellation as
# notifications/cancelled. (In-process servers are always reached on the 2026-07-28 path.)
@contextlib.contextmanager
def serve(kind: str) -> Iterator[Served]:
    if kind == "in_process":
        server, state = build_server()
        yield Served(ChiaTool.in_process(server, name="mem", tool_timeout=10), state)
    elif kind.startswith("http"):
        with serve_http(legacy=kind == "http_legacy") as served:
            yield served
    else:
        yield Served(stdio_tool(tool_timeout=10), None)


@pytest.fixture(params=["in_process", "http", "http_legacy", "stdio"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    with serve(request.param) as server:
        yield server


# For behaviour that lives above the transport (error results, caller cancellation): stdio
# costs a second per test in interpreter start-up and is covered by the tests above.
@pytest.fixture(params=["in_process", "http", "http_legacy"])
def served_fast(request: pytest.FixtureRequest) -> Iterator[Served]:
    with serve(request.param) as server:
        yield server


def with_options(tool: ChiaTool, **changes: Any) -> ChiaTool:
    import dataclasses

    return dataclasses.replace(tool, **changes)


# --------------------------------------------------------------------------------------------
# Listing and calling
# --------------------------------------------------------------------------------------------


async def test_lists_once_then_serves_every_iteration_from_cache(served: Served) -> None:
    async with McpToolbox([served.tool], node_id="test") as box:
        tools = await box.list_tools()
        assert [t.name for t in tools] == BASE_TOOLS
        add = tools[0]
        assert add == McpTool(
            server=served.tool.name,
            name="add",
            description="Add two integers.",
            input_schema=add.input_schema,
        )
        assert add.input_schema["properties"].keys() == {"a", "b"}
        assert await served.lists(box) == 1
        revision = box.revision

        for i in range(10):  # a tool loop: list, then two calls, per iteration
            assert len(await box.list_tools()) == len(BASE_TOOLS)
            added = await box.call(served.tool.name, "add", {"a": i, "b": 2})
            echoed = await box.call(served.tool.name, "echo", {"text": f"hi {i}"})
            assert (added.text, added.is_error, added.structured) == (
                str(i + 2),
                False,
                {"result": i + 2},
            )
            assert (echoed.text, echoed.is_error) == (f"hi {i}", False)
            assert echoed.content == ({"type": "text", "text": f"hi {i}"},)
            assert 0 < added.duration < 5

        assert await served.lists(box) == 1, "tools/list must not be sent again in steady state"
        assert box.revision == revision


async def test_concurrent_calls_overlap(served: Served) -> None:
    async with McpToolbox([served.tool]) as box:
        results: list[ToolOutcome] = []

        async def slow() -> None:
            results.append(await box.call(served.tool.name, "slow", {"seconds": 0.5}))

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(slow)
            tg.start_soon(slow)
        elapsed = time.perf_counter() - started
        assert [r.text for r in results] == ["slept 0.5", "slept 0.5"]
        assert elapsed < 0.9, f"two 0.5 s calls took {elapsed:.2f} s: they did not overlap"


async def test_calls_to_different_servers_overlap(http_served: Served) -> None:
    server, _ = build_server()
    tools = [ChiaTool.in_process(server, name="mem"), http_served.tool]
    async with McpToolbox(tools) as box:
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for name in ("mem", "http"):
                tg.start_soon(box.call, name, "slow", {"seconds": 0.5})
        assert time.perf_counter() - started < 0.9
        assert [(t.server, t.name) for t in await box.list_tools()][:2] == [
            ("mem", "add"),
            ("mem", "echo"),
        ]
        assert box.servers == ("mem", "http")


async def test_timeout_is_an_error_result_and_the_session_survives(served: Served) -> None:
    tool = with_options(served.tool, tool_timeout=0.3)
    async with McpToolbox([tool]) as box:
        outcome = await box.call(tool.name, "slow", {"seconds": 5})
        assert outcome.is_error
        assert "did not finish within 0.3 s" in outcome.text
        assert outcome.duration < 1.5
        # The server was told: its tool run was cancelled, not left sleeping.
        with anyio.fail_after(3):
            while (await served.stats(box))["cancelled"] < 1:
                await anyio.sleep(0.02)
        again = await box.call(tool.name, "add", {"a": 1, "b": 1})
        assert (again.text, again.is_error) == ("2", False)


async def test_tool_failures_come_back_as_error_results(served_fast: Served) -> None:
    served = served_fast
    name = served.tool.name
    async with McpToolbox([served.tool]) as box:
        failed = await box.call(name, "fail")
        assert failed.is_error
        assert "fail" in failed.text

        rejected = await box.call(name, "add", {"a": "not a number"})
        assert rejected.is_error
        assert "validation error" in rejected.text

        unknown = await box.call(name, "nope", {})
        assert unknown.is_error
        assert "'nope' does not exist" in unknown.text
        assert "add" in unknown.text  # the model is told what exists

        no_server = await box.call("elsewhere", "add", {"a": 1, "b": 2})
        assert no_server.is_error
        assert "no MCP server named 'elsewhere'" in no_server.text

        not_object = await box.call(name, "add", ["a", "b"])  # type: ignore[arg-type]
        assert not_object.is_error
        assert "must be a JSON object" in not_object.text

        fine = await box.call(name, "add", {"a": 40, "b": 2})
        assert (fine.text, fine.is_error) == ("42", False)


async def test_allowed_tools_limit_listing_and_calls() -> None:
    server, state = build_server()
    tool = ChiaTool.in_process(server, name="mem", allowed_tools=["echo", "absent"])
    async with McpToolbox([tool]) as box:
        assert [t.name for t in await box.list_tools()] == ["echo"]
        refused = await box.call("mem", "add", {"a": 1, "b": 2})
        assert refused.is_error
        assert "not among the tools allowed" in refused.text
        assert "add" not in state.started
        assert (await box.call("mem", "echo", {"text": "ok"})).text == "ok"


async def test_list_changed_refreshes_the_cache(served: Served) -> None:
    name = served.tool.name
    async with McpToolbox([served.tool]) as box:
        revision = box.revision
        assert "extra" not in [t.name for t in await box.list_tools()]
        assert (await box.call(name, "grow")).text == "grown"
        with anyio.fail_after(3):  # the notice travels on its own stream
            while box.revision == revision:
                listed = [t.name for t in await box.list_tools()]
                await anyio.sleep(0.01)
        assert listed[-1] == "extra"
        assert await served.lists(box) == 2
        assert (await box.call(name, "extra", {"x": "ab"})).text == "abab"
        await box.list_tools()
        assert await served.lists(box) == 2, "one change, one re-listing"


# --------------------------------------------------------------------------------------------
# Cancellation and lost connections
# --------------------------------------------------------------------------------------------


async def test_cancelled_caller_cancels_the_request_only(served_fast: Served) -> None:
    served = served_fast
    name = served.tool.name
    async with McpToolbox([served.tool]) as box:
        with anyio.move_on_after(0.3) as scope:
            await box.call(name, "slow", {"seconds": 10})
        assert scope.cancelled_caught, "cancellation of the caller must propagate"
        with anyio.fail_after(3):
            while (await served.stats(box))["cancelled"] < 1:
                await anyio.sleep(0.02)
        assert (await box.call(name, "add", {"a": 2, "b": 3})).text == "5"


async def test_cancelling_the_box_owner_closes_everything(http_served: Served) -> None:
    server, _ = build_server()
    tools = [ChiaTool.in_process(server, name="mem"), http_served.tool, stdio_tool()]
    outcomes: list[ToolOutcome] = []
    with anyio.CancelScope() as scope:
        async with McpToolbox(tools) as box, anyio.create_task_group() as tg:

            async def call(server: str) -> None:
                outcomes.append(await box.call(server, "slow", {"seconds": 30}))

            for name in box.servers:
                tg.start_soon(call, name)
            await anyio.sleep(0.3)  # the calls are running on all three servers
            scope.cancel()
    assert scope.cancelled_caught
    assert outcomes == []  # the callers were cancelled along with the box
    # no_leaks checks that the stdio server and every connection are gone


async def test_calls_fail_cleanly_after_close() -> None:
    server, _ = build_server()
    box = McpToolbox([ChiaTool.in_process(server, name="mem")])
    async with box:
        pass
    outcome = await box.call("mem", "add", {"a": 1, "b": 2})
    assert outcome.is_error
    assert "closed" in outcome.text
    with pytest.raises(RuntimeError, match="only once"):
        async with box:
            pass


async def test_a_dead_stdio_server_turns_calls_into_errors() -> None:
    async with McpToolbox([stdio_tool(name="dies")]) as box:
        with anyio.fail_after(10):
            died = await box.call("dies", "exit_now")
        assert died.is_error
        after = await box.call("dies", "add", {"a": 1, "b": 2})
        assert after.is_error
        assert "not connected" in after.text
        # The cached list stays: the model keeps its tool declarations and sees the errors.
        assert len(await box.list_tools()) == len(BASE_TOOLS)


async def test_a_stopped_http_server_turns_calls_into_errors() -> None:
    server, _ = build_server()
    http = ThreadedHttpServer(server.streamable_http_app(streamable_http_path="/mcp")).start()
    try:
        async with McpToolbox([ChiaTool.http(http.url, name="http")]) as box:
            assert (await box.call("http", "add", {"a": 1, "b": 2})).text == "3"
            await anyio.to_thread.run_sync(http.stop)
            outcome = await box.call("http", "add", {"a": 1, "b": 2})
            assert outcome.is_error
            assert "not connected" in outcome.text or "failed" in outcome.text
    finally:
        http.stop()


# --------------------------------------------------------------------------------------------
# stdio specifics
# --------------------------------------------------------------------------------------------


async def test_stdio_environment_cwd_and_process_group(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-leak-1234")
    monkeypatch.setenv("CHIA_UNRELATED_SETTING", "parent-only")
    tool = stdio_tool(env={"TOOL_SETTING": "given"}, cwd=str(tmp_path))
    async with McpToolbox([tool]) as box:

        async def getenv(name: str) -> Any:
            return (await box.call("stdio", "getenv", {"name": name})).structured["result"]

        # An allowlist (PATH, HOME, locale...) plus the tool's own env: no inherited key.
        assert await getenv("OPENAI_API_KEY") is None
        assert await getenv("CHIA_UNRELATED_SETTING") is None
        assert await getenv("TOOL_SETTING") == "given"
        assert await getenv("PATH") == os.environ["PATH"]
        assert (await box.call("stdio", "cwd")).text == str(tmp_path)

        helper = int((await box.call("stdio", "spawn_helper")).text)
        assert _alive(helper)
    # The server exits on EOF; the helper it left in its process group is swept.
    deadline = time.monotonic() + 3
    while _alive(helper) and time.monotonic() < deadline:
        await anyio.sleep(0.02)
    assert not _alive(helper), "a process of the stdio server's group survived the close"


@pytest.mark.skipif(
    importlib.util.find_spec("mcp_server_time") is None,
    reason="mcp-server-time is not installed (pip install mcp-server-time)",
)
async def test_third_party_server_mcp_server_time() -> None:
    tool = ChiaTool.stdio(
        sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC", name="time"
    )
    async with McpToolbox([tool]) as box:
        names = [t.name for t in await box.list_tools()]
        assert {"get_current_time", "convert_time"} <= set(names)
        now = await box.call("time", "get_current_time", {"timezone": "Europe/Paris"})
        assert not now.is_error, now.text
        assert now.structured["timezone"] == "Europe/Paris"
        bad = await box.call("time", "get_current_time", {"timezone": "Not/AZone"})
        assert bad.is_error
        assert "Not/AZone" in bad.text


# --------------------------------------------------------------------------------------------
# Open failures
# --------------------------------------------------------------------------------------------


async def _open_error(tools: list[ChiaTool], **options: Any) -> ChiaError:
    with pytest.raises(ChiaError) as caught:
        async with McpToolbox(tools, node_id="node-1", **options):
            pytest.fail("the box should not have opened")
    error = caught.value
    assert error.node_id == "node-1"
    assert pickle.loads(pickle.dumps(error)) == error
    return error


async def test_open_fails_typed_for_an_unreachable_server() -> None:
    sock = loopback_socket()
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://user:pw-in-url@127.0.0.1:{port}/mcp?token=query-secret"
    tool = ChiaTool.http(url, name="gone", headers={"Authorization": "Bearer header-secret-123"})
    error = await _open_error([tool])
    assert type(error) is ServerError
    text = f"{error} {error!r}"
    assert "'gone'" in text
    assert f"http://127.0.0.1:{port}/mcp" in text
    for secret in ("header-secret-123", "pw-in-url", "query-secret"):
        assert secret not in text


async def test_open_fails_typed_for_a_wrong_url(http_served: Served) -> None:
    wrong = http_served.tool.url.replace("/mcp", "/nothing-here")  # type: ignore[union-attr]
    error = await _open_error([ChiaTool.http(wrong, name="wrong")])
    assert type(error) is InvalidRequestError
    assert "404" in str(error)


async def test_open_fails_typed_for_refused_credentials() -> None:
    async def unauthorized(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b"no"})

    http = ThreadedHttpServer(unauthorized).start()
    try:
        tool = ChiaTool.http(http.url, name="locked", headers={"X-Api-Key": "key-secret-456"})
        error = await _open_error([tool])
    finally:
        http.stop()
    assert type(error) is AuthenticationError
    assert "'locked'" in str(error)
    assert "key-secret-456" not in f"{error} {error!r}"


async def test_open_fails_typed_for_a_missing_command() -> None:
    tool = ChiaTool.stdio("/nonexistent/mcp-server-binary", name="missing")
    error = await _open_error([tool])
    assert type(error) is InvalidRequestError
    assert "'missing'" in str(error)
    assert "not found" in str(error)


async def test_open_fails_typed_when_the_server_exits_at_start() -> None:
    script = "import sys; sys.stderr.write('bad config: no token\\n'); sys.exit(3)"
    error = await _open_error([ChiaTool.stdio(sys.executable, "-c", script, name="crash")])
    assert type(error) is ProcessError
    assert error.exit_code == 3
    assert "bad config" in error.stderr
    assert "'crash'" in str(error)


async def test_open_fails_typed_when_the_handshake_times_out() -> None:
    # Reads stdin and never answers; exits on EOF so the teardown is quick.
    silent = ChiaTool.stdio(sys.executable, "-c", "import sys; sys.stdin.read()", name="silent")
    started = time.perf_counter()
    error = await _open_error([silent], connect_timeout=1.0)
    assert isinstance(error, CallTimeoutError)
    assert isinstance(error, TimeoutError)
    assert "'silent'" in str(error)
    assert time.perf_counter() - started < 4


async def test_open_fails_typed_for_an_object_that_is_not_a_server() -> None:
    error = await _open_error([ChiaTool.in_process(object(), name="bogus")])
    assert type(error) is InvalidRequestError
    assert "MCPServer" in str(error)


async def test_one_failed_server_closes_the_ones_that_opened(http_served: Served) -> None:
    server, _ = build_server()
    tools = [
        ChiaTool.in_process(server, name="mem"),
        http_served.tool,
        stdio_tool(name="fine"),
        ChiaTool.stdio("/nonexistent/server", name="broken"),
    ]
    error = await _open_error(tools)
    assert "'broken'" in str(error)
    # no_leaks: the stdio server that did start is stopped, the HTTP connection closed


def test_constructor_checks_its_arguments() -> None:
    server, _ = build_server()
    tool = ChiaTool.in_process(server, name="same")
    with pytest.raises(ValueError, match="share the name"):
        McpToolbox([tool, tool])
    with pytest.raises(TypeError):
        McpToolbox(["not a tool"])  # type: ignore[list-item]
