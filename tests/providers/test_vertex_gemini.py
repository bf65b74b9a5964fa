"""VertexGeminiLLM: the real google-genai async client in Vertex mode against the scripted
server, tools through a real MCP server. Credentials are a fixed token that never refreshes;
Application Default Credentials, metadata servers and Google's endpoints are never reached."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import pickle
import time
from datetime import UTC, datetime
from typing import Annotated, Literal

import google.oauth2.credentials
import pytest
from pydantic import BaseModel, Field

from chia_async import errors
from chia_async.backends import vertex
from chia_async.events import (
    ReasoningDelta,
    Retrying,
    StepFinished,
    TextDelta,
    ToolCallFinished,
    ToolResult,
)
from chia_async.loop.schema import ToolSpec, compile_tools
from chia_async.testing import Fault, ToolCall, Turn
from chia_async.testing.protocols.gemini import GeminiProtocol
from chia_async.tools import ChiaTool

pytestmark = [
    pytest.mark.timeout(60),
    # google-genai subclasses aiohttp.ClientSession for its default async transport, which
    # aiohttp reports on every session; it is the SDK's business, not a failure here.
    pytest.mark.filterwarnings(
        "ignore:Inheritance class AiohttpClientSession from ClientSession:DeprecationWarning"
    ),
]

MODEL = "gemini-2.5-flash"
PREFIX = "/v1beta1/projects/test-project/locations/us-central1/publishers/google/models/"
TOKEN = "ya29.chia-test-token-0000"


@pytest.fixture(autouse=True)
def offline_google(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing may steer the SDK towards ADC, a metadata server or a real key.
    for name in (
        "GOOGLE_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_CLOUD_LOCATION",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "GOOGLE_GENAI_USE_ENTERPRISE",
        "GOOGLE_GENAI_API_VERSION",
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_VERTEX_BASE_URL",
        "GOOGLE_API_USE_CLIENT_CERTIFICATE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/adc.json")
    monkeypatch.setenv("NO_GCE_CHECK", "true")


MADE: list[vertex.VertexGeminiLLM] = []


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


def make(server, script: str, **kwargs) -> vertex.VertexGeminiLLM:
    kwargs.setdefault("retries", 0)
    client_kwargs = {
        # a token without expiry is never refreshed, so no OAuth endpoint is contacted
        "credentials": google.oauth2.credentials.Credentials(token=TOKEN),
        "http_options": {"base_url": server.base_url(script)},
        **kwargs.pop("client_kwargs", {}),
    }
    llm = vertex.VertexGeminiLLM(
        MODEL,
        project="test-project",
        location="us-central1",
        client_kwargs=client_kwargs,
        **kwargs,
    )
    MADE.append(llm)
    return llm


async def events_of(llm, message="hi", tools=None) -> list:
    async with llm.stream(message, tools) as stream:
        return [e async for e in stream]


async def closing(llm: vertex.VertexGeminiLLM, message: str, tools: list[ChiaTool]) -> list:
    """The events of one call, with the LLM closed before the MCP server goes away."""
    async with llm:
        return await events_of(llm, message, tools)


def generations(server, script: str) -> list:
    return [r for r in server.requests(script) if r.parsed]


def fast_retries(llm: vertex.VertexGeminiLLM) -> vertex.VertexGeminiLLM:
    llm.retry_policy = dataclasses.replace(llm.retry_policy, initial_backoff=0.0)
    return llm


# -- turns ----------------------------------------------------------------------------------


async def test_text_turn_streams(model_server) -> None:
    model_server.script(
        "t", [Turn(text="hello there friend", reasoning="hmm", chunks=3, input_tokens=12)]
    )
    llm = make(model_server, "t", system_message="be brief", max_tokens=321)
    events = await events_of(llm)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["hello ", "there ", "friend"]
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "hmm"
    result = events[-1].result
    assert result.success and result.result == "hello there friend" and result.returncode == 0
    assert result.stop_reason == "STOP"
    assert result.usage.input_tokens == 12 and result.usage.output_tokens == 5  # the last total
    (request,) = generations(model_server, "t")
    assert request.path == f"{PREFIX}{MODEL}:streamGenerateContent"
    assert request.query == "alt=sse"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.body["systemInstruction"]["parts"] == [{"text": "be brief"}]
    assert request.body["generationConfig"] == {"maxOutputTokens": 321}
    assert request.body["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
    assert "tools" not in request.body


async def test_tool_loop_through_a_real_mcp_server(model_server, mcp_server) -> None:
    def turn(request):
        if request.tool_results:
            return Turn(text="got " + ",".join(r.output for r in request.tool_results))
        add = next(n for n in request.tool_names if n.endswith("add"))
        echo = next(n for n in request.tool_names if n.endswith("echo"))
        return Turn(
            reasoning="two tools",  # a thinking model signs its first call
            text="calling",
            tool_calls=[
                ToolCall(name=add, arguments={"a": 2, "b": 3}),
                ToolCall(name=echo, arguments={"text": "hi"}, id="echo-1"),
            ],
        )

    model_server.script("tools", turn)
    events = await closing(
        make(model_server, "tools"), "go", [ChiaTool.http(mcp_server.url, name="mock")]
    )
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [e.arguments for e in finished] == [{"a": 2, "b": 3}, {"text": "hi"}]
    assert finished[1].call_id == "echo-1"
    assert [r.output for r in results] == ["5", "hi"]
    assert all(r.executed_by == "host" and not r.is_error for r in results)
    assert sorted(c.tool for c in mcp_server.calls) == ["add", "echo"]
    assert [s.finish_reason for s in events if isinstance(s, StepFinished)] == ["STOP", "STOP"]
    assert events[-1].result.result == "got 5,hi"

    first, second = generations(model_server, "tools")
    (declarations,) = [t["functionDeclarations"] for t in first.body["tools"]]
    add_declaration = next(d for d in declarations if d["name"].endswith("add"))
    assert add_declaration["parameters"] == {
        "type": "OBJECT",
        "properties": {"a": {"type": "INTEGER"}, "b": {"type": "INTEGER"}},
        "required": ["a", "b"],
    }
    contents = second.body["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    model_parts = contents[1]["parts"]
    calls = [p for p in model_parts if "functionCall" in p]
    assert [c["functionCall"]["args"] for c in calls] == [{"a": 2, "b": 3}, {"text": "hi"}]
    assert calls[0]["thoughtSignature"]  # sent back verbatim
    assert {"text": "calling"} in model_parts  # streamed text joined into one part
    responses = [p["functionResponse"] for p in contents[2]["parts"]]
    assert [(r["name"], r.get("id"), r["response"]) for r in responses] == [
        (calls[0]["functionCall"]["name"], None, {"output": "5"}),
        (calls[1]["functionCall"]["name"], "echo-1", {"output": "hi"}),
    ]


async def test_tool_errors_go_back_to_the_model(model_server, mcp_server) -> None:
    def turn(request):
        if request.tool_results:
            return Turn(text=" | ".join(r.output for r in request.tool_results))
        return Turn(tool_calls=[ToolCall(name="no_such_tool", arguments={"x": 1})])

    model_server.script("bad", turn)
    events = await closing(make(model_server, "bad"), "go", [ChiaTool.http(mcp_server.url)])
    assert "no tool named 'no_such_tool'" in events[-1].result.result
    (response,) = generations(model_server, "bad")[-1].body["contents"][2]["parts"]
    assert "error" in response["functionResponse"]["response"]


class Point(BaseModel):
    x: int
    y: int


Mode = (
    Annotated[Literal["fast"], Field(description="quick")]
    | Annotated[Literal["slow"], Field(description="careful")]
)


def plot_server():
    from mcp.server import MCPServer

    server = MCPServer("plotter", log_level="WARNING")

    @server.tool(description="Plot a point.")
    def plot(
        point: Point,
        mode: Mode,
        label: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        return f"{point.x},{point.y} {mode} {label}"

    return server


async def test_a_schema_gemini_would_reject_is_compiled_into_one_it_accepts(model_server):
    from google.genai import types

    server = plot_server()
    (tool,) = await server.list_tools()
    raw = tool.input_schema
    # what pydantic (and so MCPServer) produces: everything Gemini refuses
    assert "$defs" in raw and raw["properties"]["point"] == {"$ref": "#/$defs/Point"}
    assert [v.get("const") for v in raw["properties"]["mode"]["anyOf"]] == ["fast", "slow"]
    assert {"type": "null"} in raw["properties"]["label"]["anyOf"]
    assert "additionalProperties" in raw["properties"]["tags"]["anyOf"][0]
    refused = {"tools": [{"functionDeclarations": [{"name": "plot", "parameters": raw}]}]}
    with pytest.raises(ValueError, match='Unknown name "\\$defs"'):
        GeminiProtocol().parse("POST", f"{PREFIX}{MODEL}:generateContent", "", refused)

    def turn(request):
        if request.tool_results:
            return Turn(text=request.tool_results[0].output)
        (name,) = request.tool_names
        point = {"x": 1, "y": 2}
        return Turn(tool_calls=[ToolCall(name=name, arguments={"point": point, "mode": "slow"})])

    model_server.script("schema", turn)
    events = await closing(
        make(model_server, "schema"), "plot", [ChiaTool.in_process(server, name="plotter")]
    )
    assert events[-1].result.result == "1,2 slow None"  # the scripted server accepted it
    (declaration,) = generations(model_server, "schema")[0].body["tools"][0]["functionDeclarations"]
    parameters = declaration["parameters"]
    assert parameters["properties"]["point"] == {
        "type": "OBJECT",
        "properties": {"x": {"type": "INTEGER"}, "y": {"type": "INTEGER"}},
        "required": ["x", "y"],
    }
    assert parameters["properties"]["mode"]["enum"] == ["fast", "slow"]
    assert parameters["properties"]["label"] == {"type": "STRING", "nullable": True}
    assert "tags" not in parameters["properties"]  # a free-form map has no Gemini form
    assert parameters["required"] == ["point", "mode"]
    # and the SDK's own Schema model (extra fields forbidden) takes it as it is
    types.FunctionDeclaration.model_validate(declaration)
    for spec_key in ("$ref", "$defs", "additionalProperties", "const", "anyOf"):
        assert spec_key not in str(parameters)


def test_the_gemini_dialect_folds_unions_and_drops_what_it_cannot_say() -> None:
    spec = ToolSpec(
        server="s",
        name="t",
        description="d",
        input_schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "n": {"type": ["integer", "null"], "exclusiveMinimum": 0},
                "kind": {"oneOf": [{"const": "a"}, {"const": "b"}, {"type": "null"}]},
            },
            "required": ["n"],
        },
    )
    (declaration,) = compile_tools([spec], "gemini").declarations
    assert declaration["parameters"]["properties"] == {
        "n": {"type": "INTEGER", "minimum": 1, "nullable": True},  # exclusive 0 → 1
        "kind": {"type": "STRING", "enum": ["a", "b"], "nullable": True},
    }


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "cls"),
    [
        (Fault.http(401), vertex.AuthenticationError),
        (Fault.http(403), vertex.AuthenticationError),
        (Fault.http(400), vertex.InvalidRequestError),
        (Fault.http(404), vertex.InvalidRequestError),
        (Fault.http(400, "context_length"), vertex.ContextLengthExceededError),
        (
            Fault(kind="midstream", error="context_length", after_chunks=1),
            vertex.ContextLengthExceededError,
        ),
    ],
    ids=["401", "403", "400", "404", "context", "midstream-context"],
)
async def test_errors_that_retrying_cannot_fix_are_raised(model_server, fault, cls) -> None:
    model_server.script("e", [Turn(text="partial answer", fault=fault)], repeat=True)
    llm = make(model_server, "e", retries=2)
    with pytest.raises(cls) as info:
        await llm.aprompt("hi")
    assert TOKEN not in repr(info.value) and TOKEN not in str(info.value)
    assert len(generations(model_server, "e")) == 1  # never retried, by us or by the SDK


async def test_rate_limit_reset_comes_from_retry_info(model_server) -> None:
    body = {
        "error": {
            "code": 429,
            "message": "Resource exhausted. Please try again later.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}],
        }
    }
    model_server.script("rl", [Turn(fault=Fault.http(429, body=body))])
    with pytest.raises(vertex.RateLimitError) as info:
        await events_of(make(model_server, "rl"))
    wait = (info.value.reset_time - datetime.now(UTC)).total_seconds()
    assert 28 < wait <= 30
    assert info.value.status_code == 429


async def test_retry_info_is_honoured_before_the_retry(model_server) -> None:
    model_server.script("wait", [Turn(fault=Fault.http(429, retry_after=0.4)), Turn(text="ok")])
    llm = fast_retries(make(model_server, "wait", retries=1))
    events = await events_of(llm)
    (retrying,) = [e for e in events if isinstance(e, Retrying)]
    assert isinstance(retrying.error, vertex.RateLimitError)
    assert retrying.delay >= 0.35
    first, second = generations(model_server, "wait")
    assert second.received_at - first.received_at >= 0.35
    assert events[-1].result.result == "ok"


@pytest.mark.parametrize(
    ("fault", "cls"),
    [
        (Fault.http(500), vertex.ServerError),
        (Fault.http(503, "overloaded"), vertex.ServerError),
        (Fault(kind="midstream", error="server", after_chunks=0), vertex.ServerError),
        (Fault(kind="drop", after_chunks=0), errors.ServerError),
        (Fault(kind="malformed", after_chunks=0), errors.MalformedResponseError),
        (Fault(kind="truncate"), errors.IncompleteResponseError),
    ],
    ids=["500", "503", "midstream", "drop", "malformed", "truncate"],
)
async def test_transient_failures_are_typed_and_retried(model_server, fault, cls) -> None:
    model_server.script("flaky", [Turn(fault=fault), Turn(text="recovered")])
    llm = fast_retries(make(model_server, "flaky", retries=1))
    events = await events_of(llm)
    retrying = [e for e in events if isinstance(e, Retrying)]
    assert len(retrying) == 1 and isinstance(retrying[0].error, cls)
    assert events[-1].result.result == "recovered"
    assert len(generations(model_server, "flaky")) == 2  # the SDK retried nothing itself


async def test_a_stream_cut_after_content_is_raised_not_retried(model_server) -> None:
    model_server.script("cut", [Turn(text="a b c", chunks=3, fault=Fault(kind="truncate"))])
    with pytest.raises(errors.IncompleteResponseError):
        await events_of(make(model_server, "cut", retries=2))
    assert len(generations(model_server, "cut")) == 1


async def test_stalled_stream_hits_the_idle_deadline(model_server) -> None:
    model_server.script("stall", [Turn(text="a b", fault=Fault(kind="stall", after_chunks=1))])
    llm = make(model_server, "stall", idle_timeout_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(errors.StallError):
        await events_of(llm)
    assert time.monotonic() - started < 5


async def test_max_tokens_is_max_output_tokens_with_partial_text(model_server) -> None:
    model_server.script("len", [Turn(text="cut off here", stop="max_tokens")])
    with pytest.raises(vertex.MaxOutputTokensError) as info:
        await make(model_server, "len").aprompt("hi")
    assert info.value.partial_text == "cut off here"


@pytest.mark.parametrize(
    ("turn", "reason"),
    [
        (Turn(block_reason="PROHIBITED_CONTENT"), "PROHIBITED_CONTENT"),
        (Turn(text="I was about to", stop="content_filter"), "SAFETY"),
    ],
    ids=["prompt-feedback", "finish-reason"],
)
async def test_a_blocked_response_is_content_blocked_never_an_answer(
    model_server, turn, reason
) -> None:
    model_server.script("blocked", [turn], repeat=True)
    llm = make(model_server, "blocked", retries=2)
    with pytest.raises(vertex.ContentBlockedError) as info:
        await llm.aprompt("hi")
    assert info.value.block_reason == reason
    assert isinstance(info.value, errors.ContentBlockedError)
    assert len(generations(model_server, "blocked")) == 1  # never retried


def test_classification_of_sdk_exceptions() -> None:
    from google.auth import exceptions as auth_errors
    from google.genai import errors as genai_errors

    classify = vertex.classify_vertex_error
    unavailable = genai_errors.ServerError(
        503,
        {
            "error": {
                "code": 503,
                "message": "The model is overloaded.",
                "status": "UNAVAILABLE",
                "details": [{"@type": vertex._RETRY_INFO, "retryDelay": "2.5s"}],
            }
        },
    )
    error = classify(unavailable, "n")
    assert isinstance(error, vertex.ServerError) and error.retry_after == 2.5
    refresh = auth_errors.RefreshError("invalid_grant: token expired")
    assert isinstance(classify(refresh, "n"), vertex.AuthenticationError)
    adc = auth_errors.DefaultCredentialsError("no ADC")
    assert isinstance(classify(adc, "n"), vertex.AuthenticationError)
    assert isinstance(classify(ConnectionResetError(), "n"), vertex.ServerError)
    assert isinstance(classify(RuntimeError("bug"), "n"), vertex.UnknownVertexError)


# -- construction -------------------------------------------------------------------------------


def test_reference_signature_and_defaults(monkeypatch) -> None:
    parameters = inspect.signature(vertex.VertexGeminiLLM).parameters
    assert list(parameters)[:12] == [
        "model",
        "system_message",
        "timeout_seconds",
        "retries",
        "logging_name",
        "logging_level",
        "log_dir",
        "project",
        "location",
        "max_tokens",
        "max_tool_iterations",
        "client_kwargs",
    ]
    assert vertex.VertexGeminiLLM.ray_resource == "vertex"
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "env-project")
    monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", "europe-west4")
    llm = vertex.VertexGeminiLLM(MODEL)  # builds no client, reads no credentials
    assert (llm.project, llm.location) == ("env-project", "europe-west4")
    assert llm.logging_name == "vertex_gemini" and llm.max_tokens == 16000
    monkeypatch.delenv("GOOGLE_CLOUD_LOCATION")
    assert vertex.VertexGeminiLLM(MODEL).location == "global"
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT")
    with pytest.raises(ValueError, match="project"):
        vertex.VertexGeminiLLM(MODEL)
    express = vertex.VertexGeminiLLM(MODEL, client_kwargs={"api_key": "AIza-express-secret"})
    assert "AIza-express-secret" not in repr(express)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_tokens": 0}, {"max_tool_iterations": 0}, {"idle_timeout_seconds": 0}],
)
def test_bad_arguments_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        vertex.VertexGeminiLLM(MODEL, project="p", **kwargs)
    with pytest.raises(TypeError):
        vertex.VertexGeminiLLM(MODEL, project="p", client_kwargs=["x"])


async def test_missing_adc_is_an_authentication_error(model_server) -> None:
    # No credentials given: the SDK looks for ADC on the first request, and there is none.
    model_server.script("adc", [Turn(text="never")])
    llm = vertex.VertexGeminiLLM(
        MODEL,
        project="test-project",
        location="us-central1",
        retries=0,
        client_kwargs={"http_options": {"base_url": model_server.base_url("adc")}},
    )
    MADE.append(llm)
    with pytest.raises(vertex.AuthenticationError, match="Google credentials"):
        await llm.aprompt("hi")
    assert generations(model_server, "adc") == []


def test_sync_prompt_and_pickling_without_clients(model_server) -> None:
    model_server.script("s", [Turn(text="one"), Turn(text="two")])
    llm = make(model_server, "s")
    assert llm.prompt("hi").result == "one"
    copy = pickle.loads(pickle.dumps(llm))
    assert copy.prompt("hi").result == "two"
    assert TOKEN not in repr(copy)
