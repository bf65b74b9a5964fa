"""LLMCallBase: argument checks, the call deadline, event folding, per-call logs, and
teardown when the consumer stops early."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from pathlib import Path

import anyio
import pytest

from chia_async import errors
from chia_async.base import LLMCallBase
from chia_async.events import (
    Completed,
    ReasoningDelta,
    SessionStarted,
    StepFinished,
    TextDelta,
    ToolCallFinished,
)
from chia_async.redaction import register_secret
from chia_async.results import QueryResult, Usage
from chia_async.testing import Delay, Hang, ScriptedLLM
from chia_async.tools import ChiaTool

TOOL = ChiaTool.http("http://127.0.0.1:9/mcp", name="calc")


# -- constructor ------------------------------------------------------------------------


def test_unknown_keyword_names_the_parameter() -> None:
    with pytest.raises(TypeError, match="timeout"):
        ScriptedLLM(["x"], timeout=5)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"timeout_seconds": 0}, ValueError, "timeout_seconds"),
        ({"timeout_seconds": "10"}, TypeError, "timeout_seconds"),
        ({"retries": -1}, ValueError, "retries"),
        ({"retries": 2.5}, TypeError, "retries"),
        ({"model": 3}, TypeError, "model"),
        ({"system_message": None}, TypeError, "system_message"),
        ({"logging_level": "DEBUG"}, TypeError, "logging_level"),
        ({"log_dir": 5}, TypeError, "log_dir"),
    ],
)
def test_bad_constructor_values(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        ScriptedLLM(["x"], **kwargs)


def test_reference_common_parameters_and_defaults() -> None:
    import inspect

    params = inspect.signature(LLMCallBase).parameters
    assert list(params)[:7] == [
        "model",
        "system_message",
        "timeout_seconds",
        "retries",
        "logging_name",
        "logging_level",
        "log_dir",
    ]
    assert params["timeout_seconds"].default == 600
    assert params["retries"].default == 3
    assert params["logging_level"].default == 10
    assert params["log_dir"].default is None


def test_base_is_abstract() -> None:
    with pytest.raises(TypeError):
        LLMCallBase()  # type: ignore[abstract]


# -- call arguments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "tools", "exc", "match"),
    [
        (b"bytes", None, TypeError, "user_message must be a str"),
        (None, None, TypeError, "user_message must be a str"),
        ("   ", None, ValueError, "must not be empty"),
        ("hi", "calc", TypeError, "tools must be a list"),
        ("hi", TOOL, TypeError, "single ChiaTool"),
        ("hi", [TOOL, "not a tool"], TypeError, r"tools\[1\] must be a ChiaTool"),
        ("hi", [TOOL, TOOL], ValueError, "share the name"),
        ("hi", 42, TypeError, "tools must be a list"),
    ],
)
def test_bad_call_arguments_fail_before_anything_starts(
    message: object, tools: object, exc: type, match: str
) -> None:
    llm = ScriptedLLM(["never"])
    for call in (llm.stream, llm.prompt, llm.stream_sync):
        with pytest.raises(exc, match=match):
            call(message, tools)  # type: ignore[arg-type]
    with pytest.raises(exc, match=match):
        asyncio.run(llm.aprompt(message, tools))  # type: ignore[arg-type]
    assert llm.calls == []


async def test_tools_reach_the_backend() -> None:
    llm = ScriptedLLM(["ok"])
    await llm.aprompt("hi", [TOOL])
    assert llm.calls[0].tools == (TOOL,)


# -- results ----------------------------------------------------------------------------


async def test_events_fold_into_the_result() -> None:
    llm = ScriptedLLM(
        [
            [
                SessionStarted(session_id="s-1", model="m"),
                ReasoningDelta(text="thinking"),
                "Hel",
                ToolCallFinished(call_id="c1", name="add", arguments={"a": 1}),
                "lo",
                Usage(input_tokens=3, output_tokens=2),
                StepFinished(finish_reason="tool_use"),
                Usage(input_tokens=4, output_tokens=1, cost_usd=0.5),
                StepFinished(finish_reason="end_turn"),
            ]
        ]
    )
    events = [e async for e in llm.stream("hi")]
    assert isinstance(events[-1], Completed)
    assert sum(isinstance(e, Completed) for e in events) == 1
    result = events[-1].result
    assert result.result == "Hello"
    assert result.success is True and result.returncode == 0
    assert result.usage == Usage(input_tokens=7, output_tokens=3, cost_usd=0.5)
    assert result.stop_reason == "end_turn"
    assert result.session is not None and result.session.session_id == "s-1"
    assert result.session.backend == "scripted"
    assert result.events == len(events) - 1
    assert result.duration_s > 0


async def test_aprompt_and_prompt_return_the_same_result_shape() -> None:
    async_result = await ScriptedLLM([["a", "b"]]).aprompt("hi")
    sync_result = ScriptedLLM([["a", "b"]]).prompt("hi")
    assert isinstance(async_result, QueryResult) and isinstance(sync_result, QueryResult)
    assert dataclass_fields(async_result) == dataclass_fields(sync_result)


def dataclass_fields(result: QueryResult) -> dict:
    data = result.to_dict()
    data.pop("duration_s")
    return data


async def test_a_backend_bug_surfaces_as_a_typed_error() -> None:
    class Broken(ScriptedLLM):
        async def _run(self, attempt):  # type: ignore[no-untyped-def]
            raise KeyError("oops")

    with pytest.raises(errors.UnknownError, match="unexpected KeyError") as info:
        await Broken(["x"]).aprompt("hi")
    assert isinstance(info.value.__cause__, KeyError)


# -- deadline ---------------------------------------------------------------------------


async def test_timeout_bounds_the_whole_call() -> None:
    llm = ScriptedLLM([["first", Hang()]], timeout_seconds=0.3)
    started = time.monotonic()
    events = []
    with pytest.raises(errors.TimeoutError) as info:
        async for event in llm.stream("hi"):
            events.append(event)
    elapsed = time.monotonic() - started
    assert 0.25 < elapsed < 2.0
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["first"]
    assert info.value.timeout == 0.3
    assert llm.cancelled == 1 and llm.active == 0


async def test_timeout_includes_retries() -> None:
    # every attempt takes 0.2 s and fails; 0.5 s is not enough for the 4 attempts
    llm = ScriptedLLM(
        [[Delay(0.2), errors.ServerError("n", "x")]] * 4, timeout_seconds=0.5, retries=3
    )
    llm.retry_policy = llm.retry_policy.__class__(retries=3, initial_backoff=0.0)
    started = time.monotonic()
    result = await llm.aprompt("hi")
    assert time.monotonic() - started < 1.5
    assert result.success is False
    assert isinstance(result.error, errors.ChiaError)
    assert len(llm.calls) < 4


async def test_timeout_failure_is_a_result_for_aprompt() -> None:
    llm = ScriptedLLM([Hang()], timeout_seconds=0.2)
    result = await llm.aprompt("hi")
    assert result.success is False and result.returncode == -1 and result.result == ""
    assert isinstance(result.error, errors.TimeoutError)


# -- early stops ------------------------------------------------------------------------


async def test_cancelling_the_consumer_cancels_the_call() -> None:
    llm = ScriptedLLM([["a", Hang()]])

    async def consume() -> None:
        async with llm.stream("hi") as events:
            async for _ in events:
                pass

    with anyio.move_on_after(0.2):
        await consume()
    assert llm.cancelled == 1 and llm.active == 0


async def test_break_out_of_async_for_tears_the_call_down() -> None:
    llm = ScriptedLLM([["a", "b", Hang()]])
    async for event in llm.stream("hi"):
        if isinstance(event, TextDelta):
            break
    gc.collect()
    for _ in range(50):
        if llm.active == 0:
            break
        await asyncio.sleep(0.01)
    assert llm.active == 0 and llm.cancelled == 1


async def test_async_with_closes_deterministically() -> None:
    llm = ScriptedLLM([["a", Hang()]])
    async with llm.stream("hi") as events:
        async for _ in events:
            break
    assert llm.active == 0 and llm.cancelled == 1


async def test_a_stream_not_iterated_starts_nothing() -> None:
    llm = ScriptedLLM(["x"])
    stream = llm.stream("hi")
    await stream.aclose()
    assert llm.calls == []


async def test_no_read_ahead() -> None:
    # the producer hands events over one at a time: after the first event is taken, the
    # attempt has not raced ahead to its end
    llm = ScriptedLLM([["a", "b", "c"]])
    async with llm.stream("hi") as events:
        first = await events.__anext__()
        await asyncio.sleep(0.05)
        assert isinstance(first, TextDelta)
        assert llm.finished == 0
        rest = [e async for e in events]
    assert isinstance(rest[-1], Completed)


# -- logs -------------------------------------------------------------------------------


async def test_log_dir_gets_one_jsonl_file_per_call_with_secrets_redacted(tmp_path: Path) -> None:
    register_secret("hunter2-secret-value")
    llm = ScriptedLLM(
        [
            errors.ServerError("n", "key hunter2-secret-value leaked"),
            ["the key is sk-abcdefgh1234"],
        ],
        log_dir=tmp_path,
        logging_name="logtest",
    )
    llm.retry_policy = llm.retry_policy.__class__(initial_backoff=0.0)
    await llm.aprompt("use hunter2-secret-value please")
    await ScriptedLLM(["second"], log_dir=tmp_path, logging_name="logtest").aprompt("again")
    files = sorted(tmp_path.glob("logtest-*.jsonl"))
    assert len(files) == 2
    text = files[0].read_text() + files[1].read_text()
    assert "hunter2-secret-value" not in text and "sk-abcdefgh1234" not in text
    assert "[REDACTED]" in text
    lines = [json.loads(line) for line in files[0].read_text().splitlines()]
    if "call" not in lines[0] or lines[0]["call"]["message"] != "use [REDACTED] please":
        lines = [json.loads(line) for line in files[1].read_text().splitlines()]
    assert lines[0]["call"]["backend"] == "scripted"
    kinds = [line["event"]["kind"] for line in lines if "event" in line]
    assert kinds == ["retrying", "text_delta", "completed"]
    assert lines[-1]["outcome"] == "completed"
    assert all("t" in line for line in lines)
