"""Gemini generateContent of the scripted server, checked with google-genai itself.

The renderer tests decode bodies and SSE streams with the SDK's own response reader and
error classes; the end-to-end tests drive the real ``google.genai.Client`` in both Vertex AI
and Gemini API modes against the server on loopback. Nothing here reaches the network.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import google.oauth2.credentials
import httpx2
import pytest
from google import genai
from google.genai import _api_client, errors, types
from google.genai import models as genai_models

from chia_async.testing.protocols.base import BodyReply, StreamReply
from chia_async.testing.protocols.gemini import GeminiProtocol
from chia_async.testing.script import Fault, ParsedRequest, ToolCall, ToolResultSeen, Turn

pytestmark = [
    pytest.mark.timeout(60),
    # google-genai subclasses aiohttp.ClientSession for its default async transport, which
    # aiohttp reports on every session; it is the SDK's business, not a failure here.
    pytest.mark.filterwarnings(
        "ignore:Inheritance class AiohttpClientSession from ClientSession:DeprecationWarning"
    ),
]

MODEL = "gemini-2.5-flash"
VERTEX_PREFIX = "/v1beta1/projects/test-project/locations/us-central1/publishers/google/models/"


def _request(*, stream: bool) -> ParsedRequest:
    return ParsedRequest(protocol="gemini", model=MODEL, stream=stream)


def _response(doc: Any) -> types.GenerateContentResponse:
    """Build the SDK object from a wire document the way the SDK does after a request."""
    return types.GenerateContentResponse._from_response(
        response=genai_models._GenerateContentResponse_from_mldev(doc), kwargs={}
    )


def _segments(data: bytes) -> list[Any]:
    """Split an SSE body with the SDK's own stream reader."""
    raw = httpx2.Response(200, content=data)
    return list(_api_client.HttpResponse(dict(raw.headers), raw).segments())


def _raise_like_sdk(status: int, body: bytes) -> None:
    errors.APIError.raise_error(status, json.loads(body), None)


def _b64decode(value: str) -> bytes:
    # Proto JSON bytes may use either base64 alphabet, padded or not (the SDK sends url-safe).
    value = value.replace("+", "-").replace("/", "_")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _details(error: errors.APIError) -> list[dict[str, Any]]:
    details: list[dict[str, Any]] = error.details["error"].get("details", [])
    return details


# -- rendering, decoded by google-genai ----------------------------------------------------


def test_body_render_decodes() -> None:
    turn = Turn(
        reasoning="let me think",
        text="Calling the tool",
        tool_calls=[
            ToolCall(name="get_weather", arguments={"city": "Paris"}, id="call-1"),
            ToolCall(name="get_time", arguments='{"tz": "CET"}'),
        ],
        input_tokens=20,
        output_tokens=9,
    )
    reply = GeminiProtocol().render(turn, _request(stream=False))
    assert isinstance(reply, BodyReply)
    assert reply.status == 200
    response = _response(json.loads(reply.body))
    assert response.candidates is not None
    (candidate,) = response.candidates
    assert candidate.finish_reason == types.FinishReason.STOP
    assert candidate.content is not None
    parts = candidate.content.parts or []
    assert parts[0].thought is True
    assert parts[0].text == "let me think"
    assert parts[1].text == "Calling the tool"
    assert response.function_calls is not None
    first, second = response.function_calls
    assert (first.name, first.args, first.id) == ("get_weather", {"city": "Paris"}, "call-1")
    assert (second.name, second.args, second.id) == ("get_time", {"tz": "CET"}, None)
    # Thinking models sign the first call of the step; the SDK hands the signature over as bytes.
    assert parts[2].thought_signature
    assert parts[3].thought_signature is None
    assert response.usage_metadata is not None
    assert response.usage_metadata.prompt_token_count == 20
    assert response.usage_metadata.candidates_token_count == 9
    assert response.usage_metadata.total_token_count == 29
    assert response.model_version == MODEL


