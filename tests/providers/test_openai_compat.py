"""OpenAICompatLLM and its presets: the real openai SDK against the scripted server, tools
through a real MCP server."""

from __future__ import annotations

import dataclasses
import inspect
import time
from datetime import UTC, datetime

import pytest

from chia_async import errors, sync
from chia_async.backends import ollama, openai_compat, openai_providers, vertex, vllm
from chia_async.events import (
    Retrying,
    StepFinished,
    TextDelta,
    ToolCallFinished,
    ToolResult,
)
from chia_async.loop.runner import parse_arguments
from chia_async.testing import Fault, ParsedRequest, ToolCall, Turn
from chia_async.tools import ChiaTool


def make(server, script: str, **kwargs) -> openai_compat.OpenAICompatLLM:
    kwargs.setdefault("retries", 0)
    return openai_compat.OpenAICompatLLM(
        "gpt-test", base_url=server.base_url(script) + "/v1", api_key="sk-test-0000", **kwargs
    )


async def events_of(llm, message="hi", tools=None) -> list:
    async with llm.stream(message, tools) as stream:
        return [e async for e in stream]


async def test_text_turn_streams(model_server) -> None:
    model_server.script("t", [Turn(text="hello there friend", chunks=3)])
    llm = make(model_server, "t", system_message="be brief")
    events = await events_of(llm)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["hello ", "there ", "friend"]
    result = events[-1].result
    assert result.success and result.result == "hello there friend" and result.returncode == 0
    assert result.stop_reason == "stop"
    assert result.usage.input_tokens == 10 and result.usage.output_tokens == 5
    request = next(r for r in model_server.requests("t") if r.parsed)
    assert request.body["stream"] is True and request.body["stream_options"]["include_usage"]
    assert request.parsed.system == "be brief"


async def test_tool_loop_through_a_real_mcp_server(model_server, mcp_server) -> None:
    def turn(request):
        if request.tool_results:
            return Turn(text=f"sum={request.tool_results[0].output}")
        add = next(n for n in request.tool_names if n.endswith("add"))
        echo = next(n for n in request.tool_names if n.endswith("echo"))
        return Turn(
            tool_calls=[
                ToolCall(name=add, arguments={"a": 2, "b": 3}),
                ToolCall(name=echo, arguments={"text": "hi"}),
            ]
        )

    model_server.script("tools", turn)
    llm = make(model_server, "tools")
    events = await events_of(llm, "add", [ChiaTool.http(mcp_server.url, name="mock")])
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [e.arguments for e in finished] == [{"a": 2, "b": 3}, {"text": "hi"}]
    assert [r.output for r in results] == ["5", "hi"]
    assert all(r.executed_by == "host" and not r.is_error for r in results)
    assert sorted(c.tool for c in mcp_server.calls) == ["add", "echo"]
    steps = [e for e in events if isinstance(e, StepFinished)]
    assert [s.finish_reason for s in steps] == ["tool_calls", "stop"]
    result = events[-1].result
    assert result.result == "sum=5"
    second = [r for r in model_server.requests("tools") if r.parsed][-1]
    roles = [m["role"] for m in second.body["messages"]]
    assert roles == ["user", "assistant", "tool", "tool"]


async def test_unknown_tool_and_bad_arguments_go_back_to_the_model(model_server, mcp_server):
    def turn(request):
        if request.tool_results:
            return Turn(text="recovered: " + " | ".join(r.output for r in request.tool_results))
        add = next(n for n in request.tool_names if n.endswith("add"))
        return Turn(
            tool_calls=[
                ToolCall(name="no_such_tool", arguments={}),
                ToolCall(name=add, arguments='{"a": 1,'),
            ]
        )

    model_server.script("bad", turn)
    llm = make(model_server, "bad")
    result = await llm.aprompt("go", [ChiaTool.http(mcp_server.url, name="mock")])
    assert result.success
    assert "no tool named 'no_such_tool'" in result.result
    assert "not valid JSON" in result.result
    assert mcp_server.calls == []


async def test_max_tool_iterations_ends_with_a_clear_stop_reason(model_server, mcp_server):
    def turn(request):
        add = next(n for n in request.tool_names if n.endswith("add"))
        return Turn(tool_calls=[ToolCall(name=add, arguments={"a": 1, "b": 1})])

    model_server.script("loop", turn)
    llm = make(model_server, "loop", max_tool_iterations=3)
    result = await llm.aprompt("go", [ChiaTool.http(mcp_server.url, name="mock")])
    assert result.stop_reason == "max_tool_iterations"
    assert len(mcp_server.calls) == 3


