"""CodexStreamParser against output captured from the real codex CLI (0.169.0), plus the
pieces of CodexLLM that need no process: arguments, TOML values, session state paths."""

from __future__ import annotations

import inspect
import json
import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from chia_async import errors
from chia_async.backends import codex
from chia_async.events import (
    FileChange,
    Raw,
    ReasoningDelta,
    SessionStarted,
    StepFinished,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    ToolResult,
)
from chia_async.results import CodexQueryResult, Usage

FIXTURES = Path(__file__).parent.parent / "fixtures" / "cli-samples" / "codex"
NOW = datetime(2026, 11, 24, 16, 30, tzinfo=UTC)


def replay(case: str, **kwargs: object) -> tuple[codex.CodexStreamParser, list, int, str]:
    parser = codex.CodexStreamParser("codex", now=lambda: NOW, **kwargs)  # type: ignore[arg-type]
    events = []
    for line in (FIXTURES / f"{case}.jsonl").read_text().splitlines():
        if line.strip():
            events.extend(parser.feed(json.loads(line)))
    exit_code = int((FIXTURES / f"{case}.exitcode").read_text())
    stderr = (FIXTURES / f"{case}.stderr").read_text()
    return parser, events, exit_code, stderr


def feed_all(parser: codex.CodexStreamParser, records: list[dict]) -> list:
    return [event for record in records for event in parser.feed(record)]


ALL_CASES = sorted(p.stem for p in FIXTURES.glob("*.exitcode"))


@pytest.mark.parametrize("case", ALL_CASES)
def test_every_capture_parses_into_our_events(case: str) -> None:
    _, events, _, _ = replay(case)
    for event in events:
        assert type(event).__module__.startswith("chia_async.")
        event.to_dict()  # JSON-serialisable


def test_text_turn() -> None:
    parser, events, code, stderr = replay("text", model="gpt-5.5", cwd="/project/codex")
    assert events[0] == SessionStarted(
        session_id="01a20e2d-50fc-7930-a97b-a2f7e34321fa",
        backend="codex",
        model="gpt-5.5",
        cwd="/project/codex",
    )
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["pong from mock"]
    assert [e for e in events if isinstance(e, Usage)] == [Usage(input_tokens=25, output_tokens=7)]
    assert isinstance(events[-1], StepFinished) and events[-1].finish_reason == "completed"
    assert parser.outcome(code, stderr)["type"] == "turn.completed"
    assert parser.state.final_message == "pong from mock"


def test_mcp_tool_call_and_its_result() -> None:
    parser, events, code, _ = replay("tool_mcp")
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [(e.call_id, e.name) for e in started] == [("item_2", "mcp__mock__add")]
    assert finished[0].arguments == {"a": 2, "b": 3}
    assert json.loads(finished[0].raw_arguments) == {"a": 2, "b": 3}
    assert [(r.call_id, r.output, r.is_error, r.executed_by) for r in results] == [
        ("item_2", "5", False, "backend")
    ]
    # the model-metadata warning is an `error` *item*: passed through, not a failure
    assert any(isinstance(e, Raw) and e.data["item"]["type"] == "error" for e in events)
    parser.outcome(code)
    # two messages in one turn: the answer is the last one, the deltas keep them apart
    assert parser.state.final_message.startswith("The add tool returned:")
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text.startswith("I will call the add tool.\n\nThe add tool returned:")


def test_mcp_call_refused_for_approval_is_an_error_result_not_a_failure() -> None:
    parser, events, code, _ = replay("tool_mcp_needs_approval")
    [result] = [e for e in events if isinstance(e, ToolResult)]
    assert result.is_error
    assert result.output == "MCP tool call requires approval, but approval policy is never"
    parser.outcome(code)


def test_shell_command_is_a_backend_tool_call() -> None:
    _, events, _, _ = replay("tool_shell")
    [call] = [e for e in events if isinstance(e, ToolCallFinished)]
    assert call.name == "shell"
    assert call.arguments == {"command": "/bin/bash -lc 'echo hi-from-shell'"}
    [result] = [e for e in events if isinstance(e, ToolResult)]
    assert result.output == "hi-from-shell\n" and not result.is_error


