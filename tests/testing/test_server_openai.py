"""OpenAI Chat Completions and Responses of the scripted server, through the real openai SDK.

Every error is checked as the SDK's own exception class with the status, headers and body a
caller would inspect. Everything runs on loopback.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import openai
import pytest

from chia_async.testing.script import Fault, ParsedRequest, ToolCall, Turn
from chia_async.testing.server import ScriptedModelServer

pytestmark = pytest.mark.timeout(30)

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as srv:
        yield srv


@pytest.fixture
async def client(server: ScriptedModelServer, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """An AsyncOpenAI client on a script named after the test."""
    name = request.node.name.replace("[", "-").replace("]", "")
    async with openai.AsyncOpenAI(
        base_url=server.base_url(name), api_key="sk-test", max_retries=0
    ) as c:
        c.script_name = name  # type: ignore[attr-defined]
        yield c


def _script(server: ScriptedModelServer, client: Any, turns: Any, **kw: Any) -> str:
    name: str = client.script_name
    server.script(name, turns, **kw)
    return name


# ------------------------------------------------------------------------ chat completions


async def test_chat_text_turn(server: ScriptedModelServer, client: Any) -> None:
    _script(server, client, [Turn(text="Hello there", input_tokens=12, output_tokens=3)])
    reply = await client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hello there"
    assert choice.finish_reason == "stop"
    assert reply.model == "gpt-4o-mini"
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (12, 3)
    assert reply.usage.total_tokens == 15


async def test_chat_text_stream_with_usage(server: ScriptedModelServer, client: Any) -> None:
    _script(server, client, [Turn(text="Hello streaming world", chunks=3, model="echoed")])
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello streaming world"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.total_tokens == 15
    assert all(c.usage is None for c in chunks[:-1])
    assert {c.model for c in chunks} == {"echoed"}
    assert len({c.id for c in chunks}) == 1


async def test_chat_stream_without_usage_has_no_usage_chunk(
    server: ScriptedModelServer, client: Any
) -> None:
    _script(server, client, [Turn(text="abc")])
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_chat_streamed_tool_calls_assemble(server: ScriptedModelServer, client: Any) -> None:
    _script(
        server,
        client,
        [
            Turn(
                text="Let me add.",
                tool_calls=[
                    ToolCall(name="add", arguments={"a": 2, "b": 3}, id="call_fixed"),
                    ToolCall(name="echo", arguments='{"text": "hi"}'),
                ],
                chunks=4,
            )
        ],
    )
    stream = await client.chat.completions.create(
        model="m",
        messages=USER,
        stream=True,
        tools=[
            {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
            for n in ("add", "echo")
        ],
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    first_deltas: dict[int, Any] = {}
    async for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or ():
            first_deltas.setdefault(delta.index, delta)
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.id or ""
            call["name"] += (delta.function.name or "") if delta.function else ""
            call["arguments"] += (delta.function.arguments or "") if delta.function else ""
    assert finish == "tool_calls"
    assert calls[0]["id"] == "call_fixed"
    assert calls[0]["name"] == "add"
    assert json.loads(calls[0]["arguments"]) == {"a": 2, "b": 3}
    assert calls[1]["name"] == "echo"
    assert calls[1]["id"].startswith("call_")
    assert json.loads(calls[1]["arguments"]) == {"text": "hi"}
    # the first delta of each call carries id, type, name and the first argument fragment
    assert first_deltas[0].type == "function"
    assert first_deltas[0].function.arguments
    recorded = server.requests(client.script_name)[0].parsed
    assert recorded is not None and recorded.tool_names == ("add", "echo")


async def test_chat_non_streaming_tool_calls(server: ScriptedModelServer, client: Any) -> None:
    _script(server, client, [Turn(tool_calls=[ToolCall(name="add", arguments={"a": 1})])])
    reply = await client.chat.completions.create(model="m", messages=USER)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "add"
    assert json.loads(call.function.arguments) == {"a": 1}


async def test_chat_tool_result_follow_up(server: ScriptedModelServer, client: Any) -> None:
    def turn(request: ParsedRequest) -> Turn:
        if not request.tool_results:
            return Turn(tool_calls=[ToolCall(name="add", arguments={"a": 2, "b": 3}, id="c1")])
        (result,) = request.tool_results
        return Turn(text=f"{result.call_id} returned {result.output}")

    _script(server, client, turn)
    first = await client.chat.completions.create(model="m", messages=USER)
    call = first.choices[0].message.tool_calls[0]
    messages = [
        *USER,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "5"},
    ]
    second = await client.chat.completions.create(model="m", messages=messages)
    assert second.choices[0].message.content == "c1 returned 5"
    parsed = server.requests(client.script_name)[1].parsed
    assert parsed is not None
    assert parsed.message_count == 3
    assert parsed.last_user_text == "hi"


@pytest.mark.parametrize(
    ("stop", "finish"),
    [("max_tokens", "length"), ("content_filter", "content_filter"), ("end_turn", "stop")],
)
async def test_chat_finish_reasons(
    server: ScriptedModelServer, client: Any, stop: str, finish: str
) -> None:
    _script(server, client, [Turn(text="cut", stop=stop), Turn(text="cut", stop=stop)])  # type: ignore[arg-type]
    reply = await client.chat.completions.create(model="m", messages=USER)
    assert reply.choices[0].finish_reason == finish
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    assert [c.choices[0].finish_reason async for c in stream][-1] == finish


async def test_chat_reasoning_content(server: ScriptedModelServer, client: Any) -> None:
    _script(server, client, [Turn(text="answer", reasoning="thinking hard")])
    reply = await client.chat.completions.create(model="m", messages=USER)
    assert reply.choices[0].message.model_extra["reasoning_content"] == "thinking hard"


@pytest.mark.parametrize(
    ("fault", "exc_type", "status", "code"),
    [
        (Fault.http(429, retry_after=2), openai.RateLimitError, 429, "rate_limit_exceeded"),
        (Fault.http(429, "billing"), openai.RateLimitError, 429, "insufficient_quota"),
        (Fault.http(400, "context_length"), openai.BadRequestError, 400, "context_length_exceeded"),
        (Fault.http(401), openai.AuthenticationError, 401, "invalid_api_key"),
        (Fault.http(403), openai.PermissionDeniedError, 403, None),
        (Fault.http(404), openai.NotFoundError, 404, "model_not_found"),
        (Fault.http(400), openai.BadRequestError, 400, None),
        (Fault.http(500), openai.InternalServerError, 500, None),
        (Fault.http(503), openai.InternalServerError, 503, None),
        (Fault.http(529), openai.InternalServerError, 529, None),
    ],
)
async def test_chat_http_errors(
    server: ScriptedModelServer,
    client: Any,
    fault: Fault,
    exc_type: type[openai.APIStatusError],
    status: int,
    code: str | None,
) -> None:
    _script(server, client, [Turn(fault=fault), Turn(fault=fault)])
    with pytest.raises(exc_type) as info:
        await client.chat.completions.create(model="gpt-4o", messages=USER)
    error = info.value
    assert error.status_code == status
    assert error.code == code
    assert error.request_id and error.request_id.startswith("req_")
    body = error.body
    assert set(body) == {"message", "type", "param", "code"}
    assert body["message"]
    # a streaming request gets the same plain error response
    with pytest.raises(exc_type):
        await client.chat.completions.create(model="gpt-4o", messages=USER, stream=True)


async def test_chat_rate_limit_headers(server: ScriptedModelServer, client: Any) -> None:
    _script(server, client, [Turn(fault=Fault.http(429, retry_after=1.5))])
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="gpt-4o", messages=USER)
    headers = info.value.response.headers
    assert headers["retry-after"] == "2"
    assert headers["retry-after-ms"] == "1500"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "1.5s"
    assert "x-ratelimit-limit-tokens" in headers
    assert "Please try again in 1.5s" in info.value.message
    assert info.value.type == "requests"


async def test_chat_context_length_wording(server: ScriptedModelServer, client: Any) -> None:
    _script(server, client, [Turn(fault=Fault.http(400, "context_length"))])
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="gpt-4o", messages=USER)
    assert "maximum context length is" in info.value.message
    assert info.value.param == "messages"
    assert info.value.type == "invalid_request_error"


async def test_chat_error_overrides(server: ScriptedModelServer, client: Any) -> None:
    _script(
        server,
        client,
        [
            Turn(fault=Fault.http(418, "server", message="teapot", headers={"x-extra": "1"})),
            Turn(fault=Fault.http(500, body={"error": {"message": "custom body"}})),
        ],
    )
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(model="m", messages=USER)
    assert info.value.status_code == 418
    assert info.value.body["message"] == "teapot"
    assert info.value.response.headers["x-extra"] == "1"
    with pytest.raises(openai.InternalServerError) as info2:
        await client.chat.completions.create(model="m", messages=USER)
    assert info2.value.body == {"message": "custom body"}


async def test_chat_midstream_error_raises_api_error(
    server: ScriptedModelServer, client: Any
) -> None:
    fault = Fault(kind="midstream", error="rate_limit", after_chunks=2)
    _script(server, client, [Turn(text="abcdef", chunks=3, fault=fault)])
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    seen = []
    with pytest.raises(openai.APIError) as info:
        async for chunk in stream:
            seen.append(chunk)
    assert len(seen) == 2
    assert not isinstance(info.value, openai.APIStatusError)
    assert "Rate limit reached" in info.value.message
    assert info.value.body["code"] == "rate_limit_exceeded"


async def test_chat_stream_drop_is_a_connection_error(
    server: ScriptedModelServer, client: Any
) -> None:
    _script(
        server, client, [Turn(text="abcdef", chunks=3, fault=Fault(kind="drop", after_chunks=2))]
    )
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    seen = []
    with pytest.raises(openai.APIConnectionError) as info:
        async for chunk in stream:
            seen.append(chunk)
    assert len(seen) == 2
    assert isinstance(info.value.__cause__, httpx2.RemoteProtocolError)


async def test_chat_stream_stall_hits_the_read_timeout(
    server: ScriptedModelServer, client: Any
) -> None:
    _script(server, client, [Turn(text="abc", fault=Fault(kind="stall", after_chunks=1))])
    stream = await client.chat.completions.create(
        model="m", messages=USER, stream=True, timeout=0.3
    )
    seen = []
    with pytest.raises(openai.APITimeoutError):
        async for chunk in stream:
            seen.append(chunk)
    assert len(seen) == 1


async def test_chat_malformed_chunk_raises(server: ScriptedModelServer, client: Any) -> None:
    _script(server, client, [Turn(text="abc", fault=Fault(kind="malformed", after_chunks=1))])
    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    with pytest.raises(json.JSONDecodeError):
        async for _ in stream:
            pass


async def test_chat_truncated_stream_lacks_done(server: ScriptedModelServer, client: Any) -> None:
    _script(server, client, [Turn(text="abc"), Turn(text="abc", fault=Fault(kind="truncate"))])
    bodies = []
    for _ in range(2):
        async with client.chat.completions.with_streaming_response.create(
            model="m", messages=USER, stream=True
        ) as response:
            bodies.append(await response.read())
    complete, truncated = bodies
    assert complete.endswith(b"data: [DONE]\n\n")
    assert b"[DONE]" not in truncated
    # every content chunk, finish_reason included, is there: only the end marker is missing
    assert truncated.count(b"data: ") == complete.count(b"data: ") - 1
    last = json.loads(truncated.strip().split(b"\n\n")[-1].removeprefix(b"data: "))
    assert last["choices"][0]["finish_reason"] == "stop"


async def test_models_list(client: Any) -> None:
    page = await client.models.list()
    assert [m.id for m in page.data] == ["mock-model"]
    model = await client.models.retrieve("gpt-4o")
    assert model.id == "gpt-4o"


# ------------------------------------------------------------------------------- responses


async def test_responses_stream_text(server: ScriptedModelServer, client: Any) -> None:
    _script(server, client, [Turn(text="Hello from responses", chunks=3, input_tokens=20)])
    stream = await client.responses.create(model="gpt-5.5", input="hi", stream=True)
    events = [event async for event in stream]
    types = [e.type for e in events]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Hello from responses"
    completed = events[-1].response
    assert completed.status == "completed"
    assert completed.output_text == "Hello from responses"
    assert completed.usage.input_tokens == 20
    assert completed.usage.total_tokens == 25
    assert len({e.response.id for e in events if hasattr(e, "response")}) == 1


async def test_responses_stream_function_call_with_namespace(
    server: ScriptedModelServer, client: Any
) -> None:
    _script(
        server,
        client,
        [
            Turn(
                reasoning="I should add",
                text="I will call the add tool.",
                tool_calls=[
                    ToolCall(name="add", namespace="mcp__mock", arguments={"a": 2, "b": 3})
                ],
            )
        ],
    )
    stream = await client.responses.create(
        model="gpt-5.5",
        input=[{"role": "user", "content": "add 2 and 3"}],
        stream=True,
        tools=[
            {
                "type": "namespace",
                "name": "mcp__mock",
                "description": "mock tools",
                "tools": [{"type": "function", "name": "add", "parameters": {}}],
            }
        ],
    )
    events = [event async for event in stream]
    done_items = [e.item for e in events if e.type == "response.output_item.done"]
    assert [item.type for item in done_items] == ["reasoning", "message", "function_call"]
    reasoning, message, call = done_items
    assert reasoning.summary[0].text == "I should add"
    summary = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert summary == "I should add"
    assert message.content[0].text == "I will call the add tool."
    assert call.namespace == "mcp__mock"
    assert call.name == "add"
    assert call.call_id.startswith("call_")
    arguments = "".join(
        e.delta for e in events if e.type == "response.function_call_arguments.delta"
    )
    assert json.loads(arguments) == {"a": 2, "b": 3}
    assert call.arguments == arguments
    (args_done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert args_done.arguments == arguments
    assert [e.output_index for e in events if e.type == "response.output_item.added"] == [0, 1, 2]
    parsed = server.requests(client.script_name)[0].parsed
    assert parsed is not None
    assert parsed.tool_names == ("mcp__mock__add",)
    assert parsed.last_user_text == "add 2 and 3"


async def test_responses_stream_helper_accumulates(
    server: ScriptedModelServer, client: Any
) -> None:
    _script(server, client, [Turn(text="accumulated", tool_calls=[ToolCall(name="f")])])
    async with client.responses.stream(model="gpt-5.5", input="hi") as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_response()
    assert final.output_text == "accumulated"
    assert final.output[1].type == "function_call"


async def test_responses_max_tokens_is_incomplete(server: ScriptedModelServer, client: Any) -> None:
    _script(server, client, [Turn(text="cut off", stop="max_tokens")] * 2)
    stream = await client.responses.create(model="m", input="hi", stream=True)
    events = [event async for event in stream]
    final = events[-1]
    assert final.type == "response.incomplete"
    assert final.response.status == "incomplete"
    assert final.response.incomplete_details.reason == "max_output_tokens"
    reply = await client.responses.create(model="m", input="hi")
    assert reply.status == "incomplete"
    assert reply.incomplete_details.reason == "max_output_tokens"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("context_length", "context_length_exceeded"),
        ("billing", "insufficient_quota"),
        ("server", "server_error"),
    ],
)
async def test_responses_midstream_failure(
    server: ScriptedModelServer, client: Any, error: str, code: str
) -> None:
    fault = Fault(kind="midstream", error=error, after_chunks=2)  # type: ignore[arg-type]
    _script(server, client, [Turn(text="abc", fault=fault)])
    stream = await client.responses.create(model="m", input="hi", stream=True)
    events = [event async for event in stream]
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.failed",
    ]
    failed = events[-1]
    assert failed.sequence_number == 2
    assert failed.response.status == "failed"
    assert failed.response.error.code == code
    assert failed.response.id == events[0].response.id


async def test_responses_non_streaming_and_tool_outputs(
    server: ScriptedModelServer, client: Any
) -> None:
    _script(server, client, [Turn(text="done", reasoning="r")])
    reply = await client.responses.create(
        model="gpt-5.5",
        instructions="be brief",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "add"}]},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "add",
                "arguments": "{}",
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "5"},
        ],
        max_output_tokens=99,
    )
    assert reply.output_text == "done"
    assert reply.status == "completed"
    assert reply.output[0].type == "reasoning"
    parsed = server.requests(client.script_name)[0].parsed
    assert parsed is not None
    assert parsed.protocol == "openai_responses"
    assert parsed.system == "be brief"
    assert parsed.last_user_text == "add"
    assert parsed.max_tokens == 99
    assert parsed.message_count == 3
    assert [(r.call_id, r.output) for r in parsed.tool_results] == [("call_1", "5")]


@pytest.mark.parametrize(
    ("fault", "exc_type", "code", "wording"),
    [
        (
            Fault.http(400, "context_length"),
            openai.BadRequestError,
            "context_length_exceeded",
            "exceeds the context window",
        ),
        (Fault.http(429, retry_after=1), openai.RateLimitError, "rate_limit_exceeded", "try again"),
        (Fault.http(503), openai.InternalServerError, None, "overloaded"),
    ],
)
async def test_responses_http_errors(
    server: ScriptedModelServer,
    client: Any,
    fault: Fault,
    exc_type: type[openai.APIStatusError],
    code: str | None,
    wording: str,
) -> None:
    _script(server, client, [Turn(fault=fault)])
    with pytest.raises(exc_type) as info:
        await client.responses.create(model="m", input="hi", stream=True)
    assert info.value.code == code
    assert wording in info.value.message


async def test_responses_stream_drop_and_truncate(server: ScriptedModelServer, client: Any) -> None:
    _script(
        server,
        client,
        [
            Turn(text="abc", fault=Fault(kind="drop", after_chunks=3)),
            Turn(text="abc", fault=Fault(kind="truncate")),
        ],
    )
    stream = await client.responses.create(model="m", input="hi", stream=True)
    with pytest.raises(openai.APIConnectionError):
        async for _ in stream:
            pass
    stream = await client.responses.create(model="m", input="hi", stream=True)
    types = [event.type async for event in stream]
    assert types[-1] == "response.output_item.done"
    assert "response.completed" not in types


async def test_responses_input_tokens_is_auxiliary(
    server: ScriptedModelServer, client: Any
) -> None:
    _script(server, client, [])
    async with httpx2.AsyncClient(base_url=server.base_url(client.script_name)) as http:
        response = await http.post("/v1/responses/input_tokens", json={"input": "x" * 40})
    assert response.status_code == 200
    assert response.json()["input_tokens"] > 0
    (recorded,) = server.requests(client.script_name)
    assert recorded.parsed is None
