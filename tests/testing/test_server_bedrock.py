"""Bedrock Converse / ConverseStream of the scripted server, checked with botocore itself.

The renderer tests decode frames and error responses with botocore's own event-stream
buffer and parsers; the end-to-end tests drive the real aioboto3 ``bedrock-runtime``
client against the server on loopback. Nothing here reaches the network.
"""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aioboto3
import botocore.config
import botocore.session
import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer, EventStreamMessage
from botocore.exceptions import ClientError, EventStreamError
from botocore.parsers import EventStreamJSONParser, RestJSONParser

from chia_async.testing.protocols.base import BodyReply, StreamReply
from chia_async.testing.protocols.bedrock import BedrockProtocol, bedrock_fault
from chia_async.testing.protocols.eventstream import (
    corrupt_frame,
    encode_frame,
    event_frame,
    exception_frame,
)
from chia_async.testing.script import (
    Fault,
    ParsedRequest,
    ToolCall,
    ToolResultSeen,
    Turn,
)

pytestmark = pytest.mark.timeout(60)

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
PROFILE_ARN = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"

_SERVICE_MODEL = botocore.session.get_session().get_service_model("bedrock-runtime")
_STREAM_SHAPE = _SERVICE_MODEL.operation_model("ConverseStream").output_shape.members["stream"]


def _request(*, stream: bool, model: str = MODEL) -> ParsedRequest:
    return ParsedRequest(protocol="bedrock", model=model, stream=stream)


def _messages(data: bytes, *, step: int | None = None) -> list[EventStreamMessage]:
    """Decode frames with botocore, optionally fed in ``step``-byte pieces."""
    buffer = EventStreamBuffer()
    out: list[EventStreamMessage] = []
    pieces = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        buffer.add_data(piece)
        out.extend(buffer)
    return out


def _parse_events(data: bytes) -> list[dict[str, Any]]:
    """What botocore's EventStream yields for these frames (raising as it would)."""
    parser = EventStreamJSONParser()
    events = []
    for message in _messages(data):
        response = message.to_response_dict()
        parsed = parser.parse(response, _STREAM_SHAPE)
        if response["status_code"] != 200:
            raise EventStreamError(parsed, "ConverseStream")
        events.append(parsed)
    return events


def _stream_bytes(reply: StreamReply) -> bytes:
    return b"".join([*reply.chunks, *reply.end])


# -- event-stream framing ------------------------------------------------------------------


def test_frames_decode_with_botocore_in_any_chunking() -> None:
    marker = uuid.uuid4()
    first = encode_frame(
        {
            ":event-type": "messageStart",
            "flag-true": True,
            "flag-false": False,
            "small": -7,
            "large": 2**40,
            "blob": b"\x00\x01",
            "id": marker,
        },
        b'{"role":"assistant"}',
    )
    second = event_frame("contentBlockStop", b'{"contentBlockIndex":0}')
    for step in (None, 1, 7):
        messages = _messages(first + second, step=step)
        assert [m.payload for m in messages] == [
            b'{"role":"assistant"}',
            b'{"contentBlockIndex":0}',
        ]
        headers = messages[0].headers
        assert headers[":event-type"] == "messageStart"
        assert headers["flag-true"] is True
        assert headers["flag-false"] is False
        assert headers["small"] == -7
        assert headers["large"] == 2**40
        assert headers["blob"] == b"\x00\x01"
        assert headers["id"] == marker.bytes
        assert messages[1].headers[":message-type"] == "event"
        assert messages[1].headers[":content-type"] == "application/json"


def test_corrupted_frame_fails_botocore_crc_check() -> None:
    good = event_frame("contentBlockStop", b'{"contentBlockIndex":0}')
    bad = corrupt_frame(good)
    assert len(bad) == len(good)
    assert bad[:12] == good[:12]  # prelude (and its CRC) untouched: only the message CRC lies
    with pytest.raises(ChecksumMismatch):
        _messages(good + bad)
    with pytest.raises(ValueError):
        corrupt_frame(b"short")