@pytest.mark.parametrize(
    ("case", "cls"),
    [
        ("err_e401", codex.AuthenticationError),
        ("err_e429", codex.RateLimitError),
        ("err_e500", codex.ServerError),
        ("err_e503", codex.ServerError),
        ("err_e503_default_retries", codex.ServerError),
        ("err_ctx", codex.ContextLengthExceededError),
        ("err_ctxstream", codex.ContextLengthExceededError),
        ("err_maxtok", codex.MaxOutputTokensError),
        ("pitfall_wire_api_chat", codex.InvalidRequestError),
    ],
)
def test_every_captured_failure_is_classified(case: str, cls: type) -> None:
    parser, _, code, stderr = replay(case)
    with pytest.raises(cls) as info:
        parser.outcome(code, stderr)
    error = info.value
    assert type(error) is cls
    assert error.exit_code == code == 1
    assert isinstance(error, errors.ChiaError)
    assert pickle.loads(pickle.dumps(error)) == error


def test_every_captured_failure_case_is_covered() -> None:
    covered = {
        "err_e401",
        "err_e429",
        "err_e500",
        "err_e503",
        "err_e503_default_retries",
        "err_ctx",
        "err_ctxstream",
        "err_maxtok",
        "pitfall_wire_api_chat",
    }
    failing = {c for c in ALL_CASES if (FIXTURES / f"{c}.exitcode").read_text().strip() != "0"}
    assert failing == covered


def test_retry_notices_are_passed_through_and_not_the_error() -> None:
    parser, events, code, _ = replay("err_e503_default_retries")
    raw = [e for e in events if isinstance(e, Raw) and e.data["type"] == "error"]
    assert len(raw) == 6  # five "Reconnecting... n/5" notices and the final error
    assert parser.state.retry_notices == 5
    with pytest.raises(codex.ServerError, match="unexpected status 503"):
        parser.outcome(code)


def test_a_bare_429_has_no_reset_time() -> None:
    parser, _, code, _ = replay("err_e429")
    with pytest.raises(codex.RateLimitError) as info:
        parser.outcome(code)
    assert info.value.reset_time is None
    assert "429 Too Many Requests" in info.value.raw_message


def test_max_output_tokens_keeps_the_partial_text() -> None:
    parser, _, code, _ = replay("err_maxtok")
    with pytest.raises(codex.MaxOutputTokensError) as info:
        parser.outcome(code)
    assert info.value.partial_text == "This answer is cut off because it hit the max"
    assert pickle.loads(pickle.dumps(info.value)).partial_text == info.value.partial_text


def test_resumed_turns_report_their_own_usage() -> None:
    # turn.completed is cumulative over the thread: 25, then 50, then 75 input tokens
    before = Usage(input_tokens=50, output_tokens=14)
    _, events, _, _ = replay("resume_fresh_home_rollout_only", usage_before=before)
    assert [e for e in events if isinstance(e, Usage)] == [Usage(input_tokens=25, output_tokens=7)]


def test_counters_below_the_baseline_count_as_a_restart() -> None:
    _, events, _, _ = replay("text", usage_before=Usage(input_tokens=100, output_tokens=50))
    assert [e for e in events if isinstance(e, Usage)] == [Usage(input_tokens=25, output_tokens=7)]


# -- messages the captures do not show, as the real CLI prints them (tests/codex also
#    drives the real CLI into each of these through the scripted server)

FAILED = [
    (
        "You\u2019ve hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), visit "
        "https://chatgpt.com/settings/usage to purchase more credits or try again at 9:17 PM.",
        codex.RateLimitError,
    ),
    ("You\u2019ve hit your usage limit. Try again later.", codex.RateLimitError),
    (
        "rate limit exceeded: Rate limit reached for gpt-5.5 on tokens per min (TPM): "
        "Limit 30000, Used 30000. Please try again in 11.054s.",
        codex.RateLimitError,
    ),
    ("rate limit exceeded: slow down", codex.RateLimitError),
    ("Quota exceeded. Check your plan and billing details.", codex.BillingError),
    (
        "To use Codex with your ChatGPT plan, upgrade to Plus: https://chatgpt.com/explore/plus.",
        codex.BillingError,
    ),
    ("Selected model is at capacity. Please try a different model.", codex.ServerError),
    (
        "stream disconnected before completion: The server had an error while processing "
        "your request. Sorry about that!",
        codex.ServerError,
    ),
    ("Missing environment variable: `OPENAI_API_KEY`.", codex.AuthenticationError),
    (
        "unexpected status 403 Forbidden: You have insufficient permissions for this "
        "operation. Missing scopes: model.request., url: http://127.0.0.1:1/v1/responses",
        codex.AuthenticationError,
    ),
    (
        "The model `gpt-5.5` does not exist or you do not have access to it.",
        codex.InvalidRequestError,
    ),
    (
        '{"error":{"message":"Invalid request (scripted).","type":"invalid_request_error"}}',
        codex.InvalidRequestError,
    ),
    ("Incomplete response returned, reason: content_filter", errors.ContentBlockedError),
    (
        'Error loading config.toml: invalid type: string "x", expected a float\n'
        "in `mcp_servers.x.tool_timeout_sec`",
        codex.InvalidRequestError,
    ),
    (
        "Fatal error: Failed to initialize session: required MCP servers failed to "
        "initialize: st: handshaking with MCP server failed: connection refused",
        codex.InvalidRequestError,
    ),
    ("internal error; agent loop died unexpectedly", codex.UnknownCodexError),
]