def test_stream_render_decodes() -> None:
    turn = Turn(reasoning="hmm", text="Hello world", tool_calls=[ToolCall(name="f")], chunks=2)
    reply = GeminiProtocol().render(turn, _request(stream=True))
    assert isinstance(reply, StreamReply)
    assert reply.headers["content-type"] == "text/event-stream"
    assert len(reply.end) == 1
    chunks = [_response(doc) for doc in _segments(b"".join([*reply.chunks, *reply.end]))]
    thoughts = "".join(p.text or "" for c in chunks for p in _parts(c) if p.thought)
    text = "".join(p.text or "" for c in chunks for p in _parts(c) if not p.thought)
    assert thoughts == "hmm"
    assert text == "Hello world"
    calls = [fc for c in chunks for fc in (c.function_calls or [])]
    assert [(fc.name, fc.args) for fc in calls] == [("f", {})]
    # Only the end marker finishes; every chunk reports usage, the last one in full.
    assert [c.candidates[0].finish_reason for c in chunks if c.candidates][-1] == "STOP"
    assert all(c.candidates and c.candidates[0].finish_reason is None for c in chunks[:-1])
    assert all(c.usage_metadata is not None for c in chunks)
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].usage_metadata.candidates_token_count == 5
    assert len({c.response_id for c in chunks}) == 1


def _parts(response: types.GenerateContentResponse) -> list[types.Part]:
    if not response.candidates or response.candidates[0].content is None:
        return []
    return list(response.candidates[0].content.parts or [])


