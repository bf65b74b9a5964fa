"""ClaudeStreamParser against output captured from the real claude CLI (2.1.197)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chia_async import errors
from chia_async.backends import claude
from chia_async.events import (
    RateLimitStatus,
    Raw,
    SessionStarted,
    StepFinished,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolResult,
)
from chia_async.results import Usage

FIXTURES = Path(__file__).parent.parent / "fixtures" / "cli-samples" / "claude"
NOW = datetime(2026, 11, 24, 16, 30, tzinfo=UTC)


def replay(case: str) -> tuple[claude.ClaudeStreamParser, list, int, str]:
    parser = claude.ClaudeStreamParser("claude_code", now=lambda: NOW)
    events = []
    for line in (FIXTURES / f"{case}.jsonl").read_text().splitlines():
        if line.strip():
            events.extend(parser.feed(json.loads(line)))
    exit_code = int((FIXTURES / f"{case}.exitcode").read_text())
    stderr = (FIXTURES / f"{case}.stderr").read_text()
    return parser, events, exit_code, stderr


ALL_CASES = sorted(p.stem for p in FIXTURES.glob("*.exitcode"))


@pytest.mark.parametrize("case", ALL_CASES)
def test_every_capture_parses_without_errors(case: str) -> None:
    parser, events, _, _ = replay(case)
    for event in events:
        assert type(event).__module__.startswith("chia_async.")


def test_text_turn() -> None:
    parser, events, code, stderr = replay("text")
    assert isinstance(events[0], SessionStarted)
    assert events[0].session_id == "635ac7f1-2924-4322-b7fa-1f21bb58870c"
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["pong from mock"]
    usage = [e for e in events if isinstance(e, Usage)]
    assert usage == [Usage(input_tokens=25, output_tokens=7, cost_usd=0.00030000000000000003)]
    result = parser.outcome(code, stderr)
    assert result["result"] == "pong from mock"


def test_partial_messages_stream_deltas_without_duplicating_the_block() -> None:
    parser, events, code, _ = replay("text_partial")
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) >= 2
    assert "".join(deltas) == parser.outcome(code)["result"]
    assert any(isinstance(e, StepFinished) and e.finish_reason == "end_turn" for e in events)
    # system/status lines are passed through, not dropped
    assert any(isinstance(e, Raw) and e.data.get("subtype") == "status" for e in events)


def test_mcp_tool_call_and_result() -> None:
    parser, events, code, _ = replay("tool_mcp")
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [(e.call_id, e.name) for e in started] == [("toolu_mock_1", "mcp__mock__add")]
    assert finished[0].arguments == {"a": 2, "b": 3}
    assert json.loads(finished[0].raw_arguments) == {"a": 2, "b": 3}
    assert results[0].call_id == "toolu_mock_1"
    assert results[0].output == '{"result":5}'
    assert results[0].executed_by == "backend" and results[0].is_error is False
    assert parser.outcome(code)["result"] == 'The add tool returned: {"result":5}'


def test_denied_tool_is_reported_but_the_run_succeeds() -> None:
    parser, events, code, _ = replay("tool_denied")
    result = parser.outcome(code)
    assert result["permission_denials"][0]["tool_name"] == "mcp__mock__add"


@pytest.mark.parametrize(
    ("case", "cls"),
    [
        ("err_e401", claude.AuthenticationError),
        ("err_e429", claude.RateLimitError),
        ("err_e500", claude.ServerError),
        ("err_e529", claude.ServerError),
        ("err_e529_default_retries", claude.ServerError),
        ("err_ctx", claude.ContextLengthExceededError),
        ("err_maxtok", claude.MaxOutputTokensError),
        ("pitfall_resume_other_cwd", claude.InvalidRequestError),
        ("pitfall_allowedTools_swallows_prompt", claude.UnknownClaudeError),
    ],
)
def test_failures_are_classified(case: str, cls: type) -> None:
    parser, _, code, stderr = replay(case)
    with pytest.raises(cls) as info:
        parser.outcome(code, stderr)
    error = info.value
    assert type(error) is cls
    assert error.exit_code == code
    assert isinstance(error, errors.ChiaError)


def test_context_length_is_an_invalid_request() -> None:
    parser, _, code, _ = replay("err_ctx")
    with pytest.raises(claude.InvalidRequestError, match="Prompt is too long"):
        parser.outcome(code)


def test_rate_limit_reset_falls_back_to_the_cli_retry_delay() -> None:
    parser, _, code, _ = replay("err_e429")
    with pytest.raises(claude.RateLimitError) as info:
        parser.outcome(code)
    assert info.value.reset_time == NOW + timedelta(milliseconds=1074.9578537828484)
    assert "rate limit of 50 requests per minute" in info.value.raw_message


def test_max_tokens_keeps_the_partial_text() -> None:
    parser, _, code, _ = replay("err_maxtok")
    with pytest.raises(claude.MaxOutputTokensError) as info:
        parser.outcome(code)
    assert info.value.partial_text == "This answer is cut off because it hit the max"


def test_unknown_failure_keeps_the_stderr_tail() -> None:
    parser, _, code, stderr = replay("pitfall_allowedTools_swallows_prompt")
    with pytest.raises(claude.UnknownClaudeError) as info:
        parser.outcome(code, stderr)
    assert "Input must be provided" in info.value.stderr


def test_recovered_429_is_a_success() -> None:
    parser, events, code, _ = replay("err_e429x1_recovers")
    assert parser.outcome(code)["is_error"] is False


def test_subscription_limit_with_rejected_rate_limit_event() -> None:
    parser = claude.ClaudeStreamParser("claude_code", now=lambda: NOW)
    records = [
        {"type": "system", "subtype": "init", "session_id": "s1", "model": "m"},
        {
            "type": "rate_limit_event",
            "rate_limit_info": {
                "status": "rejected",
                "resetsAt": 1795564800,
                "rateLimitType": "five_hour",
            },
        },
        {
            "type": "assistant",
            "error": "rate_limit",
            "message": {
                "model": "<synthetic>",
                "content": [
                    {
                        "type": "text",
                        "text": "You've hit your limit · resets 4pm (America/Los_Angeles)",
                    }
                ],
            },
        },
        {
            "type": "result",
            "subtype": "success",
            "is_error": True,
            "api_error_status": None,
            "result": "You've hit your limit · resets 4pm (America/Los_Angeles)",
        },
    ]
    events = [e for r in records for e in parser.feed(r)]
    status = [e for e in events if isinstance(e, RateLimitStatus)]
    assert status[0].status == "rejected" and status[0].limit_type == "five_hour"
    with pytest.raises(claude.RateLimitError) as info:
        parser.outcome(1)
    assert info.value.reset_time == datetime.fromtimestamp(1795564800, UTC)


def test_subscription_limit_from_text_only() -> None:
    parser = claude.ClaudeStreamParser("claude_code", now=lambda: NOW)
    parser.feed(
        {
            "type": "result",
            "subtype": "success",
            "is_error": True,
            "result": "You've hit your limit · resets 4pm (America/Los_Angeles)",
        }
    )
    with pytest.raises(claude.RateLimitError) as info:
        parser.outcome(1)
    assert info.value.reset_time == datetime(2026, 11, 25, 0, 0, tzinfo=UTC)


def test_informational_rate_limit_event_is_not_a_failure() -> None:
    parser, _, code, _ = replay("text")
    events = parser.feed(
        {
            "type": "rate_limit_event",
            "rate_limit_info": {"status": "allowed_warning", "utilization": 0.8},
        }
    )
    assert events == [RateLimitStatus(status="allowed_warning", utilization=0.8)]
    assert parser.outcome(code)["result"] == "pong from mock"


def test_missing_result_record_is_a_failure() -> None:
    parser = claude.ClaudeStreamParser("claude_code")
    parser.feed({"type": "system", "subtype": "init", "session_id": "s1"})
    parser.feed({"type": "assistant", "message": {"content": [{"type": "text", "text": "hal"}]}})
    with pytest.raises(claude.UnknownClaudeError, match="without a result record"):
        parser.outcome(0)


def test_unknown_records_pass_through_as_raw() -> None:
    parser = claude.ClaudeStreamParser("claude_code")
    record = {"type": "brand_new_thing", "x": 1}
    assert parser.feed(record) == [Raw(source="claude", data=record)]


def test_success_flag_with_nonzero_exit_is_a_failure() -> None:
    parser, _, _, _ = replay("text")
    with pytest.raises(errors.ChiaError):
        parser.outcome(1)