@pytest.mark.parametrize(("message", "cls"), FAILED, ids=[c.__name__ for _, c in FAILED])
def test_turn_failed_messages_are_classified(message: str, cls: type) -> None:
    parser = codex.CodexStreamParser("codex", now=lambda: NOW)
    feed_all(
        parser,
        [
            {"type": "thread.started", "thread_id": "t1"},
            {"type": "turn.started"},
            {"type": "error", "message": message},
            {"type": "turn.failed", "error": {"message": message}},
        ],
    )
    with pytest.raises(cls) as info:
        parser.outcome(1)
    assert type(info.value) is cls
    assert info.value.raw_message == message


def test_usage_limit_reset_is_read_in_the_cli_local_zone() -> None:
    message = "You\u2019ve hit your usage limit. Try again at Nov 27th, 2026 7:18 PM."
    zone = ZoneInfo("America/New_York")
    parser = codex.CodexStreamParser("codex", now=lambda: NOW, local_zone=zone)
    error = parser.classify(message, 1)
    assert isinstance(error, codex.RateLimitError)
    assert error.reset_time == datetime(2026, 11, 27, 19, 18, tzinfo=zone).astimezone(UTC)
    same_day = parser.classify("You\u2019ve hit your usage limit. Try again at 9:17 PM.", 1)
    assert same_day.reset_time == datetime(2026, 11, 24, 21, 17, tzinfo=zone).astimezone(UTC)


def test_relative_reset_and_no_reset() -> None:
    parser = codex.CodexStreamParser("codex", now=lambda: NOW)
    error = parser.classify("rate limit exceeded: ... Please try again in 11.054s.", 1)
    assert error.reset_time == NOW + timedelta(seconds=11.054)
    assert parser.classify("You\u2019ve hit your usage limit. Try again later.").reset_time is None


def test_stderr_only_failures() -> None:
    parser = codex.CodexStreamParser("codex")
    noise = (
        "WARNING: proceeding, even though we could not create PATH aliases: ...\n"
        "Reading additional input from stdin...\n"
    )
    with pytest.raises(codex.InvalidRequestError, match="no rollout found"):
        parser.outcome(
            1,
            noise + "Error: thread/resume: thread/resume failed: no rollout found for thread "
            "id 01a2 (code -32600)\n\nStack backtrace:\n   0: <unknown>\n",
        )
    with pytest.raises(codex.InvalidRequestError, match="trusted directory"):
        parser.outcome(
            1,
            noise + "Not inside a trusted directory and --skip-git-repo-check was not specified.\n",
        )
    with pytest.raises(codex.UnknownCodexError, match=r"without turn\.completed") as info:
        parser.outcome(139, noise)
    assert "Reading additional input" not in info.value.raw_message


def test_success_needs_every_signal() -> None:
    completed = {"type": "turn.completed", "usage": {"input_tokens": 1, "output_tokens": 1}}
    parser = codex.CodexStreamParser("codex")
    parser.feed(completed)
    with pytest.raises(codex.UnknownCodexError, match=r"after turn\.completed"):
        parser.outcome(1, "panicked at 'rollout flush'")
    assert parser.outcome(0) == completed
    empty = codex.CodexStreamParser("codex")
    with pytest.raises(codex.UnknownCodexError, match=r"without turn\.completed"):
        empty.outcome(0)