@pytest.mark.parametrize(
    ("turn", "finish"),
    [
        (Turn(text="cut", stop="max_tokens"), "MAX_TOKENS"),
        (Turn(stop="content_filter"), "SAFETY"),
        (Turn(text="partial", stop="content_filter"), "SAFETY"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_finish_reasons(turn: Turn, finish: str, stream: bool) -> None:
    reply = GeminiProtocol().render(turn, _request(stream=stream))
    if isinstance(reply, StreamReply):
        docs = _segments(b"".join([*reply.chunks, *reply.end]))
    else:
        docs = [json.loads(reply.body)]
    last = _response(docs[-1])
    assert last.candidates is not None
    candidate = last.candidates[0]
    assert candidate.finish_reason == finish
    if finish == "SAFETY":
        assert candidate.safety_ratings is not None
        assert candidate.safety_ratings[0].blocked is True


@pytest.mark.parametrize("stream", [False, True])
def test_block_reason_has_no_candidates(stream: bool) -> None:
    reply = GeminiProtocol().render(
        Turn(block_reason="PROHIBITED_CONTENT"), _request(stream=stream)
    )
    if isinstance(reply, StreamReply):
        assert not reply.chunks
        docs = _segments(b"".join(reply.end))
    else:
        docs = [json.loads(reply.body)]
    (doc,) = docs
    response = _response(doc)
    assert response.candidates is None
    assert response.prompt_feedback is not None
    assert response.prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT
    assert response.text is None


@pytest.mark.parametrize(
    ("fault", "cls", "code", "status"),
    [
        (Fault.http(400), errors.ClientError, 400, "INVALID_ARGUMENT"),
        (Fault.http(400, "context_length"), errors.ClientError, 400, "INVALID_ARGUMENT"),
        (Fault.http(401), errors.ClientError, 401, "UNAUTHENTICATED"),
        (Fault.http(403), errors.ClientError, 403, "PERMISSION_DENIED"),
        (Fault.http(404), errors.ClientError, 404, "NOT_FOUND"),
        (Fault.http(429, retry_after=2.5), errors.ClientError, 429, "RESOURCE_EXHAUSTED"),
        (Fault(kind="http_error", error="billing"), errors.ClientError, 429, "RESOURCE_EXHAUSTED"),
        (Fault.http(500), errors.ServerError, 500, "INTERNAL"),
        (Fault.http(503), errors.ServerError, 503, "UNAVAILABLE"),
        (Fault.http(504), errors.ServerError, 504, "DEADLINE_EXCEEDED"),
        (Fault.http(402), errors.ClientError, 402, "RESOURCE_EXHAUSTED"),
    ],
)
def test_error_bodies_parse_with_sdk(
    fault: Fault, cls: type[errors.APIError], code: int, status: str
) -> None:
    reply = GeminiProtocol().render_error(fault, _request(stream=False))
    assert reply.status == code
    assert reply.headers["content-type"].startswith("application/json")
    with pytest.raises(cls) as info:
        _raise_like_sdk(reply.status, reply.body)
    assert info.value.code == code
    assert info.value.status == status
    assert info.value.message
    if fault.retry_after is not None:
        assert reply.headers["retry-after"] == "3"
        assert {
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": "2.5s",
        } in _details(info.value)


def test_error_messages_and_overrides() -> None:
    protocol = GeminiProtocol()
    context = protocol.render_error(Fault.http(400, "context_length"), None)
    assert json.loads(context.body)["error"]["message"] == (
        "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576)."
    )
    missing = protocol.render_error(Fault.http(404), _request(stream=False))
    assert f"models/{MODEL} is not found" in json.loads(missing.body)["error"]["message"]
    custom = protocol.render_error(
        Fault.http(429, message="slow", headers={"X-Test": "1"}, retry_after=0.25), None
    )
    error = json.loads(custom.body)["error"]
    assert error["message"] == "slow"
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.25s"} in error[
        "details"
    ]
    assert custom.headers["x-test"] == "1"
    raw = protocol.render_error(Fault.http(500, body="<html>oops</html>"), None)
    assert raw.body == b"<html>oops</html>"


def test_midstream_error_is_an_sse_error_object() -> None:
    protocol = GeminiProtocol()
    reply = protocol.render(Turn(text="abcd"), _request(stream=True))
    assert isinstance(reply, StreamReply)
    error_chunk = protocol.render_midstream_error(
        Fault(kind="midstream", error="overloaded"), _request(stream=True)
    )
    docs = _segments(reply.chunks[0] + error_chunk)
    # The SDK's streaming loop checks exactly this prefix before raising by the error code.
    assert json.dumps(docs[1]).startswith('{"error":')
    with pytest.raises(errors.ServerError) as info:
        _raise_like_sdk(docs[1]["error"]["code"], json.dumps(docs[1]).encode())
    assert info.value.code == 503
    assert info.value.status == "UNAVAILABLE"


def test_stream_without_alt_sse_is_one_json_array() -> None:
    protocol = GeminiProtocol()
    request = ParsedRequest(
        protocol="gemini", model=MODEL, stream=True, options={"sse": False, "vertex": True}
    )
    reply = protocol.render(Turn(text="abcd"), request)
    assert isinstance(reply, StreamReply)
    assert reply.headers["content-type"].startswith("application/json")
    docs = json.loads(b"".join([*reply.chunks, *reply.end]))
    assert [_response(d).text for d in docs[:-1]] == ["ab", "cd"]
    assert docs[-1]["candidates"][0]["finishReason"] == "STOP"
    assert all("createTime" in d for d in docs)  # Vertex stamps every response
    # A midstream error is the array's last element, wherever the stream breaks.
    for after in (0, 1, 2):
        fault = Fault(kind="midstream", error="server", after_chunks=after)
        broken = protocol.render(Turn(text="abcd", fault=fault), request)
        assert isinstance(broken, StreamReply)
        assert broken.error_chunk is not None
        docs = json.loads(b"".join([*broken.chunks[:after], broken.error_chunk]))
        assert docs[-1]["error"]["code"] == 500
        assert len(docs) == after + 1
    blocked = protocol.render(Turn(block_reason="OTHER"), request)
    assert isinstance(blocked, StreamReply)
    (doc,) = json.loads(b"".join(blocked.end))
    assert doc["promptFeedback"]["blockReason"] == "OTHER"
    assert isinstance(reply.malformed_chunk, bytes)
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.chunks[0] + reply.malformed_chunk)


def test_match_and_parse() -> None:
    protocol = GeminiProtocol()
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "weather?"}]},
            {
                "role": "model",
                "parts": [{"functionCall": {"name": "get_weather", "args": {}}}],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}},
                    {
                        "function_response": {
                            "id": "c2",
                            "name": "other",
                            "response": {"error": "boom"},
                        }
                    },
                    {"functionResponse": {"name": "raw", "response": {"temp": 21}}},
                ],
            },
        ],
        "system_instruction": {"parts": [{"text": "be brief"}]},
        "tools": [
            {"functionDeclarations": [{"name": "get_weather"}, {"name": "other"}]},
            {"googleSearch": {}},
        ],
        "generationConfig": {"maxOutputTokens": 77},
    }
    paths = {
        f"/v1beta/models/{MODEL}:streamGenerateContent": True,
        f"/v1/models/{MODEL}:generateContent": False,
        f"{VERTEX_PREFIX}{MODEL}:generateContent": False,
        f"/v1/publishers/google/models/{MODEL}%3AstreamGenerateContent": True,
    }
    for path, stream in paths.items():
        assert protocol.match("POST", path), path
        parsed = protocol.parse("POST", path, "alt=sse" if stream else "", body)
        assert parsed is not None
        assert parsed.model == MODEL
        assert parsed.stream is stream
        assert parsed.system == "be brief"
        assert parsed.last_user_text == "weather?"
        assert parsed.tool_names == ("get_weather", "other")
        assert parsed.max_tokens == 77
        assert parsed.message_count == 3
        assert parsed.tool_results == (
            ToolResultSeen(call_id="get_weather", output="sunny"),
            ToolResultSeen(call_id="c2", output="boom", is_error=True),
            ToolResultSeen(call_id="raw", output='{"temp":21}'),
        )
        assert parsed.options["sse"] is stream
        assert parsed.options["vertex"] is ("publishers" in path)
        assert str(parsed.options["resource"]).endswith(f"models/{MODEL}")
    assert protocol.parse("POST", f"/v1beta/models/{MODEL}:countTokens", "", {}) is None
    with pytest.raises(ValueError):
        protocol.parse("POST", f"/v1beta/models/{MODEL}:generateContent", "", b"junk")
    # A bare /v1/models lookup is OpenAI's; the Gemini lookups are unambiguous.
    assert not protocol.match("GET", f"/v1/models/{MODEL}")
    assert protocol.match("GET", f"/v1beta/models/{MODEL}")
    assert protocol.match("GET", f"{VERTEX_PREFIX}{MODEL}")
    assert not protocol.match("POST", "/v1/chat/completions")
    assert not protocol.match("POST", f"/v1beta/models/{MODEL}:embedContent")


