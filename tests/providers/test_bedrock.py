"""BedrockLLM: the real aioboto3 client against the scripted server (Converse and
ConverseStream over loopback), tools through a real MCP server. Credentials are dummies in the
environment; no metadata server, profile or network is ever consulted."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import pickle
import socket
import time
from datetime import UTC, datetime

import pytest

from chia_async import errors
from chia_async.backends import bedrock
from chia_async.events import (
    ReasoningDelta,
    Retrying,
    StepFinished,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolResult,
)
from chia_async.testing import Fault, ToolCall, Turn
from chia_async.testing.protocols.bedrock import bedrock_fault
from chia_async.tools import ChiaTool

pytestmark = pytest.mark.timeout(60)

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
ACCESS_KEY = "AKIACHIATESTKEY00000"
SECRET_KEY = "chia-test-secret-key-0000000000000000000"


@pytest.fixture(autouse=True)
def offline_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    # Credentials from the environment only: no instance metadata, container endpoint,
    # profile, config file or SSO cache.
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_DEFAULT_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", "us-east-1")


MADE: list[bedrock.BedrockLLM] = []


@pytest.fixture(autouse=True)
async def no_task_leaks() -> None:
    MADE.clear()
    yield
    # What a call leaves open on purpose (the client, pooled MCP sessions) ends with
    # aclose(); nothing else may still run.
    for llm in MADE:
        await llm.aclose()
    await asyncio.sleep(0)
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert others == [], f"tasks left running: {others}"


def make(server, script: str, **kwargs) -> bedrock.BedrockLLM:
    kwargs.setdefault("retries", 0)
    client_kwargs = {"endpoint_url": server.base_url(script), **kwargs.pop("client_kwargs", {})}
    llm = bedrock.BedrockLLM(MODEL, client_kwargs=client_kwargs, **kwargs)
    MADE.append(llm)
    return llm


async def closing(llm: bedrock.BedrockLLM, message: str, tools: list[ChiaTool]) -> list:
    """The events of one call, with the LLM closed before the MCP server goes away."""
    async with llm:
        return await events_of(llm, message, tools)


async def events_of(llm, message="hi", tools=None) -> list:
    async with llm.stream(message, tools) as stream:
        return [e async for e in stream]


def generations(server, script: str) -> list:
    return [r for r in server.requests(script) if r.parsed]


def fast_retries(llm: bedrock.BedrockLLM) -> bedrock.BedrockLLM:
    llm.retry_policy = dataclasses.replace(llm.retry_policy, initial_backoff=0.0)
    return llm


# -- turns ----------------------------------------------------------------------------------


async def test_text_turn_streams_through_converse_stream(model_server) -> None:
    model_server.script("t", [Turn(text="hello there friend", chunks=3, input_tokens=12)])
    llm = make(model_server, "t", system_message="be brief", max_tokens=321)
    events = await events_of(llm)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["hello ", "there ", "friend"]
    result = events[-1].result
    assert result.success and result.result == "hello there friend" and result.returncode == 0
    assert result.stop_reason == "end_turn"
    assert result.usage.input_tokens == 12 and result.usage.output_tokens == 5
    (request,) = generations(model_server, "t")
    assert request.path.endswith("/converse-stream") and request.parsed.model == MODEL
    assert request.body["system"] == [{"text": "be brief"}]
    assert request.body["inferenceConfig"] == {"maxTokens": 321}
    assert request.body["messages"] == [{"role": "user", "content": [{"text": "hi"}]}]
    # signed with the credentials of the standard chain (here: the environment)
    assert f"Credential={ACCESS_KEY}/" in request.headers["authorization"]
    assert "/us-east-1/bedrock/aws4_request" in request.headers["authorization"]


async def test_reasoning_streams_and_goes_back_with_its_signature(model_server, mcp_server):
    def turn(request):
        if request.tool_results:
            return Turn(text="done")
        add = next(n for n in request.tool_names if n.endswith("add"))
        return Turn(reasoning="let me add", tool_calls=[ToolCall(name=add, arguments={"a": 1})])

    model_server.script("r", turn)
    events = await closing(
        make(model_server, "r"), "go", [ChiaTool.http(mcp_server.url, name="mock")]
    )
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "let me add"
    assistant = generations(model_server, "r")[-1].body["messages"][1]
    reasoning = assistant["content"][0]["reasoningContent"]["reasoningText"]
    assert reasoning["text"] == "let me add" and reasoning["signature"].startswith("sig_")


async def test_tool_loop_through_a_real_mcp_server(model_server, mcp_server) -> None:
    def turn(request):
        if request.tool_results:
            return Turn(text="sum=" + ",".join(r.output for r in request.tool_results))
        add = next(n for n in request.tool_names if n.endswith("add"))
        echo = next(n for n in request.tool_names if n.endswith("echo"))
        return Turn(
            text="calling",
            tool_calls=[
                ToolCall(name=add, arguments={"a": 2, "b": 3}),
                ToolCall(name=echo, arguments={"text": "hi"}),
            ],
            chunks=3,  # arguments arrive as JSON fragments
        )

    model_server.script("tools", turn)
    events = await closing(
        make(model_server, "tools"), "add", [ChiaTool.http(mcp_server.url, name="mock")]
    )
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [e.call_id for e in started] == [e.call_id for e in finished]
    assert [e.arguments for e in finished] == [{"a": 2, "b": 3}, {"text": "hi"}]
    assert [r.output for r in results] == ["5", "hi"]
    assert all(r.executed_by == "host" and not r.is_error for r in results)
    assert sorted(c.tool for c in mcp_server.calls) == ["add", "echo"]
    assert [s.finish_reason for s in events if isinstance(s, StepFinished)] == [
        "tool_use",
        "end_turn",
    ]
    assert events[-1].result.result == "sum=5,hi"

    first, second = generations(model_server, "tools")
    spec = first.body["toolConfig"]["tools"][0]["toolSpec"]
    assert spec["inputSchema"]["json"]["type"] == "object"
    assert spec["description"] == "Add two integers and return the sum."
    messages = second.body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    text, use_add, use_echo = messages[1]["content"]
    assert text == {"text": "calling"}
    assert use_add["toolUse"]["input"] == {"a": 2, "b": 3}  # an object, not a JSON string
    assert [b["toolResult"] for b in messages[2]["content"]] == [
        {
            "toolUseId": use_add["toolUse"]["toolUseId"],
            "content": [{"text": "5"}],
            "status": "success",
        },
        {
            "toolUseId": use_echo["toolUse"]["toolUseId"],
            "content": [{"text": "hi"}],
            "status": "success",
        },
    ]


async def test_unknown_tool_and_bad_arguments_go_back_to_the_model(model_server, mcp_server):
    def turn(request):
        if request.tool_results:
            return Turn(text=" | ".join(r.output for r in request.tool_results))
        add = next(n for n in request.tool_names if n.endswith("add"))
        return Turn(
            tool_calls=[
                ToolCall(name="no_such_tool", arguments={}),
                ToolCall(name=add, arguments='{"a": 1,'),  # streamed, never valid JSON
            ]
        )

    model_server.script("bad", turn)
    events = await closing(make(model_server, "bad"), "go", [ChiaTool.http(mcp_server.url)])
    result = events[-1].result
    assert result.success
    assert "no tool named 'no_such_tool'" in result.result
    assert "not valid JSON" in result.result
    assert mcp_server.calls == []
    statuses = [
        b["toolResult"]["status"]
        for b in generations(model_server, "bad")[-1].body["messages"][2]["content"]
    ]
    assert statuses == ["error", "error"]


async def test_converse_without_streaming(model_server, mcp_server) -> None:
    def turn(request):
        if request.tool_results:
            return Turn(text=f"sum={request.tool_results[0].output}")
        add = next(n for n in request.tool_names if n.endswith("add"))
        return Turn(text="adding", tool_calls=[ToolCall(name=add, arguments={"a": 4, "b": 5})])

    model_server.script("plain", turn)
    llm = make(model_server, "plain", streaming=False)
    events = await closing(llm, "go", [ChiaTool.http(mcp_server.url, name="mock")])
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["adding", "sum=9"]
    assert [e.output for e in events if isinstance(e, ToolResult)] == ["9"]
    assert events[-1].result.result == "sum=9"
    assert [r.path.rsplit("/", 1)[1] for r in generations(model_server, "plain")] == [
        "converse",
        "converse",
    ]


async def test_a_model_that_cannot_stream_tool_use_falls_back_to_converse(
    model_server, mcp_server
) -> None:
    refusal = "This model doesn't support tool use in streaming mode."

    def turn(request):
        if request.stream:
            return Turn(fault=bedrock_fault("ValidationException", message=refusal))
        if request.tool_results:
            return Turn(text="ok")
        add = next(n for n in request.tool_names if n.endswith("add"))
        return Turn(tool_calls=[ToolCall(name=add, arguments={"a": 1, "b": 1})])

    model_server.script("llama", turn)
    tools = [ChiaTool.http(mcp_server.url, name="mock")]
    async with make(model_server, "llama") as llm:
        assert (await llm.aprompt("go", tools)).result == "ok"
        assert (await llm.aprompt("again", tools)).result == "ok"
    ops = [r.path.rsplit("/", 1)[1] for r in generations(model_server, "llama")]
    assert ops == ["converse-stream", "converse", "converse", "converse", "converse"]


async def test_max_tool_iterations_ends_with_a_clear_stop_reason(model_server, mcp_server):
    def turn(request):
        add = next(n for n in request.tool_names if n.endswith("add"))
        return Turn(tool_calls=[ToolCall(name=add, arguments={"a": 1, "b": 1})])

    model_server.script("loop", turn)
    llm = make(model_server, "loop", max_tool_iterations=2)
    events = await closing(llm, "go", [ChiaTool.http(mcp_server.url, name="mock")])
    result = events[-1].result
    assert result.stop_reason == "max_tool_iterations"
    assert len(mcp_server.calls) == 2


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "cls", "code"),
    [
        (Fault.http(403, "authentication"), bedrock.AuthenticationError, "Unrecognized"),
        (Fault.http(403, "permission"), bedrock.AuthenticationError, "AccessDenied"),
        (Fault.http(403, "billing"), bedrock.BillingError, "AccessDenied"),
        (Fault.http(400), bedrock.InvalidRequestError, "ValidationException"),
        (Fault.http(404), bedrock.InvalidRequestError, "ResourceNotFound"),
        (Fault.http(400, "context_length"), bedrock.ContextLengthExceededError, "Validation"),
        (
            bedrock_fault("ValidationException", message="Too many input tokens. Max: 8192."),
            bedrock.ContextLengthExceededError,
            "ValidationException",
        ),
        (
            Fault(kind="midstream", error="context_length", after_chunks=1),
            bedrock.ContextLengthExceededError,
            "ValidationException",
        ),
    ],
    ids=[
        "unrecognized",
        "denied",
        "billing",
        "validation",
        "not-found",
        "context",
        "too-many-tokens",
        "midstream-context",
    ],
)
async def test_errors_that_retrying_cannot_fix_are_raised(model_server, fault, cls, code) -> None:
    model_server.script("e", [Turn(text="partial answer", fault=fault)], repeat=True)
    llm = make(model_server, "e", retries=2)
    with pytest.raises(cls) as info:
        await llm.aprompt("hi")
    assert info.value.status_code.startswith(code)
    assert SECRET_KEY not in repr(info.value) and SECRET_KEY not in str(info.value)
    assert len(generations(model_server, "e")) == 1  # never retried, by us or by botocore
    if cls is bedrock.BillingError:
        assert isinstance(info.value, bedrock.AuthenticationError)  # the reference's class
        assert isinstance(info.value, errors.BillingError)


@pytest.mark.parametrize(
    "fault",
    [Fault.http(429), bedrock_fault("ServiceQuotaExceededException")],
    ids=["throttling", "quota"],
)
async def test_throttling_is_a_rate_limit(model_server, fault) -> None:
    model_server.script("rl", [Turn(fault=fault)])
    with pytest.raises(bedrock.RateLimitError) as info:
        await events_of(make(model_server, "rl"))
    assert info.value.status_code in ("ThrottlingException", "ServiceQuotaExceededException")
    assert isinstance(info.value.reset_time, datetime)


async def test_rate_limit_carries_the_reset_from_retry_after(model_server) -> None:
    model_server.script("rl", [Turn(fault=Fault.http(429, retry_after=30))])
    with pytest.raises(bedrock.RateLimitError) as info:
        await events_of(make(model_server, "rl"))
    wait = (info.value.reset_time - datetime.now(UTC)).total_seconds()
    assert 25 < wait <= 31


@pytest.mark.parametrize(
    ("fault", "cls"),
    [
        (Fault.http(500), bedrock.ServerError),
        (Fault.http(503, "overloaded"), bedrock.ServerError),
        (bedrock_fault("ModelTimeoutException"), bedrock.ServerError),
        (bedrock_fault("ModelNotReadyException"), bedrock.ServerError),
        (bedrock_fault("ModelErrorException"), bedrock.ServerError),
        (Fault(kind="midstream", error="server", after_chunks=0), bedrock.ServerError),
        (Fault(kind="midstream", error="rate_limit", after_chunks=0), bedrock.RateLimitError),
        (Fault(kind="drop", after_chunks=1), errors.ServerError),
        (Fault(kind="malformed", after_chunks=1), errors.MalformedResponseError),
    ],
    ids=[
        "500",
        "503",
        "model-timeout",
        "not-ready",
        "model-error",
        "midstream",
        "midstream-throttled",
        "drop",
        "malformed",
    ],
)
async def test_transient_failures_are_typed_and_retried(model_server, fault, cls) -> None:
    model_server.script("flaky", [Turn(text="x y", fault=fault), Turn(text="recovered")])
    llm = fast_retries(make(model_server, "flaky", retries=1))
    events = await events_of(llm)
    retrying = [e for e in events if isinstance(e, Retrying)]
    assert len(retrying) == 1 and isinstance(retrying[0].error, cls)
    assert events[-1].result.result == "recovered"
    assert len(generations(model_server, "flaky")) == 2  # botocore retried nothing itself


async def test_a_stream_without_message_stop_is_incomplete(model_server) -> None:
    model_server.script("cut", [Turn(text="a b c", chunks=3, fault=Fault(kind="truncate"))])
    with pytest.raises(errors.IncompleteResponseError):
        # not retried: the caller already has part of the answer
        await events_of(make(model_server, "cut", retries=2))
    assert len(generations(model_server, "cut")) == 1


async def test_exhausted_retries_return_a_failed_result(model_server) -> None:
    model_server.script("down", [Turn(fault=Fault.http(500))], repeat=True)
    llm = fast_retries(make(model_server, "down", retries=1))
    result = await llm.aprompt("hi")
    assert result.success is False and result.returncode == -1 and result.result == ""
    assert isinstance(result.error, bedrock.ServerError)


async def test_a_refused_connection_is_a_server_error() -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    llm = bedrock.BedrockLLM(
        MODEL, retries=0, client_kwargs={"endpoint_url": f"http://127.0.0.1:{port}"}
    )
    MADE.append(llm)
    result = await llm.aprompt("hi")
    assert result.success is False
    assert isinstance(result.error, bedrock.ServerError)
    assert "Could not connect" in result.error.raw_message


async def test_stalled_stream_hits_the_idle_deadline(model_server) -> None:
    model_server.script("stall", [Turn(text="a b", fault=Fault(kind="stall", after_chunks=1))])
    llm = make(model_server, "stall", idle_timeout_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(errors.StallError):
        await events_of(llm)
    assert time.monotonic() - started < 5


async def test_max_tokens_is_max_output_tokens_with_partial_text(model_server) -> None:
    model_server.script("len", [Turn(text="cut off here", stop="max_tokens")])
    with pytest.raises(bedrock.MaxOutputTokensError) as info:
        await make(model_server, "len").aprompt("hi")
    assert info.value.partial_text == "cut off here"


async def test_a_guardrail_block_is_content_blocked_not_an_answer(model_server) -> None:
    model_server.script("guard", [Turn(block_reason="SAFETY")], repeat=True)
    with pytest.raises(errors.ContentBlockedError) as info:
        await make(model_server, "guard", retries=2).aprompt("hi")
    assert info.value.block_reason == "guardrail_intervened"
    assert "cannot answer" in info.value.raw_message
    assert len(generations(model_server, "guard")) == 1


async def test_missing_credentials_are_an_authentication_error(model_server, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    model_server.script("nocreds", [Turn(text="never")])
    with pytest.raises(bedrock.AuthenticationError, match="credentials"):
        await make(model_server, "nocreds").aprompt("hi")
    assert generations(model_server, "nocreds") == []


def test_classification_of_sdk_exceptions() -> None:
    from botocore.exceptions import ClientError, NoRegionError, ReadTimeoutError

    def client_error(code: str, status: int, message: str) -> ClientError:
        return ClientError(
            {
                "Error": {"Code": code, "Message": message},
                "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}},
            },
            "ConverseStream",
        )

    classify = bedrock.classify_bedrock_error
    assert isinstance(
        classify(client_error("ExpiredTokenException", 403, "expired"), "n"),
        bedrock.AuthenticationError,
    )
    assert isinstance(
        classify(
            client_error("ValidationException", 400, "prompt is too long: 210000 tokens"), "n"
        ),
        bedrock.ContextLengthExceededError,
    )
    assert isinstance(classify(client_error("Weird", 502, "bad gateway"), "n"), bedrock.ServerError)
    assert isinstance(
        classify(client_error("Weird", 302, "moved"), "n"), bedrock.UnknownBedrockError
    )
    assert isinstance(classify(NoRegionError(), "n"), bedrock.InvalidRequestError)
    assert isinstance(classify(ReadTimeoutError(endpoint_url="http://x"), "n"), bedrock.ServerError)
    assert isinstance(classify(RuntimeError("bug"), "n"), bedrock.UnknownBedrockError)


# -- the client -------------------------------------------------------------------------------


async def test_one_client_per_loop_with_a_pool_sized_for_the_concurrency(model_server) -> None:
    model_server.script("wide", [Turn(text="ok", latency=0.5)], repeat=True)
    llm = make(model_server, "wide")
    await llm.aprompt("warm up")  # opening the client loads botocore's service model
    started = time.monotonic()
    results = await asyncio.gather(*(llm.aprompt("hi") for _ in range(30)))
    elapsed = time.monotonic() - started
    assert all(r.result == "ok" for r in results)
    # botocore's default pool (10 connections) would need three rounds of 0.5 s
    assert elapsed < 1.4, elapsed
    slot = llm._clients.peek()
    assert slot is not None and (await slot.get()) is (await (await llm._clients.get()).get())
    assert (await slot.get()).meta.config.retries["total_max_attempts"] == 1


def test_reference_signature_and_defaults() -> None:
    parameters = inspect.signature(bedrock.BedrockLLM).parameters
    assert list(parameters)[:11] == [
        "model",
        "system_message",
        "timeout_seconds",
        "retries",
        "logging_name",
        "logging_level",
        "log_dir",
        "region",
        "max_tokens",
        "max_tool_iterations",
        "client_kwargs",
    ]
    llm = bedrock.BedrockLLM(MODEL)
    assert llm.logging_name == "bedrock_llm" and llm.max_tokens == 16000
    assert llm.max_tool_iterations == 100 and llm.region == "us-east-1"
    assert bedrock.BedrockLLM.ray_resource == "bedrock"
    assert bedrock.BedrockLLM(MODEL, region="eu-west-1").region == "eu-west-1"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_tokens": 0}, ValueError),
        ({"max_tool_iterations": 0}, ValueError),
        ({"max_connections": 0}, ValueError),
        ({"client_kwargs": "endpoint"}, TypeError),
    ],
)
def test_bad_arguments_are_refused(kwargs, error) -> None:
    with pytest.raises(error):
        bedrock.BedrockLLM(MODEL, **kwargs)
    with pytest.raises(ValueError):
        bedrock.BedrockLLM("")


def test_sync_prompt_and_pickling_without_clients_or_secrets(model_server) -> None:
    model_server.script("s", [Turn(text="one"), Turn(text="two")])
    llm = make(
        model_server,
        "s",
        client_kwargs={"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY},
    )
    assert llm.prompt("hi").result == "one"
    copy = pickle.loads(pickle.dumps(llm))
    assert copy.prompt("hi").result == "two"
    assert SECRET_KEY not in repr(copy) and SECRET_KEY not in repr(llm)


def test_sdks_load_lazily_and_a_missing_one_names_its_extra() -> None:
    import subprocess
    import sys

    code = """
import asyncio, sys
import chia_async.backends.bedrock as bedrock, chia_async.backends.vertex as vertex
heavy = ('aioboto3', 'botocore', 'google.genai', 'openai', 'aiohttp')
print(sorted(m for m in heavy if m in sys.modules))
sys.modules['aioboto3'] = sys.modules['google.genai'] = None  # as if not installed
for llm in (bedrock.BedrockLLM('m', region='us-east-1'), vertex.VertexGeminiLLM('m', project='p')):
    try:
        asyncio.run(llm.aprompt('hi'))
    except Exception as exc:
        print(exc)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert out[0] == "[]"
    assert "pip install 'chia-async[bedrock]'" in out[1]
    assert "pip install 'chia-async[vertex]'" in out[2]