@pytest.mark.parametrize(
    ("fault", "cls"),
    [
        (Fault.http(401), openai_compat.AuthenticationError),
        (Fault.http(429, "billing"), openai_compat.BillingError),
        (Fault.http(402), openai_compat.BillingError),
        (Fault.http(400), openai_compat.InvalidRequestError),
        (Fault.http(404), openai_compat.InvalidRequestError),
        (Fault.http(400, "context_length"), openai_compat.ContextLengthExceededError),
        (
            Fault(kind="midstream", error="context_length", after_chunks=1),
            openai_compat.ContextLengthExceededError,
        ),
    ],
    ids=["401", "quota", "402", "400", "404", "context", "midstream-context"],
)
async def test_errors_that_retrying_cannot_fix_are_raised(model_server, fault, cls) -> None:
    model_server.script("e", [Turn(text="partial answer", fault=fault)], repeat=True)
    llm = make(model_server, "e", retries=2)
    with pytest.raises(cls) as info:
        await llm.aprompt("hi")
    assert "sk-test-0000" not in repr(info.value)
    assert len([r for r in model_server.requests("e") if r.parsed]) == 1  # never retried


async def test_rate_limit_carries_the_reset_from_headers(model_server) -> None:
    model_server.script("rl", [Turn(fault=Fault.http(429, retry_after=30))])
    llm = make(model_server, "rl")
    with pytest.raises(openai_compat.RateLimitError) as info:
        await events_of(llm)
    wait = (info.value.reset_time - datetime.now(UTC)).total_seconds()
    assert 25 < wait <= 31
    assert info.value.status_code == 429


@pytest.mark.parametrize(
    ("fault", "cls"),
    [
        (Fault.http(500), openai_compat.ServerError),
        (Fault.http(503, "overloaded"), openai_compat.ServerError),
        (Fault(kind="drop", after_chunks=1), errors.ServerError),
        (Fault(kind="malformed", after_chunks=1), errors.ServerError),
        (Fault(kind="midstream", error="server", after_chunks=0), errors.ServerError),
    ],
    ids=["500", "503", "drop", "malformed", "midstream"],
)
async def test_transient_failures_are_typed_and_retried(model_server, fault, cls) -> None:
    model_server.script("flaky", [Turn(text="x y", fault=fault), Turn(text="recovered")])
    llm = make(model_server, "flaky", retries=1)
    llm.retry_policy = dataclasses.replace(llm.retry_policy, initial_backoff=0.0)
    events = await events_of(llm)
    retrying = [e for e in events if isinstance(e, Retrying)]
    assert len(retrying) == 1 and isinstance(retrying[0].error, cls)
    assert events[-1].result.result == "recovered"


async def test_a_stream_cut_before_its_finish_reason_is_incomplete(model_server) -> None:
    model_server.script(
        "cut", [Turn(text="a b c", chunks=3, fault=Fault(kind="drop", after_chunks=2))]
    )
    with pytest.raises(errors.ServerError):
        await events_of(make(model_server, "cut"))