def test_auxiliary_answers() -> None:
    protocol = GeminiProtocol()
    counted = protocol.auxiliary(
        "POST",
        f"/v1beta/models/{MODEL}:countTokens",
        "",
        {"contents": [{"role": "user", "parts": [{"text": "x" * 40}]}]},
        {},
    )
    assert json.loads(counted.body)["totalTokens"] == 10
    vertex = protocol.auxiliary(
        "POST",
        f"{VERTEX_PREFIX}{MODEL}:countTokens",
        "",
        {"contents": [{"parts": [{"text": "abcd"}]}]},
        {},
    )
    assert json.loads(vertex.body) == {"totalTokens": 1, "totalBillableCharacters": 4}
    lookup = protocol.auxiliary("GET", f"/v1beta/models/{MODEL}", "", None, {})
    assert json.loads(lookup.body)["name"] == f"models/{MODEL}"


def test_string_arguments_must_be_an_object() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        GeminiProtocol().render(
            Turn(tool_calls=[ToolCall(name="f", arguments="[1, 2]")]), _request(stream=False)
        )


# -- end to end: the real google-genai client ----------------------------------------------


@pytest.fixture(autouse=True)
def _offline_google(monkeypatch: pytest.MonkeyPatch) -> None:
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
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_API_USE_CLIENT_CERTIFICATE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_GCE_CHECK", "true")


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    server_module = pytest.importorskip("chia_async.testing.server")
    with server_module.ScriptedModelServer() as srv:
        yield srv


