"""Anthropic Messages of the scripted server, through the real anthropic SDK.

Every error is checked as the SDK's own exception class with the status, headers and body a
caller would inspect. Everything runs on loopback.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import anthropic
import httpx2
import pytest

from chia_async.testing.script import Fault, ParsedRequest, ToolCall, Turn
from chia_async.testing.server import ScriptedModelServer

pytestmark = pytest.mark.timeout(30)

MODEL = "claude-opus-4-8"
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as srv:
        yield srv


@pytest.fixture
async def client(server: ScriptedModelServer, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """An AsyncAnthropic client on a script named after the test."""
    name = request.node.name.replace("[", "-").replace("]", "")
    async with anthropic.AsyncAnthropic(
        base_url=server.base_url(name), api_key="sk-ant-test", max_retries=0
    ) as c:
        c.script_name = name  # type: ignore[attr-defined]
        yield c


def _script(server: ScriptedModelServer, client: Any, turns: Any) -> str:
    name: str = client.script_name
    server.script(name, turns)
    return name


async def _create(client: Any, **kw: Any) -> Any:
    kw.setdefault("model", MODEL)
    kw.setdefault("max_tokens", 1024)
    kw.setdefault("messages", USER)
    return await client.messages.create(**kw)


# ------------------------------------------------------------------------------ messages


async def test_text_turn(server: ScriptedModelServer, client: Any) -> None:
    _script(server, client, [Turn(text="Hello, human", input_tokens=21, output_tokens=4)])
    message = await _create(client, system="be kind", max_tokens=64)
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == MODEL
    assert [(b.type, b.text) for b in message.content] == [("text", "Hello, human")]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (21, 4)
    assert message.id.startswith("msg_")
    (recorded,) = server.requests(client.script_name)
    assert recorded.path == "/v1/messages"
    assert "sk-ant-test" in (recorded.headers.get("x-api-key") or recorded.headers["authorization"])
    assert "anthropic-version" in recorded.headers
    parsed = recorded.parsed
    assert parsed is not None
    assert (parsed.protocol, parsed.system, parsed.last_user_text) == ("anthropic", "be kind", "hi")
    assert parsed.max_tokens == 64
    assert not parsed.stream


async def test_text_stream_events(server: ScriptedModelServer, client: Any) -> None:
    _script(server, client, [Turn(text="streamed words here", chunks=3)])
    stream = await _create(client, stream=True)
    events = [event async for event in stream]
    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == (
        "streamed words here"
    )
    assert events[-2].delta.stop_reason == "end_turn"
    assert events[-2].usage.output_tokens == 5


async def test_raw_stream_has_ping_and_event_lines(
    server: ScriptedModelServer, client: Any
) -> None:
    _script(server, client, [Turn(text="x")])
    async with httpx2.AsyncClient(base_url=server.base_url(client.script_name)) as http:
        response = await http.post(
            "/v1/messages?beta=true",
            json={"model": MODEL, "max_tokens": 5, "messages": USER, "stream": True},
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["request-id"].startswith("req_")
    frames = response.text.strip().split("\n\n")
    names = [frame.split("\n")[0].removeprefix("event: ") for frame in frames]
    assert names[:2] == ["message_start", "ping"]
    assert names[-1] == "message_stop"
    for frame in frames:
        event, data = frame.split("\n")
        assert json.loads(data.removeprefix("data: "))["type"] == event.removeprefix("event: ")
    assert server.requests(client.script_name)[0].query == "beta=true"


async def test_stream_helper_thinking_and_tool_use(
    server: ScriptedModelServer, client: Any
) -> None:
    _script(
        server,
        client,
        [
            Turn(
                reasoning="Let me think about adding.",
                text="I will call the add tool.",
                tool_calls=[ToolCall(name="add", arguments={"a": 2, "b": 3}, id="toolu_1")],
                chunks=3,
            )
        ],
    )
    async with client.messages.stream(
        model=MODEL,
        max_tokens=2048,
        messages=USER,
        thinking={"type": "enabled", "budget_tokens": 1024},
        tools=[{"name": "add", "input_schema": {"type": "object"}}],
    ) as stream:
        deltas = [e.delta.type async for e in stream if e.type == "content_block_delta"]
        message = await stream.get_final_message()
    thinking, text, tool = message.content
    assert thinking.type == "thinking"
    assert thinking.thinking == "Let me think about adding."
    assert thinking.signature
    assert text.text == "I will call the add tool."
    assert (tool.type, tool.id, tool.name, tool.input) == (
        "tool_use",
        "toolu_1",
        "add",
        {"a": 2, "b": 3},
    )
    assert message.stop_reason == "tool_use"
    assert "signature_delta" in deltas
    assert "input_json_delta" in deltas
    parsed = server.requests(client.script_name)[0].parsed
    assert parsed is not None and parsed.tool_names == ("add",)


async def test_non_streaming_tool_use(server: ScriptedModelServer, client: Any) -> None:
    _script(server, client, [Turn(tool_calls=[ToolCall(name="echo", arguments='{"text": "x"}')])])
    message = await _create(client)
    (tool,) = message.content
    assert tool.type == "tool_use"
    assert tool.id.startswith("toolu_")
    assert tool.input == {"text": "x"}
    assert message.stop_reason == "tool_use"


async def test_tool_result_follow_up(server: ScriptedModelServer, client: Any) -> None:
    def turn(request: ParsedRequest) -> Turn:
        if not request.tool_results:
            return Turn(tool_calls=[ToolCall(name="add", arguments={"a": 2, "b": 3})])
        (result,) = request.tool_results
        return Turn(text=f"got {result.output} error={result.is_error} for {result.call_id}")

    _script(server, client, turn)
    first = await _create(client)
    (tool,) = first.content
    second = await _create(
        client,
        messages=[
            *USER,
            {"role": "assistant", "content": [tool.model_dump(exclude_none=True)]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": tool.id,
                        "content": [{"type": "text", "text": "5"}],
                        "is_error": True,
                    }
                ],
            },
        ],
    )
    assert second.content[0].text == f"got 5 error=True for {tool.id}"
    parsed = server.requests(client.script_name)[1].parsed
    assert parsed is not None
    assert parsed.message_count == 3
    assert parsed.last_user_text == "hi"


@pytest.mark.parametrize(
    ("stop", "reason"),
    [("max_tokens", "max_tokens"), ("content_filter", "refusal"), ("tool_use", "tool_use")],
)
async def test_stop_reasons(
    server: ScriptedModelServer, client: Any, stop: str, reason: str
) -> None:
    _script(server, client, [Turn(text="partial", stop=stop)] * 2)  # type: ignore[arg-type]
    assert (await _create(client)).stop_reason == reason
    async with client.messages.stream(model=MODEL, max_tokens=5, messages=USER) as stream:
        assert (await stream.get_final_message()).stop_reason == reason


# -------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("fault", "exc_type", "status", "error_type", "wording"),
    [
        (Fault.http(429), anthropic.RateLimitError, 429, "rate_limit_error", "rate limit"),
        (Fault.http(529), anthropic.OverloadedError, 529, "overloaded_error", "Overloaded"),
        (Fault.http(500), anthropic.InternalServerError, 500, "api_error", "Internal server error"),
        (Fault.http(401), anthropic.AuthenticationError, 401, "authentication_error", "x-api-key"),
        (Fault.http(403), anthropic.PermissionDeniedError, 403, "permission_error", "permission"),
        (Fault.http(404), anthropic.NotFoundError, 404, "not_found_error", "model: "),
        (Fault.http(400), anthropic.BadRequestError, 400, "invalid_request_error", "Invalid"),
        (
            Fault.http(400, "context_length"),
            anthropic.BadRequestError,
            400,
            "invalid_request_error",
            "prompt is too long: 250000 tokens > 200000 maximum",
        ),
        (
            Fault.http(400, "billing"),
            anthropic.BadRequestError,
            400,
            "invalid_request_error",
            "Your credit balance is too low",
        ),
        (Fault.http(402), anthropic.PaymentRequiredError, 402, "billing_error", "credit balance"),
        (Fault.http(413), anthropic.ContentTooLargeError, 413, "request_too_large", "bytes"),
    ],
)
async def test_http_errors(
    server: ScriptedModelServer,
    client: Any,
    fault: Fault,
    exc_type: type[anthropic.APIStatusError],
    status: int,
    error_type: str,
    wording: str,
) -> None:
    _script(server, client, [Turn(fault=fault), Turn(fault=fault)])
    with pytest.raises(exc_type) as info:
        await _create(client)
    error = info.value
    assert error.status_code == status
    assert error.type == error_type
    assert wording in (error.api_message or "")
    assert error.request_id and error.request_id.startswith("req_")
    assert error.body["type"] == "error"
    assert error.body["request_id"] == error.request_id
    # the stream request gets the same plain error response
    with pytest.raises(exc_type):
        await _create(client, stream=True)


async def test_rate_limit_headers(server: ScriptedModelServer, client: Any) -> None:
    _script(server, client, [Turn(fault=Fault.http(429, retry_after=3))])
    before = datetime.now(UTC)
    with pytest.raises(anthropic.RateLimitError) as info:
        await _create(client)
    headers = info.value.response.headers
    assert headers["retry-after"] == "3"
    assert headers["retry-after-ms"] == "3000"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    reset = datetime.fromisoformat(headers["anthropic-ratelimit-requests-reset"])
    assert reset.tzinfo is not None
    assert 1 <= (reset - before).total_seconds() <= 5
    for bucket in ("tokens", "input-tokens", "output-tokens"):
        assert f"anthropic-ratelimit-{bucket}-reset" in headers


async def test_overloaded_asks_for_a_retry(server: ScriptedModelServer, client: Any) -> None:
    _script(server, client, [Turn(fault=Fault.http(529)), Turn(text="second try")])
    retrying = client.with_options(max_retries=1)
    message = await retrying.messages.create(model=MODEL, max_tokens=5, messages=USER)
    assert message.content[0].text == "second try"
    first, _ = server.requests(client.script_name)
    assert first.turn_index == 0


async def test_midstream_overloaded_error(server: ScriptedModelServer, client: Any) -> None:
    fault = Fault(kind="midstream", error="overloaded", after_chunks=4)
    _script(server, client, [Turn(text="abcdef", chunks=3, fault=fault)])
    stream = await _create(client, stream=True)
    seen = []
    with pytest.raises(anthropic.APIStatusError) as info:
        async for event in stream:
            seen.append(event.type)
    assert seen == ["message_start", "content_block_start", "content_block_delta"]
    assert info.value.type == "overloaded_error"
    assert info.value.api_message == "Overloaded"
    assert info.value.body["type"] == "error"


async def test_stream_drop_raises(server: ScriptedModelServer, client: Any) -> None:
    _script(
        server, client, [Turn(text="abcdef", chunks=3, fault=Fault(kind="drop", after_chunks=3))]
    )
    stream = await _create(client, stream=True)
    with pytest.raises(httpx2.RemoteProtocolError):
        async for _ in stream:
            pass


async def test_non_streaming_drop_raises(server: ScriptedModelServer, client: Any) -> None:
    _script(server, client, [Turn(text="abcdef", fault=Fault(kind="drop"))])
    with pytest.raises(anthropic.APIConnectionError):
        await _create(client)


async def test_stream_stall_hits_the_read_timeout(server: ScriptedModelServer, client: Any) -> None:
    _script(server, client, [Turn(text="abc", fault=Fault(kind="stall", after_chunks=1))])
    stream = await _create(client, stream=True, timeout=0.3)
    seen = []
    with pytest.raises(httpx2.ReadTimeout):
        async for event in stream:
            seen.append(event.type)
    assert seen == ["message_start"]


async def test_malformed_event_raises(server: ScriptedModelServer, client: Any) -> None:
    _script(server, client, [Turn(text="abc", fault=Fault(kind="malformed", after_chunks=2))])
    stream = await _create(client, stream=True)
    with pytest.raises(json.JSONDecodeError):
        async for _ in stream:
            pass


async def test_truncated_stream_lacks_message_stop(
    server: ScriptedModelServer, client: Any
) -> None:
    _script(server, client, [Turn(text="abc", fault=Fault(kind="truncate"))])
    stream = await _create(client, stream=True)
    types = [event.type async for event in stream]
    assert types[-1] == "message_delta"
    assert "message_stop" not in types


# --------------------------------------------------------------------------- auxiliary


async def test_count_tokens_does_not_consume_a_turn(
    server: ScriptedModelServer, client: Any
) -> None:
    _script(server, client, [Turn(text="the only turn")])
    counted = await client.messages.count_tokens(model=MODEL, messages=USER)
    assert counted.input_tokens > 0
    message = await _create(client)
    assert message.content[0].text == "the only turn"
    aux, real = server.requests(client.script_name)
    assert aux.path == "/v1/messages/count_tokens"
    assert aux.parsed is None
    assert real.turn_index == 0


async def test_root_probe_and_models(server: ScriptedModelServer, client: Any) -> None:
    _script(server, client, [])
    base = server.base_url(client.script_name)
    async with httpx2.AsyncClient() as http:
        head = await http.head(base)
        get = await http.get(base + "/")
    assert head.status_code == 200
    assert get.status_code == 200
    page = await client.models.list()
    assert [m.id for m in page.data] == ["mock-model"]
    assert all(r.parsed is None for r in server.requests(client.script_name))


async def test_beta_messages_path(server: ScriptedModelServer, client: Any) -> None:
    _script(server, client, [Turn(text="beta ok")])
    message = await client.beta.messages.create(model=MODEL, max_tokens=5, messages=USER)
    assert message.content[0].text == "beta ok"