async def test_stalled_stream_hits_the_idle_deadline(model_server) -> None:
    model_server.script("stall", [Turn(text="a b", fault=Fault(kind="stall", after_chunks=1))])
    llm = make(model_server, "stall", idle_timeout_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(errors.StallError):
        await events_of(llm)
    assert time.monotonic() - started < 5


async def test_length_is_max_output_tokens_with_partial_text(model_server) -> None:
    model_server.script("len", [Turn(text="cut off here", stop="max_tokens")])
    with pytest.raises(openai_compat.MaxOutputTokensError) as info:
        await make(model_server, "len").aprompt("hi")
    assert info.value.partial_text == "cut off here"


async def test_exhausted_retries_return_a_failed_result(model_server) -> None:
    model_server.script("down", [Turn(fault=Fault.http(500))], repeat=True)
    llm = make(model_server, "down", retries=1)
    llm.retry_policy = dataclasses.replace(llm.retry_policy, initial_backoff=0.0)
    result = await llm.aprompt("hi")
    assert result.success is False and result.returncode == -1 and result.result == ""
    assert isinstance(result.error, openai_compat.ServerError)


async def test_token_provider_is_called_for_each_request(model_server) -> None:
    calls = []

    def provider() -> str:
        calls.append(1)
        return f"token-{len(calls)}-abcdefgh"

    model_server.script("tok", [Turn(text="a"), Turn(text="b")])
    llm = openai_compat.OpenAICompatLLM(
        "gpt-test", base_url=model_server.base_url("tok") + "/v1", token_provider=provider
    )
    await llm.aprompt("one")
    await llm.aprompt("two")
    auth = [r.headers.get("authorization") for r in model_server.requests("tok") if r.parsed]
    assert auth == ["Bearer token-1-abcdefgh", "Bearer token-2-abcdefgh"]


def test_sync_prompt_works_too(model_server) -> None:
    model_server.script("s", [Turn(text="sync ok")])
    assert make(model_server, "s").prompt("hi").result == "sync ok"


def test_parse_arguments_accepts_strings_and_objects() -> None:
    assert parse_arguments('{"a": 1}') == ({"a": 1}, '{"a": 1}', None)
    assert parse_arguments({"a": 1})[0] == {"a": 1}
    assert parse_arguments("")[0] == {}
    assert parse_arguments("[1]")[2] is not None
    assert parse_arguments("{oops")[2] is not None


# -- presets ------------------------------------------------------------------------------


def test_reference_signature() -> None:
    names = list(inspect.signature(openai_compat.OpenAICompatLLM).parameters)
    assert names[:13] == [
        "model",
        "system_message",
        "timeout_seconds",
        "retries",
        "logging_name",
        "logging_level",
        "log_dir",
        "base_url",
        "api_key",
        "token_provider",
        "max_tokens",
        "max_tool_iterations",
        "client_kwargs",
    ]


@pytest.mark.parametrize(
    ("cls", "base_url", "logging_name", "resource"),
    [
        (openai_providers.OpenAILLM, None, "openai_llm", "openai"),
        (
            openai_providers.FireworksLLM,
            "https://api.fireworks.ai/inference/v1",
            "fireworks_llm",
            "fireworks",
        ),
        (openai_providers.GroqLLM, "https://api.groq.com/openai/v1", "groq_llm", "groq"),
        (
            openai_providers.OpenRouterLLM,
            "https://openrouter.ai/api/v1",
            "openrouter_llm",
            "openrouter",
        ),
        (ollama.OllamaLLM, "http://localhost:11434/v1", "ollama_llm", "ollama"),
        (vllm.VLLMLLM, "http://localhost:8200/v1", "vllm_llm", "vllm"),
    ],
)
def test_presets(cls, base_url, logging_name, resource) -> None:
    llm = cls("some-model")
    assert llm.base_url == base_url
    assert llm.logging_name == logging_name
    assert cls.ray_resource == resource
    assert isinstance(llm, openai_compat.OpenAICompatLLM)
    with pytest.raises(TypeError, match="no_such_option"):
        cls("m", no_such_option=1)


def test_dummy_keys_for_self_hosted_servers() -> None:
    assert ollama.OllamaLLM("m").api_key == "ollama"
    assert vllm.VLLMLLM("m").api_key == "vllm"


def test_vertex_maas_endpoint_and_lazy_token(monkeypatch) -> None:
    llm = vertex.VertexGenericLLM(
        "meta/llama-3.1-8b-instruct-maas", project="p", location="us-east5"
    )
    assert llm.base_url == (
        "https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/us-east5/endpoints/openapi"
    )
    assert llm.token_provider is not None  # ADC, looked up only when a request is made
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.delenv("GOOGLE_CLOUD_LOCATION", raising=False)
    with pytest.raises(ValueError, match="project and location"):
        vertex.VertexGenericLLM("m")


async def test_vertex_maas_against_the_scripted_server(model_server) -> None:
    model_server.script("maas", [Turn(text="from maas")])
    llm = vertex.VertexGenericLLM(
        "meta/llama",
        base_url=model_server.base_url("maas") + "/v1",
        token_provider=lambda: "ya29.fake-token-value",
    )
    assert (await llm.aprompt("hi")).result == "from maas"


def test_llm_objects_pickle_without_clients(model_server) -> None:
    import pickle

    model_server.script("p", [Turn(text="one"), Turn(text="two")])
    llm = make(model_server, "p")
    assert llm.prompt("hi").result == "one"
    copy = pickle.loads(pickle.dumps(llm))
    assert copy.prompt("hi").result == "two"
    assert "sk-test-0000" not in repr(copy)


def test_sync_calls_hold_their_mcp_session_too(model_server) -> None:
    from tests.loop.mcp_test_server import build_server

    server, state = build_server()
    tool = ChiaTool.in_process(server, name="mem")

    def turn(request: ParsedRequest) -> Turn:
        if request.tool_results:
            return Turn(text=request.tool_results[0].output)
        return Turn(tool_calls=[ToolCall(name="mem__add", arguments={"a": 2, "b": 5})])

    model_server.script("s", turn, repeat=True)
    llm = make(model_server, "s")
    assert llm.prompt("add", [tool]).result == "7"
    assert llm.prompt("add", [tool]).result == "7"
    assert state.methods["tools/list"] == 1
    sync.run(llm.aclose())  # the held session lives on the facade's loop: close it there


def test_an_unpickled_object_masks_its_key_in_the_new_process() -> None:
    import base64
    import pickle
    import subprocess
    import sys

    llm = openai_compat.OpenAICompatLLM("m", api_key="zq9shippedtoaworker123456")
    shipped = base64.b64encode(pickle.dumps(llm)).decode()
    code = (
        "import base64, pickle, sys\n"
        "from chia_async.redaction import redact\n"
        "pickle.loads(base64.b64decode(sys.argv[1]))\n"
        "print(redact('plain zq9shippedtoaworker123456 here'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, shipped], capture_output=True, text=True, check=True
    )
    assert "zq9shippedtoaworker123456" not in out.stdout and "plain" in out.stdout
