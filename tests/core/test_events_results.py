"""Events and results: frozen, slotted, picklable, JSON round trip, reference signatures."""

from __future__ import annotations

import dataclasses
import inspect
import json
import pickle
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chia_async import errors, events
from chia_async.events import TurnEvent
from chia_async.results import (
    ClaudeCodeQueryResult,
    CodexQueryResult,
    QueryResult,
    SessionRef,
    Usage,
)

REFERENCE = Path(__file__).parent.parent / "fixtures" / "reference" / "chia-models-api.txt"
WHEN = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

RESULTS = [
    QueryResult("answer", 0, "", "{}", True, usage=Usage(input_tokens=5), stop_reason="end_turn"),
    ClaudeCodeQueryResult(
        "answer",
        0,
        "err",
        "raw",
        True,
        b"\x00transcript\xff",
        "/h/.claude/projects/-w/s.jsonl",
        session=SessionRef(backend="claude_code", session_id="s", cwd="/w"),
    ),
    CodexQueryResult(
        "answer",
        1,
        "",
        "",
        False,
        "thread-1",
        {"sessions/rollout.jsonl": b"{}\n"},
        ("sessions/rollout.jsonl",),
        error=errors.ServerError("n", "boom", retry_after=2),
    ),
]

EVENTS: list[TurnEvent] = [
    events.SessionStarted(session_id="s", backend="claude_code", model="m", cwd="/w", tools=("a",)),
    events.TextDelta(text="hé"),
    events.ReasoningDelta(text="hmm"),
    events.ToolCallStarted(call_id="c1", name="add"),
    events.ToolCallFinished(
        call_id="c1",
        name="add",
        arguments={"a": [1, {"b": None}]},
        raw_arguments='{"a": [1, {"b": null}]}',
    ),
    events.ToolResult(call_id="c1", name="add", output="5", is_error=False, executed_by="backend"),
    events.FileChange(path="src/x.py", change="add", diff="+x"),
    Usage(
        input_tokens=1,
        output_tokens=2,
        cache_read_tokens=3,
        cache_write_tokens=4,
        reasoning_tokens=5,
        cost_usd=0.25,
    ),
    events.RateLimitStatus(
        status="rejected", reset_time=WHEN, limit_type="five_hour", utilization=1.0
    ),
    events.Retrying(attempt=2, delay=1.5, error=errors.RateLimitError("n", WHEN, "slow down")),
    events.StepFinished(finish_reason="tool_use", usage=Usage(output_tokens=1), step=1),
    events.Raw(source="claude", data={"type": "new_thing", "x": [1, 2]}),
    events.Raw(source="codex:stdout", data="not json"),
    *[events.Completed(result=r) for r in RESULTS],
]


def test_every_event_kind_is_covered() -> None:
    kinds = {type(e) for e in EVENTS}
    union = set(events.AnyEvent.__args__)  # type: ignore[attr-defined]
    assert kinds == union


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_event_json_round_trip(event: TurnEvent) -> None:
    data = json.loads(json.dumps(event.to_dict()))
    assert data["kind"] == event.kind
    back = TurnEvent.from_dict(data)
    assert type(back) is type(event)
    assert back == event


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_event_pickles(event: TurnEvent) -> None:
    assert pickle.loads(pickle.dumps(event)) == event


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_events_are_frozen_slotted_and_keyword_only(event: TurnEvent) -> None:
    assert not hasattr(event, "__dict__")
    field = dataclasses.fields(event)[-1].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(event, field, None)
    with pytest.raises(TypeError):
        type(event)("positional")  # type: ignore[call-arg]


def test_from_dict_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown TurnEvent kind"):
        TurnEvent.from_dict({"kind": "nope"})
    with pytest.raises(TypeError):
        TurnEvent.from_dict(["text_delta"])  # type: ignore[arg-type]


@pytest.mark.parametrize("result", RESULTS, ids=lambda r: type(r).__name__)
def test_result_round_trips(result: QueryResult) -> None:
    back = QueryResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert type(back) is type(result)
    assert back == result
    assert pickle.loads(pickle.dumps(result)) == result
    if result.error is not None:
        assert back.error == result.error


def test_results_keep_the_reference_positional_signatures() -> None:
    text = REFERENCE.read_text()
    for cls in (ClaudeCodeQueryResult, CodexQueryResult):
        match = re.search(rf"class chia\.models\.\w+\.{cls.__name__}\((.*?)\)\[source\]", text)
        assert match, cls
        names = re.findall(r"(?:^|,\s*)(\w+):", match.group(1))
        positional = [
            name
            for name, p in inspect.signature(cls).parameters.items()
            if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        ]
        assert positional == names
    assert ClaudeCodeQueryResult("r", 0, "", "", True, b"t").session_transcript == b"t"
    assert QueryResult("r", 0, "", "").success is False  # the reference's default


def test_result_extras_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        QueryResult("r", 0, "", "", True, Usage())  # type: ignore[misc]


def test_usage_adds_up() -> None:
    total = Usage(input_tokens=1, output_tokens=2) + Usage(input_tokens=3, cost_usd=0.1)
    assert total == Usage(input_tokens=4, output_tokens=2, cost_usd=0.1)
    assert total.total_tokens == 6
    assert (Usage() + Usage()).cost_usd is None


def test_results_of_backends_not_yet_imported_decode_in_a_fresh_process() -> None:
    import subprocess
    import sys

    code = """
import json, sys
from chia_async.results import QueryResult
for kind in ("gemini_cli_query_result", "opencode_query_result"):
    data = {"kind": kind, "result": "ok", "returncode": 0, "stderr": "",
            "stream_result": "", "success": True}
    result = QueryResult.from_dict(data)
    assert type(result).__name__ in ("GeminiCLIQueryResult", "OpenCodeQueryResult"), result
print("decoded")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "decoded" in out.stdout, out.stderr