def test_snapshots_are_diffed_into_deltas() -> None:
    parser = codex.CodexStreamParser("codex")

    def item(kind: str, phase: str, text: str, item_id: str = "item_0") -> dict:
        return {"type": f"item.{phase}", "item": {"id": item_id, "type": kind, "text": text}}

    events = feed_all(
        parser,
        [
            item("reasoning", "started", ""),
            item("reasoning", "updated", "Let me"),
            item("reasoning", "completed", "Let me think."),
            item("agent_message", "started", "", "item_1"),
            item("agent_message", "updated", "The ans", "item_1"),
            item("agent_message", "updated", "The answer", "item_1"),
            item("agent_message", "completed", "The answer is 42.", "item_1"),
            item("agent_message", "completed", "Done.", "item_2"),
        ],
    )
    assert [e.text for e in events if isinstance(e, ReasoningDelta)] == ["Let me", " think."]
    assert [e.text for e in events if isinstance(e, TextDelta)] == [
        "The ans",
        "wer",
        " is 42.",
        "\n\nDone.",
    ]
    assert parser.state.final_message == "Done."
    # a snapshot that rewrites what was sent is sent whole, not dropped
    rewrite = feed_all(parser, [item("agent_message", "completed", "Done!", "item_2")])
    assert rewrite == [TextDelta(text="Done!")]


def test_file_changes_web_search_and_unknown_items() -> None:
    parser = codex.CodexStreamParser("codex")
    events = feed_all(
        parser,
        [
            {
                "type": "item.completed",
                "item": {
                    "id": "item_3",
                    "type": "file_change",
                    "changes": [
                        {"path": "a.py", "kind": "add"},
                        {"path": "b.py", "kind": "delete"},
                    ],
                    "status": "completed",
                },
            },
            {"type": "item.started", "item": {"id": "item_4", "type": "web_search", "query": "q"}},
            {
                "type": "item.completed",
                "item": {"id": "item_4", "type": "web_search", "query": "q"},
            },
            {"type": "item.completed", "item": {"id": "item_5", "type": "todo_list", "items": []}},
            {"type": "something.new", "x": 1},
        ],
    )
    assert events[:2] == [
        FileChange(path="a.py", change="add"),
        FileChange(path="b.py", change="delete"),
    ]
    assert [type(e) for e in events[2:5]] == [ToolCallStarted, ToolCallFinished, ToolResult]
    assert events[3].arguments == {"query": "q"}
    assert [e.data for e in events[5:]] == [
        {"type": "item.completed", "item": {"id": "item_5", "type": "todo_list", "items": []}},
        {"type": "something.new", "x": 1},
    ]


def test_parse_session_id() -> None:
    stdout = (FIXTURES / "tool_mcp.jsonl").read_text()
    assert codex.parse_session_id(stdout) == "01a20e2d-d226-7ae2-b877-a5d2be50f19a"
    assert codex.parse_session_id("noise\n" + stdout) == "01a20e2d-d226-7ae2-b877-a5d2be50f19a"
    legacy = '{"id":"0","msg":{"type":"session_configured","session_id":"abc-1"}}'
    assert codex.parse_session_id(legacy) == "abc-1"
    assert codex.parse_session_id('{"type":"turn.started"}\nnot json {') is None
    assert codex.parse_session_id("") is None


def test_parse_rate_limit_reset_is_exported() -> None:
    assert codex.parse_rate_limit_reset("try again in 2 hours", now=NOW) == NOW + timedelta(hours=2)


# -- CodexLLM without a process ----------------------------------------------------------