def test_frame_length_fields() -> None:
    frame = event_frame("x", b"{}")
    total, headers_length = struct.unpack("!II", frame[:8])
    assert total == len(frame)
    assert 12 + headers_length + 2 + 4 == total


# -- rendering, decoded by botocore --------------------------------------------------------


def test_stream_render_decodes_to_converse_stream_events() -> None:
    turn = Turn(
        reasoning="think hard",
        text="Hello there",
        tool_calls=[ToolCall(name="get_weather", arguments={"city": "Paris"}, id="tooluse_1")],
        input_tokens=12,
        output_tokens=7,
        chunks=3,
    )
    reply = BedrockProtocol().render(turn, _request(stream=True))
    assert isinstance(reply, StreamReply)
    assert reply.headers["content-type"] == "application/vnd.amazon.eventstream"
    events = _parse_events(_stream_bytes(reply))
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart"
    assert kinds[-2:] == ["messageStop", "metadata"]
    assert events[0]["messageStart"] == {"role": "assistant"}

    reasoning = "".join(
        e["contentBlockDelta"]["delta"]["reasoningContent"].get("text", "")
        for e in events
        if "reasoningContent" in e.get("contentBlockDelta", {}).get("delta", {})
    )
    assert reasoning == "think hard"
    text = "".join(
        e["contentBlockDelta"]["delta"].get("text", "") for e in events if "contentBlockDelta" in e
    )
    assert text == "Hello there"
    starts = [e["contentBlockStart"] for e in events if "contentBlockStart" in e]
    assert starts == [
        {
            "start": {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather"}},
            "contentBlockIndex": 2,
        }
    ]
    fragments = [
        e["contentBlockDelta"]["delta"]["toolUse"]["input"]
        for e in events
        if "toolUse" in e.get("contentBlockDelta", {}).get("delta", {})
    ]
    assert len(fragments) > 1
    assert json.loads("".join(fragments)) == {"city": "Paris"}
    stops = [e["contentBlockStop"]["contentBlockIndex"] for e in events if "contentBlockStop" in e]
    assert stops == [0, 1, 2]
    assert events[-2]["messageStop"]["stopReason"] == "tool_use"
    assert events[-1]["metadata"]["usage"] == {
        "inputTokens": 12,
        "outputTokens": 7,
        "totalTokens": 19,
    }


def test_malformed_chunk_is_a_frame_with_a_bad_crc() -> None:
    reply = BedrockProtocol().render(Turn(text="hi"), _request(stream=True))
    assert isinstance(reply, StreamReply)
    with pytest.raises(ChecksumMismatch):
        _messages(reply.malformed_chunk)


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault(kind="midstream", error="rate_limit"), "throttlingException"),
        (Fault(kind="midstream", error="overloaded"), "serviceUnavailableException"),
        (Fault(kind="midstream", error="server"), "internalServerException"),
        (Fault(kind="midstream", error="context_length"), "validationException"),
        (Fault(kind="midstream", error="permission"), "modelStreamErrorException"),
    ],
)
def test_midstream_exception_frame_raises_event_stream_error(fault: Fault, code: str) -> None:
    frame = BedrockProtocol().render_midstream_error(fault, _request(stream=True))
    with pytest.raises(EventStreamError) as info:
        _parse_events(event_frame("messageStart", b'{"role":"assistant"}') + frame)
    assert info.value.response["Error"]["Code"] == code
    assert info.value.response["Error"]["Message"]


def test_unknown_exception_type_still_raises() -> None:
    # An exception member the model does not know falls back to the :error-code headers path;
    # botocore must still raise rather than yield an event.
    frame = exception_frame("brandNewException", b'{"message":"x"}')
    with pytest.raises(EventStreamError):
        _parse_events(frame)


