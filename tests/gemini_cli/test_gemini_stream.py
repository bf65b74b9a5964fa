"""GeminiStreamParser against output captured from the real gemini CLI (0.61.0)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chia_async import errors
from chia_async.backends import gemini_cli
from chia_async.events import (
    Raw,
    SessionStarted,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolResult,
)
from chia_async.results import Usage

FIXTURES = Path(__file__).parent.parent / "fixtures" / "cli-samples" / "gemini"
NOW = datetime(2026, 11, 24, 15, 34, tzinfo=UTC)

#: every stream-json capture (text_json is `--output-format json`, one pretty object)
STREAM_CASES = sorted(p.stem for p in FIXTURES.glob("*.exitcode") if p.stem != "text_json")


def replay(case: str) -> tuple[gemini_cli.GeminiStreamParser, list, int, str]:
    parser = gemini_cli.GeminiStreamParser("gemini_cli", cwd="/project/gemini", now=lambda: NOW)
    events = []
    for line in (FIXTURES / f"{case}.jsonl").read_text().splitlines():
        if line.strip():
            events.extend(parser.feed(json.loads(line)))
    exit_code = int((FIXTURES / f"{case}.exitcode").read_text())
    stderr = (FIXTURES / f"{case}.stderr").read_text()
    return parser, events, exit_code, stderr


@pytest.mark.parametrize("case", STREAM_CASES)
def test_every_capture_parses_and_ends_in_a_result(case: str) -> None:
    parser, events, _, _ = replay(case)
    assert isinstance(events[0], SessionStarted)
    assert events[0].backend == "gemini_cli" and events[0].session_id
    assert parser.state.result is not None
    assert not [e for e in events if isinstance(e, Raw)]  # every record type is known


def test_text_turn() -> None:
    parser, events, code, stderr = replay("text")
    assert events[0] == SessionStarted(
        session_id="97e975d0-5d69-4c73-a5fc-42f28f31a1b1",
        backend="gemini_cli",
        model="auto",
        cwd="/project/gemini",
    )
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["pong ", "from ", "mock"]
    assert events[-1] == Usage(input_tokens=30, output_tokens=12, cache_read_tokens=0)
    assert parser.outcome(code, stderr)["status"] == "success"
    assert parser.state.final_text == "pong from mock"


def test_mcp_tool_call_and_result() -> None:
    parser, events, code, stderr = replay("tool_mcp")
    call_id = "mcp_mock_add__mcp_mock_add_1795534410837_0"
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert started == [ToolCallStarted(call_id=call_id, name="mcp_mock_add")]
    assert finished[0].arguments == {"a": 2, "b": 3}
    assert json.loads(finished[0].raw_arguments) == {"a": 2, "b": 3}
    assert results == [
        ToolResult(
            call_id=call_id,
            name="mcp_mock_add",
            output="5",
            is_error=False,
            executed_by="backend",
        )
    ]
    parser.outcome(code, stderr)
    # the answer is the final model turn, after the tool call
    assert parser.state.final_text.startswith("The add tool returned:")


def test_shell_tool() -> None:
    _, events, _, _ = replay("tool_shell")
    [result] = [e for e in events if isinstance(e, ToolResult)]
    assert result.name == "run_shell_command" and result.output == "hi-from-shell"


@pytest.mark.parametrize(
    ("case", "cls"),
    [
        ("err_e401", gemini_cli.AuthenticationError),
        ("err_e429", gemini_cli.RateLimitError),
        ("err_e500", gemini_cli.ServerError),
        ("err_e503", gemini_cli.ServerError),
        ("err_e503_default_retries", gemini_cli.ServerError),
        ("err_ctx", gemini_cli.ContextLengthExceededError),
    ],
)
def test_failures_are_classified(case: str, cls: type) -> None:
    parser, _, code, stderr = replay(case)
    with pytest.raises(cls) as info:
        parser.outcome(code, stderr)
    assert type(info.value) is cls
    assert info.value.exit_code == code
    assert info.value.raw_message.startswith("[API Error:")


def test_exit_codes_are_http_statuses_modulo_256() -> None:
    for case, status in [("err_e401", 401), ("err_e429", 429), ("err_e503", 503)]:
        assert int((FIXTURES / f"{case}.exitcode").read_text()) == status % 256


def test_429_reset_comes_from_the_suggested_retry_delay() -> None:
    parser, _, code, stderr = replay("err_e429")
    with pytest.raises(gemini_cli.RateLimitError) as info:
        parser.outcome(code, stderr)
    assert info.value.reset_time == NOW + timedelta(seconds=1)
    assert isinstance(info.value, errors.RateLimitError) and info.value.retryable


def test_the_503_message_has_no_code_and_the_exit_code_says_it() -> None:
    parser, _, code, stderr = replay("err_e503")
    assert '"code"' not in parser.state.result["error"]["message"]
    with pytest.raises(gemini_cli.ServerError):
        parser.outcome(code, stderr)
    # the same message with a non-HTTP exit code is still a server error, from its text
    with pytest.raises(gemini_cli.ServerError):
        parser.outcome(1, stderr)


def test_max_tokens_is_a_success_in_stream_json() -> None:
    """The CLI reports a truncated answer as a success; the backend reads its telemetry."""
    parser, events, code, stderr = replay("err_maxtok")
    assert code == 0 and parser.outcome(code, stderr)["status"] == "success"
    assert parser.state.text.endswith("hit the max")


def test_empty_answer_at_max_tokens_is_an_error_event() -> None:
    parser = gemini_cli.GeminiStreamParser("gemini_cli")
    parser.feed({"type": "init", "session_id": "s", "model": "m"})
    message = (
        "Model response was truncated because it exceeded the token limit. "
        "Try using /compress to free up context space."
    )
    parser.feed({"type": "error", "severity": "error", "message": message})
    parser.feed({"type": "result", "status": "error", "stats": {}})
    with pytest.raises(gemini_cli.MaxOutputTokensError):
        parser.outcome(0)


def test_blocked_response_is_content_blocked() -> None:
    parser = gemini_cli.GeminiStreamParser("gemini_cli")
    parser.feed(
        {
            "type": "error",
            "severity": "error",
            "message": ("The model response was blocked due to safety settings."),
        }
    )
    parser.feed({"type": "result", "status": "error", "stats": {}})
    with pytest.raises(gemini_cli.ContentBlockedError) as info:
        parser.outcome(0)
    assert info.value.block_reason == "SAFETY"


@pytest.mark.parametrize(
    ("code", "stderr", "cls"),
    [
        (
            41,
            "Please set an Auth method in your /h/.gemini/settings.json or specify one of the "
            "following environment variables before running: GEMINI_API_KEY",
            gemini_cli.AuthenticationError,
        ),
        (42, "Error resuming session: Invalid session identifier", gemini_cli.InvalidRequestError),
        (52, "Invalid configuration in settings.json", gemini_cli.InvalidRequestError),
        (1, "Error: fetch failed (ECONNREFUSED 127.0.0.1:9)", gemini_cli.ServerError),
        (7, "something nobody expected", gemini_cli.UnknownGeminiCLIError),
    ],
)
def test_no_result_record_is_classified_from_exit_code_and_stderr(
    code: int, stderr: str, cls: type
) -> None:
    parser = gemini_cli.GeminiStreamParser("gemini_cli")
    with pytest.raises(cls) as info:
        parser.outcome(code, "Warning: 256-color support not detected.\n" + stderr)
    assert "without a result record" in info.value.raw_message
    assert "256-color" not in info.value.raw_message


def test_unknown_failure_keeps_the_stderr_tail() -> None:
    parser = gemini_cli.GeminiStreamParser("gemini_cli")
    with pytest.raises(gemini_cli.UnknownGeminiCLIError) as info:
        parser.outcome(9, "Segmentation fault")
    assert "Segmentation fault" in info.value.stderr


def test_unknown_records_pass_through_as_raw() -> None:
    parser = gemini_cli.GeminiStreamParser("gemini_cli")
    assert parser.feed({"type": "thought", "content": "hmm"}) == [
        Raw(source="gemini", data={"type": "thought", "content": "hmm"})
    ]


def test_nonzero_exit_after_a_success_record_is_a_failure() -> None:
    parser, _, _, stderr = replay("text")
    with pytest.raises(errors.ChiaError):
        parser.outcome(1, stderr)


TELEMETRY = """{
  "resource": {"attributes": {"service.name": "gemini-cli"}},
  "attributes": {"event.name": "gemini_cli.api_request", "model": "gemini-2.5-pro"}
}
{
  "attributes": {
    "event.name": "gemini_cli.api_response",
    "event.timestamp": "2026-11-24T19:24:18.270Z",
    "status_code": 200,
    "finish_reasons": ["stop", "stop", "length"],
    "role": "main"
  }
}
{
  "descriptor": {"name": "gemini_cli.token.usage"},
  "dataPoints": [{"value": 5}]
}
"""


def test_telemetry_finish_reason() -> None:
    assert gemini_cli.telemetry_finish_reason(TELEMETRY) == "length"
    assert gemini_cli.telemetry_finish_reason(TELEMETRY.replace('"length"', '"stop"')) == "stop"
    assert gemini_cli.telemetry_finish_reason("") is None
    # a log cut short by a crash: the complete records before the cut still count
    assert gemini_cli.telemetry_finish_reason(TELEMETRY + '{\n  "attri') == "length"


def test_project_slug() -> None:
    assert gemini_cli.project_slug("/project/gemini") == "gemini"
    assert gemini_cli.project_slug("/tmp/My Work_Dir.v2/") == "my-work-dir-v2"
    assert gemini_cli.project_slug("/") == "project"


@pytest.mark.parametrize(
    ("name", "shared"),
    [
        ("RateLimitError", errors.RateLimitError),
        ("AuthenticationError", errors.AuthenticationError),
        ("BillingError", errors.BillingError),
        ("InvalidRequestError", errors.InvalidRequestError),
        ("ContextLengthExceededError", errors.ContextLengthExceededError),
        ("ServerError", errors.ServerError),
        ("MaxOutputTokensError", errors.MaxOutputTokensError),
        ("ContentBlockedError", errors.ContentBlockedError),
        ("UnknownGeminiCLIError", errors.UnknownError),
    ],
)
def test_error_family(name: str, shared: type) -> None:
    import pickle

    cls = getattr(gemini_cli, name)
    assert issubclass(cls, gemini_cli.GeminiCLIError) and issubclass(cls, shared)
    assert cls.retryable is shared.retryable and cls.kind == shared.kind
    error = cls("node-1", raw_message="API key sk-gemini-secret-123456 rejected")
    assert "sk-gemini-secret" not in str(error) and "sk-gemini-secret" not in repr(error)
    copy = pickle.loads(pickle.dumps(error))
    assert copy == error and copy.fields() == error.fields()
    assert issubclass(gemini_cli.ContextLengthExceededError, gemini_cli.InvalidRequestError)
