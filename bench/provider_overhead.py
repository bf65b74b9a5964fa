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

Where the peer runtimes are installed (``pip install -e '.[bench]'``), the same run measures
them against the same baselines (their idiomatic calls, which do not stream):

1a/1b. pydantic-ai ``Agent.run`` and openai-agents ``Runner.run`` (tracing disabled) over the
   same raw AsyncOpenAI call, sampled alternately with it and with a raw non-streaming call;
3h-3j. the two-step tool loop with the MCP server of row 3 served over streamable HTTP on
   loopback (uvicorn in a thread of this process, so its CPU counts against every contender
   alike): ours (``ChiaTool.http``), pydantic-ai (``MCPToolset``) and openai-agents
   (``MCPServerStreamableHttp``), each against a hand loop over the same HTTP server, with the
   tools/list requests and session opens per run that the server counted.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib.util
import socket
import statistics
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
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


async def raw_plain_call(client: openai.AsyncOpenAI) -> str:
    """The same turn without streaming: the wire mode of the peers' idiomatic calls."""
    response = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=100
    )
    return response.choices[0].message.content or ""


async def interleaved(fns: list[Callable[[], Awaitable[Any]]], n: int) -> list[float]:
    """Medians of ``fns`` sampled in turn, so that load from anything else on the machine
    weighs on all alike."""
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(n):
        for fn, out in zip(fns, samples, strict=True):
            started = time.perf_counter()
            await fn()
            out.append(time.perf_counter() - started)
    return [statistics.median(xs) for xs in samples]


async def paired(a: Any, b: Any, n: int) -> tuple[float, float]:
    """Medians of ``a`` and ``b`` sampled alternately."""
    x, y = await interleaved([a, b], n)
    return x, y


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
        await pydantic_ai_text_row(raw, calls)
        await openai_agents_text_row(raw, calls)
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
        await http_tool_rows(server, runs)

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


# -- Peer runtimes (the bench extra) against the same baselines ------------------------------

SKIPPED = "skipped: pip install -e '.[bench]'"
HAS_PYDANTIC_AI = importlib.util.find_spec("pydantic_ai") is not None
HAS_OPENAI_AGENTS = importlib.util.find_spec("agents") is not None


async def text_peer_row(label: str, raw: openai.AsyncOpenAI, peer: Any, calls: int) -> None:
    """``peer`` over the raw streamed call of row 1 and over the raw non-streaming call."""
    await peer()
    await raw_plain_call(raw)
    stream_m, plain_m, peer_m = await interleaved(
        [lambda: raw_call(raw), lambda: raw_plain_call(raw), peer], calls
    )
    print(
        f"{label} {peer_m * 1000:.2f} ms -> {peer_m / stream_m:.2f}x over raw streaming "
        f"({stream_m * 1000:.2f} ms), {peer_m / plain_m:.2f}x over raw non-streaming "
        f"({plain_m * 1000:.2f} ms)"
    )


async def pydantic_ai_text_row(raw: openai.AsyncOpenAI, calls: int) -> None:
    """Row 1 for pydantic-ai: ``Agent.run`` (not streaming) with an OpenAIChatModel."""
    label = "1a. per call: pydantic-ai Agent.run (non-streaming)"
    if not HAS_PYDANTIC_AI:
        print(f"{label}: {SKIPPED}")
        return
    from pydantic_ai import Agent

    async with own_client(raw) as client:
        agent = Agent(pydantic_ai_model(client), model_settings={"max_tokens": 100})

        async def peer() -> str:
            return (await agent.run("hi")).output

        await text_peer_row(label, raw, peer, calls)


async def openai_agents_text_row(raw: openai.AsyncOpenAI, calls: int) -> None:
    """Row 1 for openai-agents: ``Runner.run`` (not streaming) on OpenAIChatCompletionsModel."""
    label = "1b. per call: openai-agents Runner.run (non-streaming)"
    if not HAS_OPENAI_AGENTS:
        print(f"{label}: {SKIPPED}")
        return
    import agents

    agents.set_tracing_disabled(True)
    async with own_client(raw) as client:
        agent = openai_agents_agent(client, [])

        async def peer() -> Any:
            return (await agents.Runner.run(agent, "hi")).final_output

        await text_peer_row(label, raw, peer, calls)


def own_client(raw: openai.AsyncOpenAI) -> openai.AsyncOpenAI:
    """A client like ``raw`` with a connection pool of its own (``with_options`` would share
    raw's, and closing it would close raw's)."""
    return openai.AsyncOpenAI(base_url=str(raw.base_url), api_key="sk-bench", max_retries=0)


def pydantic_ai_model(client: openai.AsyncOpenAI) -> Any:
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    return OpenAIChatModel("m", provider=OpenAIProvider(openai_client=client))


def openai_agents_agent(client: openai.AsyncOpenAI, mcp_servers: list[Any]) -> Any:
    import agents

    return agents.Agent(
        name="bench",
        model=agents.OpenAIChatCompletionsModel(model="m", openai_client=client),
        model_settings=agents.ModelSettings(max_tokens=100),
        mcp_servers=mcp_servers,
    )