def _parse_error(reply: BodyReply) -> dict[str, Any]:
    parsed: dict[str, Any] = RestJSONParser().parse(
        {"status_code": reply.status, "headers": dict(reply.headers), "body": reply.body},
        _SERVICE_MODEL.operation_model("Converse").output_shape,
    )
    return parsed


@pytest.mark.parametrize(
    ("fault", "code", "status"),
    [
        (Fault(kind="http_error", error="rate_limit"), "ThrottlingException", 429),
        (Fault(kind="http_error", error="overloaded"), "ServiceUnavailableException", 503),
        (Fault(kind="http_error", error="server"), "InternalServerException", 500),
        (Fault(kind="http_error", error="authentication"), "UnrecognizedClientException", 403),
        (Fault(kind="http_error", error="permission"), "AccessDeniedException", 403),
        (Fault(kind="http_error", error="billing"), "AccessDeniedException", 403),
        (Fault(kind="http_error", error="invalid_request"), "ValidationException", 400),
        (Fault(kind="http_error", error="context_length"), "ValidationException", 400),
        (Fault(kind="http_error", error="not_found"), "ResourceNotFoundException", 404),
        (Fault.http(408), "ModelTimeoutException", 408),
        (bedrock_fault("ModelNotReadyException"), "ModelNotReadyException", 429),
        (bedrock_fault("ServiceQuotaExceededException"), "ServiceQuotaExceededException", 400),
    ],
)
def test_error_bodies_parse_with_botocore(fault: Fault, code: str, status: int) -> None:
    reply = BedrockProtocol().render_error(fault, _request(stream=False))
    assert reply.status == status
    assert reply.headers["x-amzn-errortype"].startswith(code + ":http://internal.amazon.com/")
    parsed = _parse_error(reply)
    assert parsed["Error"]["Code"] == code
    assert parsed["Error"]["Message"]
    assert parsed["ResponseMetadata"]["HTTPStatusCode"] == status


def test_error_overrides() -> None:
    protocol = BedrockProtocol()
    reply = protocol.render_error(
        Fault.http(429, message="slow down", retry_after=1.5, headers={"X-Extra": "1"}), None
    )
    assert reply.headers["retry-after"] == "2"
    assert reply.headers["retry-after-ms"] == "1500"
    assert reply.headers["x-extra"] == "1"
    assert json.loads(reply.body) == {"message": "slow down"}
    raw = protocol.render_error(Fault.http(500, body=b"not json at all"), None)
    assert raw.body == b"not json at all"
    context = _parse_error(protocol.render_error(Fault.http(400, "context_length"), None))
    assert context["Error"]["Message"] == "Input is too long for requested model."


def test_parse_reads_converse_request() -> None:
    body = {
        "system": [{"text": "be brief"}, {"cachePoint": {"type": "default"}}],
        "messages": [
            {"role": "user", "content": [{"text": "weather?"}]},
            {
                "role": "assistant",
                "content": [{"toolUse": {"toolUseId": "t1", "name": "w", "input": {}}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "toolResult": {
                            "toolUseId": "t1",
                            "content": [{"text": "sunny"}, {"json": {"c": 21}}],
                        }
                    },
                    {
                        "toolResult": {
                            "toolUseId": "t2",
                            "content": [{"text": "boom"}],
                            "status": "error",
                        }
                    },
                ],
            },
        ],
        "inferenceConfig": {"maxTokens": 321},
        "toolConfig": {"tools": [{"toolSpec": {"name": "w"}}, {"cachePoint": {}}]},
    }
    protocol = BedrockProtocol()
    path = "/model/" + PROFILE_ARN.replace(":", "%3A").replace("/", "%2F") + "/converse-stream"
    assert protocol.match("POST", path)
    assert not protocol.match("GET", path)
    assert not protocol.match("POST", "/v1/messages")
    parsed = protocol.parse("POST", path, "", body)
    assert parsed is not None
    assert parsed.model == PROFILE_ARN
    assert parsed.stream
    assert parsed.system == "be brief"
    assert parsed.last_user_text == "weather?"
    assert parsed.tool_names == ("w",)
    assert parsed.tool_results == (
        ToolResultSeen(call_id="t1", output='sunny\n{"c":21}'),
        ToolResultSeen(call_id="t2", output="boom", is_error=True),
    )
    assert parsed.message_count == 3
    assert parsed.max_tokens == 321
    assert protocol.parse("POST", f"/model/{MODEL}/count-tokens", "", {}) is None