# The SDK reads streams with different code for its aiohttp (default) and httpx transports.
@pytest.fixture(params=["vertex", "gemini_api", "gemini_api_httpx"])
def mode(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@asynccontextmanager
async def _client(srv: Any, name: str, mode: str) -> AsyncIterator[genai.client.AsyncClient]:
    httpx_client = httpx2.AsyncClient() if mode.endswith("_httpx") else None
    http_options = types.HttpOptions(
        base_url=srv.base_url(name),
        # One attempt: a scripted fault must reach the test, not be retried away.
        retry_options=types.HttpRetryOptions(attempts=1),
        timeout=10_000,
        httpx_async_client=httpx_client,
    )
    if mode == "vertex":
        client = genai.Client(
            vertexai=True,
            project="test-project",
            location="us-central1",
            # A token without expiry is never refreshed, so no OAuth endpoint is contacted.
            credentials=google.oauth2.credentials.Credentials(token="test-token"),
            http_options=http_options,
        )
    else:
        client = genai.Client(api_key="test-key", http_options=http_options)
    try:
        yield client.aio
    finally:
        await client.aio.aclose()
        client.close()
        if httpx_client is not None:
            await httpx_client.aclose()


def _script(srv: Any, name: str, mode: str, turns: Any) -> str:
    full = f"{name}-{mode}"
    srv.script(full, turns)
    return full


async def test_text_turn(server: Any, mode: str) -> None:
    name = _script(server, "gm-text", mode, [Turn(text="Hello from Gemini", input_tokens=8)])
    async with _client(server, name, mode) as client:
        response = await client.models.generate_content(
            model=MODEL,
            contents="hi there",
            config=types.GenerateContentConfig(system_instruction="be nice", max_output_tokens=128),
        )
    assert response.text == "Hello from Gemini"
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert response.usage_metadata is not None
    assert response.usage_metadata.prompt_token_count == 8
    assert (response.create_time is not None) is (mode == "vertex")
    (recorded,) = server.requests(name)
    if mode == "vertex":
        assert recorded.path == f"{VERTEX_PREFIX}{MODEL}:generateContent"
        assert recorded.headers["authorization"] == "Bearer test-token"
    else:
        assert recorded.path.endswith(f"/models/{MODEL}:generateContent")
        assert recorded.headers["x-goog-api-key"] == "test-key"
    assert recorded.parsed.system == "be nice"
    assert recorded.parsed.last_user_text == "hi there"
    assert recorded.parsed.max_tokens == 128
    assert not recorded.parsed.stream


async def test_streamed_text_with_thoughts(server: Any, mode: str) -> None:
    name = _script(
        server,
        "gm-stream",
        mode,
        [Turn(reasoning="thinking it over", text="Streamed answer", chunks=3)],
    )
    async with _client(server, name, mode) as client:
        chunks = [
            chunk
            async for chunk in await client.models.generate_content_stream(
                model=MODEL, contents="go"
            )
        ]
    assert "".join(p.text or "" for c in chunks for p in _parts(c) if not p.thought) == (
        "Streamed answer"
    )
    assert "".join(p.text or "" for c in chunks for p in _parts(c) if p.thought) == (
        "thinking it over"
    )
    assert chunks[-1].candidates is not None
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].usage_metadata.total_token_count == 15
    (recorded,) = server.requests(name)
    assert recorded.parsed.stream
    assert recorded.query == "alt=sse"


