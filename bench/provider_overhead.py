"""Provider-backend overhead against the raw SDK, measured in one run on the scripted server
(run in a child process, so that its CPU is not charged to the client under test).

    python bench/provider_overhead.py [--calls 200] [--quick]

Rows (goals from the step-4 issue):
1. median per-call latency of OpenAICompatLLM.aprompt over raw AsyncOpenAI streaming the
   same turn (goal <= 1.15x);
2. wall time of 1000 calls at concurrency 100 with 50 ms server latency, over raw
   AsyncOpenAI doing the same (goal <= 1.2x);
3. a two-step MCP tool loop (model asks for `add`, then answers) through an in-process MCP
   server: median per call (goal <= 7 ms) and the MCP requests per run counted by the server
   (goal: 0 tools/list in steady state), with the default held session and, for contrast,
   with the session opened per call (``mcp_keepalive = 0``);
4. KB of memory per in-flight call (tracemalloc peak over 100 concurrent calls; goal <= 60);
5. median per-call latency of BedrockLLM.aprompt over a raw aioboto3 ConverseStream of the same
   turn (goal <= 1.15x);
6. median per-call latency of VertexGeminiLLM.aprompt over a raw google-genai (Vertex mode)
   stream of the same turn (goal <= 1.15x).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import time
import tracemalloc
from typing import Any

import openai
import orjson
from child_server import ChildServer
from mcp import Client

from chia_async.backends.openai_compat import OpenAICompatLLM
from chia_async.testing import ParsedRequest, ToolCall, Turn
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


async def paired(a: Any, b: Any, n: int) -> tuple[float, float]:
    """Medians of ``a`` and ``b`` sampled alternately, so that load from anything else on the
    machine weighs on both alike."""
    xs, ys = [], []
    for _ in range(n):
        for fn, out in ((a, xs), (b, ys)):
            started = time.perf_counter()
            await fn()
            out.append(time.perf_counter() - started)
    return statistics.median(xs), statistics.median(ys)


async def hand_loop(client: openai.AsyncOpenAI, mcp_client: Any, tool_schema: Any) -> str:
    """The floor: two raw streamed requests around one call on an MCP client held open."""
    tools = [
        {
            "type": "function",
            "function": {"name": "calc_add", "description": "Add.", "parameters": tool_schema},
        }
    ]
    messages: list[Any] = [{"role": "user", "content": "add"}]
    calls: dict[int, dict[str, str]] = {}
    stream = await client.chat.completions.create(
        model="m", messages=messages, tools=tools, stream=True, max_tokens=100
    )
    async for chunk in stream:
        for choice in chunk.choices:
            for frag in choice.delta.tool_calls or ():
                call = calls.setdefault(frag.index, {"id": "", "name": "", "arguments": ""})
                call["id"] = frag.id or call["id"]
                if frag.function:
                    call["name"] += frag.function.name or ""
                    call["arguments"] += frag.function.arguments or ""
    call = calls[0]
    result = await mcp_client.call_tool("add", orjson.loads(call["arguments"]))
    messages.append(
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": call["id"], "content": result.content[0].text})
    stream = await client.chat.completions.create(
        model="m", messages=messages, tools=tools, stream=True, max_tokens=100
    )
    parts = []
    async for chunk in stream:
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
    return "".join(parts)


async def concurrent(fn: Any, total: int, width: int) -> float:
    semaphore = asyncio.Semaphore(width)

    async def one() -> None:
        async with semaphore:
            await fn()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(total)))
    return time.perf_counter() - started


def mcp_server() -> tuple[Any, collections.Counter[str]]:
    """An in-process MCP server with one tool, counting the requests it sees per method."""
    from mcp.server import MCPServer

    counts: collections.Counter[str] = collections.Counter()
    server = MCPServer("calc", log_level="WARNING")

    async def count(ctx: Any, call_next: Any) -> Any:
        counts[ctx.method] += 1
        return await call_next(ctx)

    server.middleware.append(count)

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    return server, counts


def tool_turn(request: ParsedRequest) -> Turn:
    """The scripted model of row 3: call `add`, then answer with its result."""
    if request.tool_results:
        return Turn(text=f"sum={request.tool_results[0].output}")
    name = next(n for n in request.tool_names if n.endswith("add"))
    return Turn(tool_calls=[ToolCall(name=name, arguments={"a": 2, "b": 3})])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    calls = 40 if args.quick else args.calls
    total = 200 if args.quick else 1000

    with ChildServer() as server:  # its CPU is not charged to the client under test
        server.script("text", [Turn(text="hello there", chunks=2)], repeat=True)
        server.script("slow", [Turn(text="hello there", chunks=2, latency=0.05)], repeat=True)

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
        raw_m, ours_m = await paired(lambda: raw_call(raw), lambda: ours.aprompt("hi"), calls)
        raw_t, ours_t = raw_m * 1000, ours_m * 1000
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

        server_obj, counts = mcp_server()
        tools = [ChiaTool.in_process(server_obj, name="calc")]
        runs = max(20, calls // 2)
        raw_tools = openai.AsyncOpenAI(
            base_url=server.base_url("tools") + "/v1", api_key="sk-bench", max_retries=0
        )
        async with Client(server_obj) as mcp_client:
            schema = (await mcp_client.list_tools()).tools[0].input_schema
            for keepalive, label in ((60.0, "held session (default)"), (0.0, "opened per call")):
                looping = llm("tools")
                looping.mcp_keepalive = keepalive
                await looping.aprompt("add", tools)  # warm-up: opens (and, if held, keeps) it
                await hand_loop(raw_tools, mcp_client, schema)
                before_requests = server.request_count("tools")
                counts.clear()
                hand_t, loop_t = await paired(
                    lambda: hand_loop(raw_tools, mcp_client, schema),
                    lambda: looping.aprompt("add", tools),  # noqa: B023
                    runs,
                )
                per_call = (server.request_count("tools") - before_requests) / runs / 2
                print(
                    f"3. two-step MCP tool loop, {label}: median {loop_t * 1000:.2f} ms "
                    f"(goal <= 7 ms) against a hand loop (raw AsyncOpenAI + held mcp.Client) "
                    f"{hand_t * 1000:.2f} ms -> {loop_t / hand_t:.2f}x; per run: "
                    f"{per_call:.0f} model requests, "
                    f"{counts['tools/list'] / runs:.1f} tools/list (goal 0 in steady state)"
                )
                await looping.aclose()
        await raw_tools.close()

        tracemalloc.start()
        width = 100
        await concurrent(lambda: ours_slow.aprompt("hi"), width, width)
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        await concurrent(lambda: ours_slow.aprompt("hi"), width, width)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"4. memory per in-flight call: {(peak - base) / width / 1024:.1f} KB (goal <= 60)")

        await bedrock_row(server, calls)
        await vertex_row(server, calls)


# -- Bedrock and Vertex Gemini against their raw SDKs -----------------------------------------

BEDROCK_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
BEDROCK_KEYS = {"aws_access_key_id": "AKIABENCH", "aws_secret_access_key": "bench-secret"}


async def raw_bedrock_call(client: Any) -> str:
    response = await client.converse_stream(
        modelId=BEDROCK_MODEL,
        messages=[{"role": "user", "content": [{"text": "hi"}]}],
        inferenceConfig={"maxTokens": 100},
    )
    stream = response["stream"]
    parts = []
    try:
        async for event in stream:
            delta = event.get("contentBlockDelta")
            if delta is not None and "text" in delta["delta"]:
                parts.append(delta["delta"]["text"])
    finally:
        stream.close()
    return "".join(parts)


async def bedrock_row(server: ChildServer, calls: int) -> None:
    """BedrockLLM.aprompt over a raw aioboto3 ConverseStream of the same turn."""
    import aioboto3
    import botocore.config

    from chia_async.backends.bedrock import BedrockLLM

    server.script("bedrock", [Turn(text="hello there", chunks=2)], repeat=True)
    endpoint = server.base_url("bedrock")
    ours = BedrockLLM(
        BEDROCK_MODEL,
        region="us-east-1",
        retries=0,
        logging_level=30,
        client_kwargs={"endpoint_url": endpoint, **BEDROCK_KEYS},
    )
    config = botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"})
    async with aioboto3.Session().client(
        "bedrock-runtime",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=config,
        **BEDROCK_KEYS,
    ) as raw:
        await raw_bedrock_call(raw)
        await ours.aprompt("hi")
        raw_m, ours_m = await paired(
            lambda: raw_bedrock_call(raw), lambda: ours.aprompt("hi"), calls
        )
    await ours.aclose()
    print(
        f"5. per call: raw aioboto3 ConverseStream {raw_m * 1000:.2f} ms, BedrockLLM "
        f"{ours_m * 1000:.2f} ms -> {ours_m / raw_m:.2f}x (goal <= 1.15x)"
    )


async def raw_gemini_call(client: Any, config: Any) -> str:
    parts = []
    async for chunk in await client.aio.models.generate_content_stream(
        model="gemini-2.5-flash", contents="hi", config=config
    ):
        parts.append(chunk.text or "")
    return "".join(parts)


async def vertex_row(server: ChildServer, calls: int) -> None:
    """VertexGeminiLLM.aprompt over a raw google-genai (Vertex mode) stream of the same turn."""
    import warnings

    import google.oauth2.credentials
    from google import genai
    from google.genai import types

    from chia_async.backends.vertex import VertexGeminiLLM

    # google-genai subclasses aiohttp.ClientSession, which aiohttp reports; not ours to fix
    warnings.filterwarnings("ignore", "Inheritance class AiohttpClientSession", DeprecationWarning)
    server.script("gemini", [Turn(text="hello there", chunks=2)], repeat=True)
    credentials = google.oauth2.credentials.Credentials(token="ya29.bench")
    options = {"base_url": server.base_url("gemini")}
    ours = VertexGeminiLLM(
        "gemini-2.5-flash",
        project="bench",
        location="us-central1",
        retries=0,
        logging_level=30,
        client_kwargs={"credentials": credentials, "http_options": options},
    )
    raw = genai.Client(
        vertexai=True,
        project="bench",
        location="us-central1",
        credentials=credentials,
        http_options=types.HttpOptions(**options, retry_options=types.HttpRetryOptions(attempts=1)),
    )
    config = types.GenerateContentConfig(max_output_tokens=100)
    await raw_gemini_call(raw, config)
    await ours.aprompt("hi")
    raw_m, ours_m = await paired(
        lambda: raw_gemini_call(raw, config), lambda: ours.aprompt("hi"), calls
    )
    await raw.aio.aclose()
    raw.close()
    await ours.aclose()
    print(
        f"6. per call: raw google-genai stream {raw_m * 1000:.2f} ms, VertexGeminiLLM "
        f"{ours_m * 1000:.2f} ms -> {ours_m / raw_m:.2f}x (goal <= 1.15x)"
    )


if __name__ == "__main__":
    asyncio.run(main())