# -- end to end: the real aioboto3 client --------------------------------------------------


@pytest.fixture(autouse=True)
def _offline_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    # No instance metadata, profile or config file lookups: credentials come from the test.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    server_module = pytest.importorskip("chia_async.testing.server")
    with server_module.ScriptedModelServer() as srv:
        yield srv


@asynccontextmanager
async def _client(srv: Any, name: str) -> AsyncIterator[Any]:
    session = aioboto3.Session()
    async with session.client(
        "bedrock-runtime",
        endpoint_url=srv.base_url(name),
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=botocore.config.Config(
            # botocore's "max_attempts" counts retries (1 would mean two requests);
            # total_max_attempts=1 is the one that turns retries off.
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=10,
        ),
    ) as client:
        yield client


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"text": text}]}


async def _collect(response: dict[str, Any]) -> list[dict[str, Any]]:
    return await _drain(response, into=[])


async def _drain(response: dict[str, Any], *, into: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Appends as it goes so that a test can see what arrived before the stream raised, and
    # closes the stream either way: a stream abandoned on an error keeps its connection.
    stream = response["stream"]
    try:
        async for event in stream:
            into.append(event)
    finally:
        stream.close()
    return into


async def test_converse_text_turn(server: Any) -> None:
    server.script("br-text", [Turn(text="Hello from Bedrock", input_tokens=11, output_tokens=3)])
    async with _client(server, "br-text") as client:
        response = await client.converse(
            modelId=MODEL,
            system=[{"text": "be nice"}],
            messages=[_user("hi")],
            inferenceConfig={"maxTokens": 64},
        )
    assert response["output"]["message"] == {
        "role": "assistant",
        "content": [{"text": "Hello from Bedrock"}],
    }
    assert response["stopReason"] == "end_turn"
    assert response["usage"] == {"inputTokens": 11, "outputTokens": 3, "totalTokens": 14}
    assert response["metrics"]["latencyMs"] >= 1
    (recorded,) = server.requests("br-text")
    assert recorded.parsed.model == MODEL
    assert recorded.parsed.system == "be nice"
    assert recorded.parsed.last_user_text == "hi"
    assert recorded.parsed.max_tokens == 64
    assert not recorded.parsed.stream


async def test_converse_stream_tool_use_and_follow_up(server: Any) -> None:
    def script(request: ParsedRequest) -> Turn:
        if not request.tool_results:
            return Turn(
                reasoning="need the weather",
                tool_calls=[ToolCall(name="get_weather", arguments={"city": "Paris", "days": 2})],
                chunks=4,
            )
        (result,) = request.tool_results
        return Turn(text=f"result for {result.call_id}: {result.output}")

    server.script("br-tools", script)
    tools = {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {}}}}]}
    async with _client(server, "br-tools") as client:
        response = await client.converse_stream(
            modelId=PROFILE_ARN, messages=[_user("weather in Paris?")], toolConfig=tools
        )
        events = await _collect(response)

        tool_use: dict[str, Any] = {}
        fragments: list[str] = []
        for event in events:
            if "contentBlockStart" in event:
                tool_use = dict(event["contentBlockStart"]["start"]["toolUse"])
            delta = event.get("contentBlockDelta", {}).get("delta", {})
            if "toolUse" in delta:
                fragments.append(delta["toolUse"]["input"])
        assert tool_use["name"] == "get_weather"
        assert json.loads("".join(fragments)) == {"city": "Paris", "days": 2}
        stop = next(e["messageStop"] for e in events if "messageStop" in e)
        assert stop["stopReason"] == "tool_use"
        signature = [
            e["contentBlockDelta"]["delta"]["reasoningContent"]["signature"]
            for e in events
            if "signature"
            in e.get("contentBlockDelta", {}).get("delta", {}).get("reasoningContent", {})
        ]
        assert len(signature) == 1
        assert "metadata" in events[-1]

        follow_up = await client.converse(
            modelId=PROFILE_ARN,
            messages=[
                _user("weather in Paris?"),
                {
                    "role": "assistant",
                    "content": [
                        {
                            "toolUse": {
                                "toolUseId": tool_use["toolUseId"],
                                "name": "get_weather",
                                "input": {"city": "Paris", "days": 2},
                            }
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "toolResult": {
                                "toolUseId": tool_use["toolUseId"],
                                "content": [{"text": "sunny"}],
                            }
                        }
                    ],
                },
            ],
            toolConfig=tools,
        )
    assert follow_up["output"]["message"]["content"] == [
        {"text": f"result for {tool_use['toolUseId']}: sunny"}
    ]
    first, again = server.requests("br-tools")
    assert first.parsed.model == PROFILE_ARN  # ':' and '/' survived the URL encoding
    assert first.parsed.stream
    assert first.parsed.tool_names == ("get_weather",)
    assert again.parsed.tool_results == (
        ToolResultSeen(call_id=tool_use["toolUseId"], output="sunny"),
    )