def test_reference_constructor_signature() -> None:
    params = list(inspect.signature(codex.CodexLLM).parameters.values())
    names = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert names == [
        "model",
        "system_message",
        "timeout_seconds",
        "retries",
        "logging_name",
        "logging_level",
        "log_dir",
        "codex_bin",
        "work_dir",
        "extra_cli_args",
        "sandbox",
        "approval_policy",
        "dangerously_bypass_approvals_and_sandbox",
        "skip_git_repo_check",
        "ephemeral",
        "ignore_rules",
        "profile",
        "reasoning_effort",
        "resume_session",
        "auto_compact_token_limit",
    ]
    defaults = {p.name: p.default for p in params}
    assert defaults["model"] is None and defaults["codex_bin"] == "codex"
    assert defaults["sandbox"] == "workspace-write" and defaults["approval_policy"] == "never"
    assert defaults["dangerously_bypass_approvals_and_sandbox"] is True
    assert defaults["auto_compact_token_limit"] == 200000
    assert defaults["logging_name"] == "codex" and defaults["timeout_seconds"] == 600
    assert codex.CodexLLM.ray_resource == "codex"
    assert codex.CodexLLM.result_class is CodexQueryResult


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"sandbox": "yolo"}, ValueError, "sandbox"),
        ({"approval_policy": "always"}, ValueError, "approval_policy"),
        ({"reasoning_effort": "huge"}, ValueError, "reasoning_effort"),
        ({"auto_compact_token_limit": 0}, ValueError, "auto_compact_token_limit"),
        ({"ephemeral": True, "resume_session": True}, ValueError, "ephemeral"),
        ({"skip_git_repo_check": "yes"}, TypeError, "skip_git_repo_check"),
        ({"codex_bin": ""}, TypeError, "codex_bin"),
        ({"base_url": "127.0.0.1:8000"}, ValueError, "base_url"),
        ({"cli_retries": -1}, ValueError, "cli_retries"),
        ({"config_overrides": {"a b": 1}}, ValueError, "config_overrides"),
        ({"config_overrides": {"x": object()}}, TypeError, "config value"),
        ({"config_overrides": {"x": float("nan")}}, ValueError, "finite"),
        ({"env": {"A": 1}}, TypeError, "env"),
        ({"extra_cli_args": "--json"}, TypeError, "extra_cli_args"),
    ],
)
def test_bad_arguments_are_clear(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        codex.CodexLLM(**kwargs)


def test_repr_and_pickle_keep_secrets_out_and_state_in() -> None:
    llm = codex.CodexLLM(env={"OPENAI_API_KEY": "sk-very-secret-key-123456"}, resume_session=True)
    llm.session_id = "t1"
    llm.session_state = {"sessions/2026/11/24/rollout-x-t1.jsonl": b"{}\n"}
    assert "very-secret" not in repr(llm)
    copy = pickle.loads(pickle.dumps(llm))
    assert copy.session_id == "t1" and copy.session_state == llm.session_state
    assert copy.env == llm.env


def test_restore_session_refuses_paths_outside_the_sessions_dir() -> None:
    llm = codex.CodexLLM()
    for bad in (
        "../x/rollout-a.jsonl",
        "/etc/rollout-a.jsonl",
        "config.toml",
        "sessions/auth.json",
    ):
        result = CodexQueryResult("", 0, "", "", True, session_id="t1", session_state={bad: b""})
        with pytest.raises(ValueError, match="not a Codex rollout file"):
            llm.restore_session(result)
    with pytest.raises(ValueError, match="no session"):
        llm.restore_session(CodexQueryResult("", 0, "", "", True))
    good = {"sessions/2026/11/24/rollout-2026-11-24T19-19-54-t1.jsonl": b"{}\n"}
    llm.restore_session(CodexQueryResult("", 0, "", "", True, session_id="t1", session_state=good))
    assert llm.resume_session and llm.session_id == "t1" and llm.session_state == good


def test_toml_values_for_config_overrides() -> None:
    encode = codex._toml_value
    assert encode(True) == "true" and encode(3) == "3" and encode(2.5) == "2.5"
    assert encode('a "quoted"\\path\n\x00\x7f é') == '"a \\"quoted\\"\\\\path\\n\\u0000\\u007f é"'
    assert encode(["x", 1]) == '["x", 1]'
    assert (
        encode({"Authorization": "VAR", "x-b c": "V"}) == '{Authorization = "VAR", "x-b c" = "V"}'
    )


async def test_a_tool_env_clash_fails_before_a_process_starts(tmp_path: Path) -> None:
    import sys

    from chia_async.tools import ChiaTool

    # codex_bin is any executable: nothing may run
    llm = codex.CodexLLM(codex_bin=sys.executable, env={"HOME": str(tmp_path)}, retries=0)
    clash = ChiaTool.stdio("server", name="s", env={"HOME": "/somewhere/else"})
    with pytest.raises(errors.InvalidRequestError, match="different HOME"):
        await llm.aprompt("hi", [clash])