async def test_streamed_function_call_then_function_response(server: Any, mode: str) -> None:
    def script(request: ParsedRequest) -> Turn:
        if not request.tool_results:
            return Turn(
                reasoning="need data",
                tool_calls=[
                    ToolCall(name="get_weather", arguments={"city": "Paris"}),
                    ToolCall(name="get_time", arguments={"tz": "CET"}),
                ],
            )
        outputs = ", ".join(f"{r.call_id}={r.output}" for r in request.tool_results)
        return Turn(text=f"seen {outputs}")

    name = _script(server, "gm-tools", mode, script)
    tools = [
        types.Tool(
            function_declarations=[
                types.FunctionDeclaration(name="get_weather", description="weather"),
                types.FunctionDeclaration(name="get_time", description="time"),
            ]
        )
    ]
    config = types.GenerateContentConfig(
        tools=tools,
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    history: list[types.Content] = [
        types.Content(role="user", parts=[types.Part.from_text(text="weather and time?")])
    ]
    async with _client(server, name, mode) as client:
        stream = await client.models.generate_content_stream(
            model=MODEL, contents=history, config=config
        )
        model_parts: list[types.Part] = []
        finish = None
        async for chunk in stream:
            model_parts.extend(_parts(chunk))
            if chunk.candidates and chunk.candidates[0].finish_reason:
                finish = chunk.candidates[0].finish_reason
        calls = [p.function_call for p in model_parts if p.function_call is not None]
        assert [(c.name, c.args) for c in calls] == [
            ("get_weather", {"city": "Paris"}),
            ("get_time", {"tz": "CET"}),
        ]
        assert finish == types.FinishReason.STOP
        signed = [p for p in model_parts if p.function_call is not None and p.thought_signature]
        assert len(signed) == 1

        history.append(types.Content(role="model", parts=model_parts))
        history.append(
            types.Content(
                role="user",
                parts=[
                    types.Part.from_function_response(
                        name="get_weather", response={"output": "sunny"}
                    ),
                    types.Part.from_function_response(name="get_time", response={"output": "noon"}),
                ],
            )
        )
        follow_up = await client.models.generate_content(
            model=MODEL, contents=history, config=config
        )
    assert follow_up.text == "seen get_weather=sunny, get_time=noon"
    first, second = server.requests(name)
    assert first.parsed.tool_names == ("get_weather", "get_time")
    assert second.parsed.message_count == 3
    # The signature went back with the call, base64 on the wire like the live service expects.
    sent = [
        part
        for content in second.body["contents"]
        for part in content["parts"]
        if "thoughtSignature" in part
    ]
    assert len(sent) == 1
    assert _b64decode(sent[0]["thoughtSignature"]) == signed[0].thought_signature


@pytest.mark.parametrize("stream", [False, True])
async def test_max_tokens_safety_and_block_reason(server: Any, mode: str, stream: bool) -> None:
    name = _script(
        server,
        f"gm-stops-{stream}",
        mode,
        [
            Turn(text="truncat", stop="max_tokens"),
            Turn(stop="content_filter"),
            Turn(block_reason="SAFETY"),
        ],
    )
    results: list[types.GenerateContentResponse] = []
    async with _client(server, name, mode) as client:
        for _ in range(3):
            if stream:
                chunks = [
                    c
                    async for c in await client.models.generate_content_stream(
                        model=MODEL, contents="x"
                    )
                ]
                results.append(chunks[-1])
            else:
                results.append(await client.models.generate_content(model=MODEL, contents="x"))
    max_tokens, safety, blocked = results
    assert max_tokens.candidates is not None
    assert max_tokens.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert safety.candidates is not None
    assert safety.candidates[0].finish_reason == types.FinishReason.SAFETY
    assert safety.candidates[0].safety_ratings is not None
    assert safety.candidates[0].safety_ratings[0].blocked is True
    assert blocked.candidates is None
    assert blocked.prompt_feedback is not None
    assert blocked.prompt_feedback.block_reason == types.BlockedReason.SAFETY


@pytest.mark.parametrize(
    ("fault", "cls", "code", "status"),
    [
        (Fault.http(400), errors.ClientError, 400, "INVALID_ARGUMENT"),
        (Fault.http(400, "context_length"), errors.ClientError, 400, "INVALID_ARGUMENT"),
        (Fault.http(401), errors.ClientError, 401, "UNAUTHENTICATED"),
        (Fault.http(403), errors.ClientError, 403, "PERMISSION_DENIED"),
        (Fault.http(404), errors.ClientError, 404, "NOT_FOUND"),
        (Fault.http(429, retry_after=1), errors.ClientError, 429, "RESOURCE_EXHAUSTED"),
        (Fault.http(500), errors.ServerError, 500, "INTERNAL"),
        (Fault.http(503), errors.ServerError, 503, "UNAVAILABLE"),
    ],
)
async def test_http_errors(
    server: Any, mode: str, fault: Fault, cls: type[errors.APIError], code: int, status: str
) -> None:
    name = _script(server, f"gm-err-{code}-{fault.error}", mode, [Turn(fault=fault)] * 2)
    async with _client(server, name, mode) as client:
        with pytest.raises(cls) as info:
            await client.models.generate_content(model=MODEL, contents="x")
        # The streaming request is only sent when iteration starts.
        stream = await client.models.generate_content_stream(model=MODEL, contents="x")
        with pytest.raises(cls) as stream_info:
            await _drain_text(stream, into=[])
    for error in (info.value, stream_info.value):
        assert error.code == code
        assert error.status == status
        assert error.message
        if fault.retry_after is not None:
            assert {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": "1s",
            } in _details(error)
    if fault.error == "context_length":
        assert info.value.message is not None
        assert info.value.message.startswith("The input token count (")
    if fault.error == "not_found":
        # Each surface words a missing model its own way, naming the resource asked for.
        expected = (
            f"Publisher Model `{VERTEX_PREFIX[len('/v1beta1/') :]}{MODEL}` was not found"
            if mode == "vertex"
            else f"models/{MODEL} is not found for API version v1"
        )
        assert info.value.message is not None
        assert info.value.message.startswith(expected)
    assert len(server.requests(name)) == 2  # no retries


async def test_midstream_error_raised_while_iterating(server: Any, mode: str) -> None:
    name = _script(
        server,
        "gm-mid",
        mode,
        [
            Turn(
                text="abcdef",
                chunks=3,
                fault=Fault(kind="midstream", error="rate_limit", after_chunks=2),
            )
        ],
    )
    texts: list[str] = []
    async with _client(server, name, mode) as client:
        stream = await client.models.generate_content_stream(model=MODEL, contents="x")
        with pytest.raises(errors.ClientError) as info:
            await _drain_text(stream, into=texts)
    assert texts == ["ab", "cd"]
    assert info.value.code == 429
    assert info.value.status == "RESOURCE_EXHAUSTED"


async def test_malformed_chunk_raises(server: Any, mode: str) -> None:
    name = _script(
        server,
        "gm-malformed",
        mode,
        [Turn(text="abc", fault=Fault(kind="malformed", after_chunks=1))],
    )
    async with _client(server, name, mode) as client:
        stream = await client.models.generate_content_stream(model=MODEL, contents="x")
        with pytest.raises(errors.UnknownApiResponseError):
            await _drain_text(stream, into=[])


async def test_truncated_stream_has_no_finish_reason(server: Any, mode: str) -> None:
    name = _script(server, "gm-truncate", mode, [Turn(text="abcd", fault=Fault(kind="truncate"))])
    async with _client(server, name, mode) as client:
        chunks = [
            c async for c in await client.models.generate_content_stream(model=MODEL, contents="x")
        ]
    # There is no sentinel in Gemini streams: only the missing finishReason shows the cut.
    assert "".join(p.text or "" for c in chunks for p in _parts(c)) == "abcd"
    assert all(c.candidates and c.candidates[0].finish_reason is None for c in chunks)


async def test_raw_stream_without_alt_sse(server: Any) -> None:
    # Clients that do not ask for SSE get the service's default: one streamed JSON array.
    server.script("gm-array", [Turn(text="Hello", chunks=2)])
    url = f"{server.base_url('gm-array')}/v1beta/models/{MODEL}:streamGenerateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await http.post(url, json=body, headers={"x-goog-api-key": "k"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    docs = response.json()
    assert "".join(_response(d).text or "" for d in docs) == "Hello"
    assert docs[-1]["candidates"][0]["finishReason"] == "STOP"


async def _drain_text(
    stream: AsyncIterator[types.GenerateContentResponse], *, into: list[str]
) -> None:
    async for chunk in stream:
        into.extend(p.text or "" for p in _parts(chunk))


async def test_count_tokens(server: Any, mode: str) -> None:
    name = _script(server, "gm-count", mode, [])
    async with _client(server, name, mode) as client:
        counted = await client.models.count_tokens(model=MODEL, contents="y" * 20)
    assert counted.total_tokens == 5
    (recorded,) = server.requests(name)
    assert recorded.parsed is None
    assert recorded.path.endswith(f"/models/{MODEL}:countTokens")