async def test_converse_non_stream_tool_use_and_reasoning(server: Any) -> None:
    server.script(
        "br-tools-body",
        [Turn(reasoning="hmm", text="checking", tool_calls=[ToolCall(name="f", id="tu_9")])],
    )
    async with _client(server, "br-tools-body") as client:
        response = await client.converse(modelId=MODEL, messages=[_user("go")])
    content = response["output"]["message"]["content"]
    assert content[0]["reasoningContent"]["reasoningText"]["text"] == "hmm"
    assert content[0]["reasoningContent"]["reasoningText"]["signature"]
    assert content[1] == {"text": "checking"}
    assert content[2] == {"toolUse": {"toolUseId": "tu_9", "name": "f", "input": {}}}
    assert response["stopReason"] == "tool_use"


@pytest.mark.parametrize("stream", [False, True])
async def test_stop_reasons(server: Any, stream: bool) -> None:
    name = f"br-stops-{stream}"
    server.script(
        name,
        [
            Turn(text="cut sho", stop="max_tokens"),
            Turn(text="", stop="content_filter"),
            Turn(block_reason="SAFETY"),
        ],
    )
    reasons = []
    async with _client(server, name) as client:
        for _ in range(3):
            if stream:
                events = await _collect(
                    await client.converse_stream(modelId=MODEL, messages=[_user("x")])
                )
                reasons.append(
                    next(e["messageStop"]["stopReason"] for e in events if "messageStop" in e)
                )
            else:
                response = await client.converse(modelId=MODEL, messages=[_user("x")])
                reasons.append(response["stopReason"])
    assert reasons == ["max_tokens", "content_filtered", "guardrail_intervened"]