@contextlib.contextmanager
def http_mcp(server_obj: Any) -> Iterator[str]:
    """``server_obj`` served over streamable HTTP by uvicorn in a thread; yields its URL."""
    import uvicorn

    # IPPROTO_TCP: asyncio sets TCP_NODELAY only then (else ~40 ms delayed-ACK stalls)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    config = uvicorn.Config(
        server_obj.streamable_http_app(streamable_http_path="/mcp"),
        log_level="critical",
        access_log=False,
        lifespan="on",
        ws="none",
        timeout_graceful_shutdown=1,
    )
    http = uvicorn.Server(config)
    thread = threading.Thread(
        target=lambda: asyncio.run(http.serve(sockets=[sock])), name="bench-mcp-http", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not http.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP MCP server did not start")
            time.sleep(0.005)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    finally:
        http.should_exit = True
        thread.join(10)
        sock.close()


class ToolRowSetup:
    """What the HTTP tool-loop rows share: the scripted server, the MCP server's URL and
    request counts, and a hand loop (raw AsyncOpenAI + an mcp.Client held on that URL)."""

    def __init__(
        self,
        server: ChildServer,
        url: str,
        counts: collections.Counter[str],
        runs: int,
        hand: Callable[[], Awaitable[str]],
    ) -> None:
        self.server, self.url, self.counts, self.runs, self.hand = server, url, counts, runs, hand

    def model_url(self, script: str) -> str:
        """A scripted tool model of its own, so that model requests are counted per runtime."""
        self.server.script(script, tool_turn)
        return self.server.base_url(script) + "/v1"

    def model_client(self, script: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.model_url(script), api_key="sk-bench", max_retries=0
        )

    async def row(self, label: str, script: str, run: Callable[[], Awaitable[Any]]) -> None:
        answer = await run()  # warm-up (and a check that the loop really ran)
        assert "sum=5" in str(answer), answer
        await self.hand()
        before = self.server.request_count(script)
        self.counts.clear()
        hand_m, run_m = await paired(self.hand, run, self.runs)
        per_run = {
            "model": (self.server.request_count(script) - before) / self.runs,
            "list": self.counts["tools/list"] / self.runs,
            "open": (self.counts["server/discover"] + self.counts["initialize"]) / self.runs,
        }
        print(
            f"{label}: median {run_m * 1000:.2f} ms against the hand loop over HTTP "
            f"{hand_m * 1000:.2f} ms -> {run_m / hand_m:.2f}x; per run: "
            f"{per_run['model']:.0f} model requests, {per_run['list']:.1f} tools/list, "
            f"{per_run['open']:.1f} session opens"
        )


async def http_tool_rows(server: ChildServer, runs: int) -> None:
    """Row 3 over streamable HTTP: ours, pydantic-ai and openai-agents on one server."""
    server_obj, counts = mcp_server()
    server.script("tools-hand", tool_turn)
    raw = openai.AsyncOpenAI(
        base_url=server.base_url("tools-hand") + "/v1", api_key="sk-bench", max_retries=0
    )
    with http_mcp(server_obj) as url:
        async with raw, Client(url) as mcp_client:
            schema = (await mcp_client.list_tools()).tools[0].input_schema
            setup = ToolRowSetup(
                server, url, counts, runs, lambda: hand_loop(raw, mcp_client, schema)
            )
            await ours_http_row(setup)
            await pydantic_ai_tool_row(setup, held=True)
            await pydantic_ai_tool_row(setup, held=False)
            await openai_agents_tool_row(setup, cache_tools_list=False)
            await openai_agents_tool_row(setup, cache_tools_list=True)


async def ours_http_row(setup: ToolRowSetup) -> None:
    """OpenAICompatLLM with ``ChiaTool.http``: the default held session."""
    llm = OpenAICompatLLM(
        "m",
        base_url=setup.model_url("tools-ours"),
        api_key="sk-bench",
        retries=0,
        logging_level=30,
    )
    tools = [ChiaTool.http(setup.url, name="calc")]

    async def run() -> str:
        return (await llm.aprompt("add", tools)).result

    try:
        await setup.row(
            "3h. tool loop over HTTP, ours (ChiaTool.http, held session)", "tools-ours", run
        )
    finally:
        await llm.aclose()


async def pydantic_ai_tool_row(setup: ToolRowSetup, *, held: bool) -> None:
    """pydantic-ai's Agent.run with an MCPToolset on the URL; ``held``: inside
    ``async with agent`` (one session for all runs), else a session per run."""
    how = "held: async with agent" if held else "a session per run"
    label = f"3i. tool loop over HTTP, pydantic-ai (MCPToolset, {how})"
    if not HAS_PYDANTIC_AI:
        print(f"{label}: {SKIPPED}")
        return
    from pydantic_ai import Agent
    from pydantic_ai.mcp import MCPToolset

    script = f"tools-pydantic-ai-{held}"
    async with setup.model_client(script) as client:
        agent = Agent(
            pydantic_ai_model(client),
            toolsets=[MCPToolset(setup.url)],
            model_settings={"max_tokens": 100},
        )

        async def run() -> str:
            return (await agent.run("add")).output

        async with agent if held else contextlib.nullcontext():
            await setup.row(label, script, run)


async def openai_agents_tool_row(setup: ToolRowSetup, *, cache_tools_list: bool) -> None:
    """openai-agents' Runner.run with an MCPServerStreamableHttp held open across runs."""
    label = (
        f"3j. tool loop over HTTP, openai-agents (MCPServerStreamableHttp, "
        f"cache_tools_list={cache_tools_list})"
    )
    if not HAS_OPENAI_AGENTS:
        print(f"{label}: {SKIPPED}")
        return
    import agents
    from agents.mcp import MCPServerStreamableHttp

    agents.set_tracing_disabled(True)
    script = f"tools-openai-agents-{cache_tools_list}"
    async with (
        setup.model_client(script) as client,
        MCPServerStreamableHttp(
            params={"url": setup.url}, cache_tools_list=cache_tools_list
        ) as mcp,
    ):
        agent = openai_agents_agent(client, [mcp])

        async def run() -> Any:
            return (await agents.Runner.run(agent, "add")).final_output

        await setup.row(label, script, run)


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
