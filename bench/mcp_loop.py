"""The MCP side of a tool loop, without a model: what McpToolbox adds per iteration and per open.

    python bench/mcp_loop.py [--iterations 200] [--opens 20] [--quick]

For each way of reaching a server — in-process (``ChiaTool.in_process``, connected in memory),
streamable HTTP (an ``MCPServer`` served by uvicorn in a separate process, as a real server
would be) and stdio (the same server as a child process) — it reports:

* **iteration**: the median time of one two-step tool "loop" iteration on an open box:
  ``list_tools()`` (from the cache) + ``call("add")`` + ``call("echo")``;
* **hand loop**: the same two calls on a bare ``mcp.Client`` held open by hand — the floor a
  runtime can approach (peers measured on this machine: pydantic-ai 13-41 ms and
  openai-agents 11.5-18.5 ms per two-step loop, against ~5 ms for such a hand loop over HTTP);
* **open**: the median time to open (and, separately, close) a box with that one server;
* **tools/list per iteration**: requests the server saw, counted server-side (goal: 0).

Medians, after a warm-up (the first call of a process imports jsonschema to validate output).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from chia_async.loop.mcp import McpToolbox
from chia_async.tools import ChiaTool


def build_server() -> Any:
    from mcp.server import MCPServer

    counts: collections.Counter[str] = collections.Counter()
    server = MCPServer("bench", log_level="CRITICAL")

    async def count(ctx: Any, call_next: Any) -> Any:
        counts[ctx.method] += 1
        return await call_next(ctx)

    server.middleware.append(count)

    @server.tool(description="Add two integers.")
    async def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Return the text unchanged.")
    async def echo(text: str) -> str:
        return text

    @server.tool(description="Requests per method this server has seen.")
    async def stats() -> dict[str, int]:
        return dict(counts)

    return server


def serve_http(port_file: str) -> None:
    """Child-process mode: serve the bench server over HTTP, write the port, run until killed."""
    import uvicorn

    server = build_server()
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only then (see the
    # module docstring of chia_async.loop.mcp); without it every response waits ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    with open(port_file, "w") as f:
        f.write(str(sock.getsockname()[1]))
    app = server.streamable_http_app(streamable_http_path="/mcp")
    config = uvicorn.Config(app, log_level="critical", access_log=False, ws="none")
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


@contextlib.contextmanager
def http_server_process() -> Any:
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".port") as port_file:
        child = subprocess.Popen([sys.executable, __file__, "--serve-http", port_file.name])
        try:
            deadline = time.monotonic() + 20
            while not (port := port_file.read().strip()):
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the HTTP bench server did not start")
                time.sleep(0.05)
                port_file.seek(0)
            url = f"http://127.0.0.1:{port}/mcp"
            while True:  # wait until it accepts connections
                try:
                    socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            yield url
        finally:
            child.terminate()
            child.wait(10)


async def median_of(runs: int, step: Callable[[], Awaitable[Any]]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def list_requests(box: McpToolbox, server: str) -> int:
    outcome = await box.call(server, "stats")
    counts = outcome.structured  # a dict result is the structured content itself
    return int(counts.get("tools/list", 0))


async def bench_box(tool: ChiaTool, iterations: int, opens: int) -> dict[str, float]:
    async with McpToolbox([tool]) as box:

        async def iteration() -> None:
            await box.list_tools()
            for outcome in (
                await box.call(tool.name, "add", {"a": 1, "b": 2}),
                await box.call(tool.name, "echo", {"text": "hello"}),
            ):
                assert not outcome.is_error, outcome.text

        for _ in range(5):
            await iteration()
        before = await list_requests(box, tool.name)
        loop = await median_of(iterations, iteration)
        lists = (await list_requests(box, tool.name) - before) / iterations

    open_times, close_times = [], []
    for _ in range(opens):
        box = McpToolbox([tool])
        started = time.perf_counter()
        await box.__aenter__()
        opened = time.perf_counter()
        await box.__aexit__(None, None, None)
        open_times.append(opened - started)
        close_times.append(time.perf_counter() - opened)
    return {
        "iteration": loop,
        "lists": lists,
        "open": statistics.median(open_times),
        "close": statistics.median(close_times),
    }


async def bench_hand_loop(target: Any, iterations: int) -> float:
    from mcp import Client

    async with Client(target, cache=None) as client:
        await client.list_tools()

        async def iteration() -> None:
            await client.call_tool("add", {"a": 1, "b": 2})
            await client.call_tool("echo", {"text": "hello"})

        for _ in range(5):
            await iteration()
        return await median_of(iterations, iteration)


async def main(args: argparse.Namespace) -> None:
    from mcp import StdioServerParameters

    rows: list[tuple[str, dict[str, float], float]] = []

    server = build_server()
    tool = ChiaTool.in_process(server, name="bench")
    rows.append(
        (
            "in-process",
            await bench_box(tool, args.iterations, args.opens),
            await bench_hand_loop(server, args.iterations),
        )
    )

    with http_server_process() as url:
        tool = ChiaTool.http(url, name="bench")
        rows.append(
            (
                "http",
                await bench_box(tool, args.iterations, args.opens),
                await bench_hand_loop(url, args.iterations),
            )
        )

    if not args.no_stdio:
        script = [__file__, "--serve-stdio"]
        tool = ChiaTool.stdio(sys.executable, *script, name="bench")
        params = StdioServerParameters(command=sys.executable, args=script)
        rows.append(
            (
                "stdio",
                await bench_box(tool, args.iterations, max(3, args.opens // 4)),
                await bench_hand_loop(params, args.iterations),
            )
        )

    print(
        f"{'server':<11} {'iteration':>10} {'hand loop':>10} {'open':>9} {'close':>9}"
        "  tools/list per iteration"
    )
    for name, box, hand in rows:
        print(
            f"{name:<11} {box['iteration'] * 1000:>8.2f}ms {hand * 1000:>8.2f}ms "
            f"{box['open'] * 1000:>7.1f}ms {box['close'] * 1000:>7.1f}ms  {box['lists']:g}"
        )
    print(
        f"(medians; {args.iterations} iterations, {args.opens} opens;"
        " iteration = list_tools + add + echo)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--opens", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="fewer runs, no stdio")
    parser.add_argument("--no-stdio", action="store_true")
    parser.add_argument("--serve-http", metavar="PORT_FILE", help=argparse.SUPPRESS)
    parser.add_argument("--serve-stdio", action="store_true", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.serve_http:
        serve_http(parsed.serve_http)
    elif parsed.serve_stdio:
        build_server().run("stdio")
    else:
        if parsed.quick:
            parsed.iterations, parsed.opens, parsed.no_stdio = 50, 5, True
        anyio.run(main, parsed)