@pytest.mark.parametrize(
    ("fault", "code", "status", "modeled"),
    [
        (Fault.http(429), "ThrottlingException", 429, True),
        (Fault.http(503), "ServiceUnavailableException", 503, True),
        (Fault.http(500), "InternalServerException", 500, True),
        (
            Fault(kind="http_error", error="authentication"),
            "UnrecognizedClientException",
            403,
            False,
        ),
        (Fault.http(403), "AccessDeniedException", 403, True),
        (Fault.http(400), "ValidationException", 400, True),
        (Fault.http(400, "context_length"), "ValidationException", 400, True),
        (Fault.http(404), "ResourceNotFoundException", 404, True),
        (Fault.http(408), "ModelTimeoutException", 408, True),
        (Fault.http(424), "ModelErrorException", 424, True),
        (Fault(kind="http_error", error="billing"), "AccessDeniedException", 403, True),
        (bedrock_fault("ModelNotReadyException"), "ModelNotReadyException", 429, True),
        (
            bedrock_fault("ServiceQuotaExceededException"),
            "ServiceQuotaExceededException",
            400,
            True,
        ),
    ],
)
async def test_http_errors_raise_modeled_exceptions(
    server: Any, fault: Fault, code: str, status: int, modeled: bool
) -> None:
    name = f"br-err-{code}-{status}-{fault.error}"
    server.script(name, [Turn(fault=fault), Turn(fault=fault)])
    async with _client(server, name) as client:
        with pytest.raises(ClientError) as info:
            await client.converse(modelId=MODEL, messages=[_user("x")])
        if modeled:
            assert isinstance(info.value, getattr(client.exceptions, code))
        # The stream operation fails the same way, before any event.
        with pytest.raises(ClientError) as stream_info:
            await client.converse_stream(modelId=MODEL, messages=[_user("x")])
    for error in (info.value, stream_info.value):
        assert error.response["Error"]["Code"] == code
        assert error.response["Error"]["Message"]
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert len(server.requests(name)) == 2  # botocore did not retry


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("rate_limit", "throttlingException"),
        ("server", "internalServerException"),
        ("overloaded", "serviceUnavailableException"),
        ("not_found", "modelStreamErrorException"),
    ],
)
async def test_midstream_exception_raised_while_iterating(
    server: Any, error: Any, code: str
) -> None:
    name = f"br-mid-{error}"
    server.script(
        name,
        [
            Turn(
                text="partial answer",
                chunks=3,
                fault=Fault(kind="midstream", error=error, after_chunks=2),
            )
        ],
    )
    seen: list[dict[str, Any]] = []
    async with _client(server, name) as client:
        response = await client.converse_stream(modelId=MODEL, messages=[_user("x")])
        with pytest.raises(EventStreamError) as info:
            await _drain(response, into=seen)
    assert info.value.response["Error"]["Code"] == code
    assert [next(iter(e)) for e in seen] == ["messageStart", "contentBlockDelta"]


async def test_malformed_frame_fails_the_stream(server: Any) -> None:
    server.script("br-malformed", [Turn(text="abc", fault=Fault(kind="malformed", after_chunks=1))])
    async with _client(server, "br-malformed") as client:
        response = await client.converse_stream(modelId=MODEL, messages=[_user("x")])
        with pytest.raises(ChecksumMismatch):
            await _collect(response)


async def test_truncated_stream_lacks_stop_and_metadata(server: Any) -> None:
    server.script("br-truncate", [Turn(text="abcd", fault=Fault(kind="truncate"))])
    async with _client(server, "br-truncate") as client:
        events = await _collect(await client.converse_stream(modelId=MODEL, messages=[_user("x")]))
    kinds = [next(iter(e)) for e in events]
    # botocore ends quietly: spotting the missing messageStop is the caller's job.
    assert kinds[0] == "messageStart"
    assert "contentBlockStop" in kinds
    assert "messageStop" not in kinds
    assert "metadata" not in kinds


async def test_count_tokens_is_auxiliary(server: Any) -> None:
    server.script("br-count", [])
    async with _client(server, "br-count") as client:
        response = await client.count_tokens(
            modelId=MODEL,
            input={"converse": {"messages": [_user("a" * 40)], "system": [{"text": "b" * 8}]}},
        )
    assert response["inputTokens"] == 12
    (recorded,) = server.requests("br-count")
    assert recorded.parsed is None
