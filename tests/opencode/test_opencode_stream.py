"""OpenCodeStreamParser, the error classification and the export reader, on output captured
from the real opencode CLI (1.18.33, tests/fixtures/cli-samples/opencode)."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chia_async import errors
from chia_async.backends import opencode
from chia_async.events import (
    Raw,
    SessionStarted,
    StepFinished,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolResult,
)
from chia_async.results import Usage

FIXTURES = Path(__file__).parent.parent / "fixtures" / "cli-samples" / "opencode"
NOW = datetime(2026, 11, 24, 16, 30, tzinfo=UTC)
ALL_CASES = sorted(
    p.stem for p in FIXTURES.glob("*.exitcode") if (FIXTURES / f"{p.stem}.jsonl").exists()
)

# Captured from opencode 1.18.33 with --print-logs --log-level ERROR, `-m mock/nope` (an
# unknown model): stdout's error names only a reference, the cause is in the log line.
UNKNOWN_MODEL_STDOUT = (
    '{"type":"error","timestamp":1795549910725,"sessionID":"ses_df0e2b841ffelpRdqvsuJAwjng",'
    '"error":{"name":"UnknownError","data":{"message":"Unexpected server error. Check server '
    'logs for details.","ref":"err_79ab6883"}}}'
)
UNKNOWN_MODEL_STDERR = (
    "timestamp=2026-11-24T19:51:50.721Z level=ERROR run=a5d47cf4 message=failed "
    'ref=err_79ab6883 error="ProviderModelNotFoundError: Model not found: mock/nope." '
    'cause="ProviderModelNotFoundError: Model not found: mock/nope.\\n    at <anonymous> '
    '(/$bunfs/root/chunk-dn9bw1yz.js:439:94601)"\n'
)


def replay(case: str) -> tuple[opencode.OpenCodeStreamParser, list, int | None, str, str]:
    parser = opencode.OpenCodeStreamParser("opencode", model="mock/mock-model", cwd="/w", now=NOW)
    stdout = (FIXTURES / f"{case}.jsonl").read_text()
    events = []
    for line in stdout.splitlines():
        if line.strip():
            events.extend(parser.feed(json.loads(line)))
    raw_code = (FIXTURES / f"{case}.exitcode").read_text().strip()
    code = int(raw_code) if raw_code.lstrip("-").isdigit() else None  # "timeout(25.0s) killed"
    stderr = (FIXTURES / f"{case}.stderr").read_text()
    return parser, events, code, stderr, stdout


@pytest.mark.parametrize("case", ALL_CASES)
def test_every_capture_parses_and_agrees_with_the_module_parsers(case: str) -> None:
    parser, events, code, stderr, stdout = replay(case)
    assert all(type(e).__module__.startswith("chia_async.") for e in events)
    assert parser.state.session_id == opencode.parse_session_id(stdout)
    if parser.state.session_id:
        assert events[0] == SessionStarted(
            session_id=parser.state.session_id,
            backend="opencode",
            model="mock/mock-model",
            cwd="/w",
        )
        assert sum(isinstance(e, SessionStarted) for e in events) == 1
    first_error = opencode.parse_run_error(stdout)
    assert first_error == (parser.state.errors[0] if parser.state.errors else None)
    # every error record is passed on, never dropped
    assert sum(isinstance(e, Raw) for e in events) == len(parser.state.errors)


@pytest.mark.parametrize(
    "case",
    [
        "text",
        "text_anthropic_provider",
        "text_openai_responses_provider",
        "text_pwd_check",
        "resume_same_home",
        "resume_fresh_home_db_copy",
        "resume_fresh_home_export_import",
    ],
)
def test_text_turns(case: str) -> None:
    parser, events, code, stderr, _ = replay(case)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["pong from mock"]
    assert [e for e in events if isinstance(e, Usage)] == [
        Usage(input_tokens=25, output_tokens=7, cost_usd=0.0)
    ]
    [step] = [e for e in events if isinstance(e, StepFinished)]
    assert step.finish_reason == "stop" and step.step == 1 and step.usage.input_tokens == 25
    assert code == 0 and parser.failure(code, stderr) is None
    assert parser.final_text() == "pong from mock"


def test_resumed_runs_keep_the_session_id() -> None:
    ids = {replay(case)[0].state.session_id for case in ("tool_mcp", "resume_same_home")}
    ids |= {replay(c)[0].state.session_id for c in ("resume_fresh_home_db_copy",)}
    ids |= {replay(c)[0].state.session_id for c in ("resume_fresh_home_export_import",)}
    assert ids == {"ses_df1d07654ffeea2Tc4m51kfIyH"}


def test_mcp_tool_turn() -> None:
    parser, events, code, stderr, _ = replay("tool_mcp")
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "SessionStarted",
        "TextDelta",
        "ToolCallStarted",
        "ToolCallFinished",
        "ToolResult",
        "Usage",
        "StepFinished",
        "TextDelta",
        "Usage",
        "StepFinished",
    ]
    started = next(e for e in events if isinstance(e, ToolCallStarted))
    call = next(e for e in events if isinstance(e, ToolCallFinished))
    result = next(e for e in events if isinstance(e, ToolResult))
    assert (started.call_id, started.name) == ("call_mock_1", "mock_add")
    assert (call.call_id, call.name, call.arguments) == (
        "call_mock_1",
        "mock_add",
        {"a": 2, "b": 3},
    )
    assert json.loads(call.raw_arguments) == {"a": 2, "b": 3}
    assert (result.call_id, result.output, result.is_error, result.executed_by) == (
        "call_mock_1",
        "5",
        False,
        "backend",
    )
    assert [e.finish_reason for e in events if isinstance(e, StepFinished)] == [
        "tool-calls",
        "stop",
    ]
    assert parser.failure(code, stderr) is None
    assert parser.final_text() == "The add tool returned: 5"  # the last message's text
    assert len(parser.state.message_ids) == 2


def test_shell_tool_turn() -> None:
    parser, events, code, stderr, _ = replay("tool_shell")
    [result] = [e for e in events if isinstance(e, ToolResult)]
    [call] = [e for e in events if isinstance(e, ToolCallFinished)]
    assert call.name == "bash" and call.arguments["command"] == "echo hi-from-shell"
    assert result.output == "hi-from-shell\n" and not result.is_error
    assert parser.final_text() == "The shell tool returned: hi-from-shell\n"


def test_a_failed_tool_is_an_error_result() -> None:
    parser = opencode.OpenCodeStreamParser("opencode")
    record = {
        "type": "tool_use",
        "sessionID": "ses_x",
        "part": {
            "type": "tool",
            "tool": "mock_add",
            "callID": "call_1",
            "state": {"status": "error", "input": {"a": 1}, "error": "MCP error -32602: bad"},
        },
    }
    result = parser.feed(record)[-1]
    assert isinstance(result, ToolResult)
    assert result.is_error and result.output == "MCP error -32602: bad"


@pytest.mark.parametrize(
    ("case", "cls", "shared"),
    [
        ("err_e401", opencode.AuthenticationError, errors.AuthenticationError),
        ("err_e429", opencode.RateLimitError, errors.RateLimitError),
        ("err_e500", opencode.ServerError, errors.ServerError),
        ("err_e503", opencode.ServerError, errors.ServerError),
        ("err_ctx", opencode.ContextLengthExceededError, errors.ContextLengthExceededError),
        ("err_maxtok", opencode.MaxOutputTokensError, errors.MaxOutputTokensError),
    ],
)
def test_captured_failures_are_typed(case: str, cls: type, shared: type) -> None:
    parser, _, code, stderr, _ = replay(case)
    error = parser.failure(code, stderr)
    assert type(error) is cls and isinstance(error, shared)
    assert isinstance(error, opencode.OpenCodeError)
    assert error.exit_code == code
    assert pickle.loads(pickle.dumps(error)) == error


def test_rate_limit_reset_comes_from_the_response_headers() -> None:
    parser, _, code, stderr, _ = replay("err_e429")
    error = parser.failure(code, stderr)
    assert isinstance(error, opencode.RateLimitError)
    assert error.reset_time == NOW + timedelta(seconds=1)  # retry-after-ms: 1000
    assert "Rate limit reached" in error.raw_message
    assert error.retryable


def test_server_errors_are_retryable_and_keep_their_message() -> None:
    parser, _, code, stderr, _ = replay("err_e503")
    error = parser.failure(code, stderr)
    assert error.retryable and "overloaded" in error.raw_message


def test_max_output_exits_zero_but_fails_with_the_partial_text() -> None:
    parser, events, code, stderr, _ = replay("err_maxtok")
    assert code == 0
    error = parser.failure(code, stderr)
    assert isinstance(error, opencode.MaxOutputTokensError)
    assert error.partial_text == "This answer is cut off because it hit the max"
    assert not error.retryable


def test_the_hung_resume_printed_nothing() -> None:
    parser, events, code, stderr, stdout = replay("pitfall_resume_dir_mismatch_hangs")
    assert events == [] and code is None and opencode.parse_session_id(stdout) is None
    error = parser.failure(-9, stderr)  # what our supervisor's kill leaves
    assert isinstance(error, opencode.UnknownOpenCodeError) and error.exit_code == -9


def test_unknown_model_reads_the_cause_from_the_log() -> None:
    parser = opencode.OpenCodeStreamParser("opencode")
    for line in UNKNOWN_MODEL_STDOUT.splitlines():
        parser.feed(json.loads(line))
    assert opencode.parse_run_error(UNKNOWN_MODEL_STDOUT) == {
        "name": "UnknownError",
        "data": {
            "message": "Unexpected server error. Check server logs for details.",
            "ref": "err_79ab6883",
        },
    }
    error = parser.failure(1, UNKNOWN_MODEL_STDERR)
    assert type(error) is opencode.InvalidRequestError
    assert "Model not found: mock/nope." in error.raw_message
    # without the log, the same record is unclassifiable
    assert type(parser.failure(1, "")) is opencode.UnknownOpenCodeError


def test_unknown_model_as_opencode_1_15_reported_it() -> None:
    error = opencode.classify_run_error(
        "opencode",
        {"name": "UnknownError", "data": {"message": "Model not found: anthropic/claude-x"}},
        exit_code=1,
    )
    assert type(error) is opencode.InvalidRequestError


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        ({"name": "APIError", "data": {"message": "no", "statusCode": 402}}, opencode.BillingError),
        (
            {
                "name": "APIError",
                "data": {
                    "message": "You exceeded your current quota",
                    "statusCode": 429,
                    "responseBody": '{"error":{"code":"insufficient_quota"}}',
                },
            },
            opencode.BillingError,
        ),
        (
            {"name": "APIError", "data": {"message": "x", "statusCode": 404}},
            opencode.InvalidRequestError,
        ),
        (
            {"name": "APIError", "data": {"message": "x", "statusCode": 413}},
            opencode.ContextLengthExceededError,
        ),
        (
            {"name": "ProviderAuthError", "data": {"message": "no key"}},
            opencode.AuthenticationError,
        ),
        ({"name": "MessageOutputLengthError", "data": {}}, opencode.MaxOutputTokensError),
        (
            {"name": "UnknownError", "data": {"message": "fetch failed", "isRetryable": True}},
            opencode.ServerError,
        ),
        ({"name": "Weird", "data": {"message": "what"}}, opencode.UnknownOpenCodeError),
    ],
)
def test_classification_table(error: dict, cls: type) -> None:
    assert type(opencode.classify_run_error("opencode", error, now=NOW)) is cls


def test_a_run_without_any_step_is_a_failure() -> None:
    parser = opencode.OpenCodeStreamParser("opencode")
    assert isinstance(parser.failure(0, ""), opencode.UnknownOpenCodeError)
    error = parser.failure(1, "Error: Session not found\n")
    assert type(error) is opencode.InvalidRequestError and error.exit_code == 1


def test_unknown_records_pass_through_as_raw() -> None:
    parser = opencode.OpenCodeStreamParser("opencode")
    events = parser.feed({"type": "something_new", "sessionID": "ses_abc", "x": 1})
    assert isinstance(events[0], SessionStarted) and events[0].session_id == "ses_abc"
    assert events[1] == Raw(
        source="opencode", data={"type": "something_new", "sessionID": "ses_abc", "x": 1}
    )


def test_parse_session_id_falls_back_to_a_scan() -> None:
    assert opencode.parse_session_id("garbage ses_AbC123 more") == "ses_AbC123"
    assert opencode.parse_session_id("") is None
    assert opencode.parse_run_error("not json\n{broken") is None


def test_answer_and_usage_from_the_export() -> None:
    export = json.loads((FIXTURES / "export_session.json").read_text())
    # the tool turn's two assistant messages, as named by its stream
    parser, *_ = replay("tool_mcp")
    answer, usage, finish = opencode.answer_from_export(export, parser.state.message_ids)
    assert answer == "The add tool returned: 5" and finish == "stop"
    assert usage == Usage(input_tokens=50, output_tokens=14, cost_usd=0.0)
    # without ids: the messages after the last user message (the resumed turn)
    answer, usage, finish = opencode.answer_from_export(export)
    assert answer == "pong from mock" and usage.input_tokens == 25
    assert opencode.answer_from_export({}) == ("", Usage(), None)


def test_result_class_round_trips() -> None:
    result = opencode.OpenCodeQueryResult(
        "answer", 0, "", "", True, session_id="ses_x", session_export=b'{"info":{}}'
    )
    assert type(result).from_dict(result.to_dict()) == result
    assert pickle.loads(pickle.dumps(result)) == result
