"""Provider-backend overhead against the raw SDK, measured in one run on the scripted server.

    python bench/provider_overhead.py [--calls 200] [--quick]

Rows (goals from the step-4 issue):
1. median per-call latency of OpenAICompatLLM.aprompt over raw AsyncOpenAI streaming the
   same turn (goal <= 1.15x);
2. wall time of 1000 calls at concurrency 100 with 50 ms server latency, over raw
   AsyncOpenAI doing the same (goal <= 1.2x);
3. a two-step MCP tool loop (model asks for `add`, then answers) through an in-process MCP
   server: median per call (goal <= 7 ms; tools/list per iteration is measured by
   bench/mcp_loop.py, goal 0);
4. KB of memory per in-flight call (tracemalloc peak over 100 concurrent calls; goal <= 60).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import tracemalloc
from typing import Any

import openai

from chia_async.backends.openai_compat import OpenAICompatLLM
from chia_async.testing import ParsedRequest, ScriptedModelServer, ToolCall, Turn
from chia_async.tools import ChiaTool


async def raw_call(client: openai.AsyncOpenAI) -> str:
    stream = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=100,
    )
    parts = []
    async for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                parts.append(choice.delta.content)
    return "".join(parts)


async def timed(fn: Any, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - started)
    return samples


async def concurrent(fn: Any, total: int, width: int) -> float:
    semaphore = asyncio.Semaphore(width)

    async def one() -> None:
        async with semaphore:
            await fn()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(total)))
    return time.perf_counter() - started


def mcp_server() -> Any:
    from mcp.server import MCPServer

    server = MCPServer("calc", log_level="WARNING")

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    return server


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    calls = 40 if args.quick else args.calls
    total = 200 if args.quick else 1000

    async with ScriptedModelServer() as server:
        server.script("text", [Turn(text="hello there", chunks=2)], repeat=True)
        server.script("slow", [Turn(text="hello there", chunks=2, latency=0.05)], repeat=True)

        def tool_turn(request: ParsedRequest) -> Turn:
            if request.tool_results:
                return Turn(text=f"sum={request.tool_results[0].output}")
            name = next(n for n in request.tool_names if n.endswith("add"))
            return Turn(tool_calls=[ToolCall(name=name, arguments={"a": 2, "b": 3})])

        server.script("tools", tool_turn)

        def llm(script: str) -> OpenAICompatLLM:
            return OpenAICompatLLM(
                "m",
                base_url=server.base_url(script) + "/v1",
                api_key="sk-bench",
                retries=0,
                logging_level=30,
            )

        raw = openai.AsyncOpenAI(
            base_url=server.base_url("text") + "/v1", api_key="sk-bench", max_retries=0
        )
        ours = llm("text")
        await raw_call(raw)
        await ours.aprompt("hi")
        raw_t = statistics.median(await timed(lambda: raw_call(raw), calls)) * 1000
        ours_t = statistics.median(await timed(lambda: ours.aprompt("hi"), calls)) * 1000
        print(
            f"1. per call: raw AsyncOpenAI {raw_t:.2f} ms, OpenAICompatLLM {ours_t:.2f} ms "
            f"-> {ours_t / raw_t:.2f}x (goal <= 1.15x)"
        )
        await raw.close()

        raw_slow = openai.AsyncOpenAI(
            base_url=server.base_url("slow") + "/v1",
            api_key="sk-bench",
            max_retries=0,
        )
        ours_slow = llm("slow")
        raw_wall = await concurrent(lambda: raw_call(raw_slow), total, 100)
        ours_wall = await concurrent(lambda: ours_slow.aprompt("hi"), total, 100)
        print(
            f"2. {total} calls at concurrency 100, 50 ms latency: raw {raw_wall:.2f} s, "
            f"ours {ours_wall:.2f} s -> {ours_wall / raw_wall:.2f}x (goal <= 1.2x)"
        )
        await raw_slow.close()

        tools = [ChiaTool.in_process(mcp_server(), name="calc")]
        looping = llm("tools")
        await looping.aprompt("add", tools)
        before = len(server.requests("tools"))
        loop_t = (
            statistics.median(
                await timed(lambda: looping.aprompt("add", tools), max(10, calls // 4))
            )
            * 1000
        )
        per_call = (len(server.requests("tools")) - before) / max(10, calls // 4)
        print(
            f"3. two-step MCP tool loop (in-process server, {per_call:.0f} model requests "
            f"per call, MCP session opened per call): median {loop_t:.2f} ms (goal <= 7 ms; "
            f"tools/list counts per iteration: bench/mcp_loop.py)"
        )

        tracemalloc.start()
        width = 100
        await concurrent(lambda: ours_slow.aprompt("hi"), width, width)
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        await concurrent(lambda: ours_slow.aprompt("hi"), width, width)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"4. memory per in-flight call: {(peak - base) / width / 1024:.1f} KB (goal <= 60)")


if __name__ == "__main__":
    asyncio.run(main())
