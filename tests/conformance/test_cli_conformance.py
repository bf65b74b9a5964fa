"""Real coding-agent CLIs against ``chia_async.testing.ScriptedModelServer`` and a real MCP server.

For each CLI (claude, codex, opencode, gemini):

* ``test_<cli>_text_turn``: one scripted text turn. The CLI exits 0, its JSON stream shows the
  scripted text, and the server recorded the request the CLI is known to send (path, streaming,
  the prompt in the body).
* ``test_<cli>_mcp_tool_turn``: the script's first turn calls the MCP tool ``add(2, 3)`` under the
  name the CLI gives it; the CLI runs it through the real MCP server (which records the call), sends
  the result back in the next request, and shows the scripted follow-up answer.

How each CLI is pointed at the loopback servers offline is documented in
``/work/shared/reference/cli-samples/README.md``; the flags below follow it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from chia_async.testing.script import ParsedRequest, RecordedRequest, ToolCall, Turn

# Fixture objects (see conftest.py): CliBinary (.path), Sandbox (.home/.work/.env()), CliRun
# (.events/.of_type()/.assert_clean_exit()/.describe()), McpTestServer (.url/.calls_to()).
CliBinary = CliRun = McpTestServer = Sandbox = Any

pytestmark = [pytest.mark.conformance, pytest.mark.timeout(120)]

TEXT_PROMPT = "conformance check: reply with the scripted pong"
TEXT_ANSWER = "pong from the scripted server"
TOOL_PROMPT = "conformance check: add 2 and 3 using the add tool"
TOOL_PREAMBLE = "I will call the add tool."
FOLLOW_UP = "The add tool returned:"
OPENCODE_TITLE = "Scripted conformance title"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def generation_requests(srv: Any, name: str) -> list[RecordedRequest]:
    """The model requests of a script (HEAD probes, count_tokens and the like have no parse)."""
    return [r for r in srv.requests(name) if r.parsed is not None]


def body_text(req: RecordedRequest) -> str:
    if isinstance(req.body, bytes | bytearray):
        return req.body.decode("utf-8", "replace")
    return json.dumps(req.body, ensure_ascii=False)


def is_opencode_title_request(req: ParsedRequest) -> bool:
    """opencode's title agent: "You are a title generator. You output ONLY a thread title..."."""
    return "title generator" in req.system.lower()


def tool_script(
    call: ToolCall, *, title_detector: Callable[[ParsedRequest], bool] | None = None
) -> Callable[[ParsedRequest], Turn]:
    """First request: call the tool. A request carrying a tool result: answer with it."""

    def turn(req: ParsedRequest) -> Turn:
        if title_detector is not None and title_detector(req):
            return Turn(text=OPENCODE_TITLE)
        if req.tool_results:
            result = req.tool_results[-1]
            return Turn(text=f"{FOLLOW_UP} {result.output}")
        return Turn(text=TOOL_PREAMBLE, tool_calls=[call])

    return turn


def text_script(
    *, title_detector: Callable[[ParsedRequest], bool] | None = None
) -> Callable[[ParsedRequest], Turn]:
    def turn(req: ParsedRequest) -> Turn:
        if title_detector is not None and title_detector(req):
            return Turn(text=OPENCODE_TITLE)
        return Turn(text=TEXT_ANSWER)

    return turn


def returned_five(output: str) -> bool:
    """A tool result for add(2, 3): "5", or a JSON/wrapped form of it ({"result":5}, ...)."""
    return re.search(r"(?<![\d.])5(?![\d.])", output) is not None


def assert_text_request(
    srv: Any, name: str, run: CliRun, *, path: str, body_stream: bool = True
) -> list[RecordedRequest]:
    reqs = generation_requests(srv, name)
    assert reqs, f"the server saw no model request\n{run.describe()}"
    for req in reqs:
        assert req.method == "POST"
        assert req.path == path, (req.path, run.describe())
        assert req.parsed is not None, req
        assert req.parsed.stream, req
        if body_stream:
            assert isinstance(req.body, dict), req.body
            assert req.body.get("stream") is True, req.body
    main = [r for r in reqs if TEXT_PROMPT in body_text(r)]
    assert main, f"no request carried the prompt; bodies: {[body_text(r)[:300] for r in reqs]}"
    assert main[0].parsed is not None
    assert TEXT_PROMPT in main[0].parsed.last_user_text, main[0].parsed
    return reqs


def assert_tool_roundtrip(
    srv: Any, name: str, mcp: McpTestServer, run: CliRun, *, call_id: str | None
) -> RecordedRequest:
    """The MCP server ran add(2, 3) once and the result went back to the model."""
    assert [c.arguments for c in mcp.calls_to("add")] == [{"a": 2, "b": 3}], (
        mcp.calls,
        run.describe(),
    )
    with_results = [r for r in generation_requests(srv, name) if r.parsed and r.parsed.tool_results]
    assert with_results, f"no request carried a tool result\n{run.describe()}"
    follow = with_results[0]
    assert follow.parsed is not None
    results = follow.parsed.tool_results
    assert any(returned_five(t.output) for t in results), results
    if call_id is not None:
        assert call_id in [t.call_id for t in results], results
    assert not any(t.is_error for t in results), results
    return follow


# --------------------------------------------------------------------------------------------
# Claude Code
# --------------------------------------------------------------------------------------------


def claude_env(sandbox: Sandbox, base_url: str) -> dict[str, str]:
    return sandbox.env(
        ANTHROPIC_BASE_URL=base_url,  # no /v1: the CLI appends /v1/messages?beta=true
        ANTHROPIC_API_KEY="sk-test",
        DISABLE_TELEMETRY="1",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
        CLAUDE_CODE_MAX_RETRIES="1",
    )


def claude_argv(cli: CliBinary, *extra: str, prompt: str) -> list[str]:
    # --allowedTools / --mcp-config are variadic: use the = form and put `--` before the prompt.
    return [
        cli.path,
        "--print",
        "--output-format",
        "stream-json",
        "--verbose",
        *extra,
        "--",
        prompt,
    ]


def claude_final(run: CliRun) -> dict[str, Any]:
    results = run.of_type("result")
    assert len(results) == 1, run.describe()
    return results[0]


def claude_texts(run: CliRun) -> list[str]:
    return [
        block.get("text", "")
        for ev in run.of_type("assistant")
        for block in ev.get("message", {}).get("content", [])
        if block.get("type") == "text"
    ]


def test_claude_text_turn(
    claude_bin: CliBinary, sandbox: Sandbox, model_server: Any, run_cli: Any
) -> None:
    model_server.script("claude-text", text_script())
    run = run_cli(
        claude_argv(claude_bin, prompt=TEXT_PROMPT),
        env=claude_env(sandbox, model_server.base_url("claude-text")),
        cwd=sandbox.work,
    )
    run.assert_clean_exit()
    assert run.events[0]["type"] == "system", run.describe()
    assert run.events[0]["subtype"] == "init", run.describe()
    assert run.events[0]["apiKeySource"] == "ANTHROPIC_API_KEY"
    assert TEXT_ANSWER in claude_texts(run), run.describe()
    final = claude_final(run)
    assert final["is_error"] is False, final
    assert final["result"] == TEXT_ANSWER, final
    assert final["stop_reason"] == "end_turn", final
    reqs = assert_text_request(model_server, "claude-text", run, path="/v1/messages")
    assert len(reqs) == 1, [r.path for r in reqs]
    assert reqs[0].query == "beta=true"
    assert reqs[0].headers.get("anthropic-version") == "2023-06-01"


def test_claude_mcp_tool_turn(
    claude_bin: CliBinary,
    sandbox: Sandbox,
    model_server: Any,
    run_cli: Any,
    mcp_server: McpTestServer,
) -> None:
    model_server.script(
        "claude-tool",
        tool_script(ToolCall(id="toolu_conf_1", name="mcp__mock__add", arguments={"a": 2, "b": 3})),
    )
    mcp_config = sandbox.root / "mcp.json"
    mcp_config.write_text(
        json.dumps({"mcpServers": {"mock": {"type": "http", "url": mcp_server.url}}})
    )
    run = run_cli(
        claude_argv(
            claude_bin,
            f"--mcp-config={mcp_config}",
            "--allowedTools=mcp__mock__add",
            prompt=TOOL_PROMPT,
        ),
        env=claude_env(sandbox, model_server.base_url("claude-tool")),
        cwd=sandbox.work,
    )
    run.assert_clean_exit()
    init = run.events[0]
    assert {"name": "mock", "status": "connected"} in init["mcp_servers"], init
    assert "mcp__mock__add" in init["tools"], init["tools"]
    tool_uses = [
        block
        for ev in run.of_type("assistant")
        for block in ev["message"]["content"]
        if block.get("type") == "tool_use"
    ]
    assert [(t["id"], t["name"], t["input"]) for t in tool_uses] == [
        ("toolu_conf_1", "mcp__mock__add", {"a": 2, "b": 3})
    ], run.describe()
    follow = assert_tool_roundtrip(
        model_server, "claude-tool", mcp_server, run, call_id="toolu_conf_1"
    )
    assert "mcp__mock__add" in follow.parsed.tool_names  # type: ignore[union-attr]
    final = claude_final(run)
    assert final["is_error"] is False, final
    assert final["permission_denials"] == [], final
    assert final["result"].startswith(FOLLOW_UP), final
    assert returned_five(final["result"]), final
    assert final["num_turns"] == 2, final


# --------------------------------------------------------------------------------------------
# Codex CLI (OpenAI Responses)
# --------------------------------------------------------------------------------------------


def codex_argv(
    cli: CliBinary, base_url: str, *, model: str, mcp_url: str | None = None, prompt: str
) -> list[str]:
    config = [
        "model_provider=mock",
        f"model={model}",
        "model_providers.mock.name=mock",
        f"model_providers.mock.base_url={base_url}/v1",
        "model_providers.mock.wire_api=responses",
        "model_providers.mock.env_key=MOCK_API_KEY",
        "model_providers.mock.request_max_retries=0",
        "model_providers.mock.stream_max_retries=0",
    ]
    if mcp_url is not None:
        config += [
            f"mcp_servers.mock.url={mcp_url}",
            "mcp_servers.mock.default_tools_approval_mode=approve",
        ]
    argv = [cli.path, "exec", "--json", "--skip-git-repo-check"]
    for item in config:
        argv += ["-c", item]
    return [*argv, prompt]


def codex_env(sandbox: Sandbox) -> dict[str, str]:
    codex_home = sandbox.home / ".codex"
    codex_home.mkdir(exist_ok=True)
    return sandbox.env(CODEX_HOME=str(codex_home), MOCK_API_KEY="sk-test")


def codex_items(run: CliRun, item_type: str) -> list[dict[str, Any]]:
    return [
        ev["item"] for ev in run.of_type("item.completed") if ev["item"].get("type") == item_type
    ]


def test_codex_text_turn(
    codex_bin: CliBinary, sandbox: Sandbox, model_server: Any, run_cli: Any
) -> None:
    model_server.script("codex-text", text_script())
    run = run_cli(
        codex_argv(
            codex_bin, model_server.base_url("codex-text"), model="gpt-5.5", prompt=TEXT_PROMPT
        ),
        env=codex_env(sandbox),
        cwd=sandbox.work,
    )
    run.assert_clean_exit()
    types = [e["type"] for e in run.events]
    assert types[0] == "thread.started", run.describe()
    assert types[-1] == "turn.completed", run.describe()
    assert "turn.failed" not in types, run.describe()
    assert "error" not in types, run.describe()
    assert codex_items(run, "error") == [], run.describe()  # gpt-5.5 is a known slug
    assert [m["text"] for m in codex_items(run, "agent_message")] == [TEXT_ANSWER], run.describe()
    reqs = assert_text_request(model_server, "codex-text", run, path="/v1/responses")
    assert len(reqs) == 1, [r.path for r in reqs]
    assert reqs[0].body["model"] == "gpt-5.5"
    assert reqs[0].headers.get("authorization") == "Bearer sk-test"
    assert run.of_type("turn.completed")[0]["usage"]["input_tokens"] > 0, run.describe()


def test_codex_mcp_tool_turn(
    codex_bin: CliBinary,
    sandbox: Sandbox,
    model_server: Any,
    run_cli: Any,
    mcp_server: McpTestServer,
) -> None:
    # An unknown slug makes codex send MCP tools inline as a namespace tool (with a known slug
    # they are deferred behind a client-side tool_search tool).
    model_server.script(
        "codex-tool",
        tool_script(
            ToolCall(
                id="call_conf_1", namespace="mcp__mock", name="add", arguments={"a": 2, "b": 3}
            )
        ),
    )
    run = run_cli(
        codex_argv(
            codex_bin,
            model_server.base_url("codex-tool"),
            model="mock-model",
            mcp_url=mcp_server.url,
            prompt=TOOL_PROMPT,
        ),
        env=codex_env(sandbox),
        cwd=sandbox.work,
    )
    run.assert_clean_exit()
    assert run.events[-1]["type"] == "turn.completed", run.describe()
    first = generation_requests(model_server, "codex-tool")[0]
    namespaces = [t for t in first.body["tools"] if t.get("type") == "namespace"]
    mock_ns = [t for t in namespaces if t["name"] == "mcp__mock"]
    assert len(mock_ns) == 1, [t["name"] for t in namespaces]
    assert {t["name"] for t in mock_ns[0]["tools"]} == {"add", "echo"}, mock_ns
    calls = codex_items(run, "mcp_tool_call")
    assert len(calls) == 1, run.describe()
    assert calls[0]["server"] == "mock", calls
    assert calls[0]["tool"] == "add", calls
    assert calls[0]["arguments"] == {"a": 2, "b": 3}, calls
    assert calls[0]["status"] == "completed", calls
    assert_tool_roundtrip(model_server, "codex-tool", mcp_server, run, call_id="call_conf_1")
    answers = [m["text"] for m in codex_items(run, "agent_message")]
    assert answers, run.describe()
    assert answers[-1].startswith(FOLLOW_UP), answers
    assert returned_five(answers[-1]), answers


# --------------------------------------------------------------------------------------------
# opencode (OpenAI Chat Completions through @ai-sdk/openai-compatible)
# --------------------------------------------------------------------------------------------


def opencode_env(sandbox: Sandbox, base_url: str, mcp_url: str | None = None) -> dict[str, str]:
    config: dict[str, Any] = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            "mock": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Mock",
                "options": {"baseURL": f"{base_url}/v1", "apiKey": "sk-test"},
                "models": {
                    "mock-model": {
                        "name": "Mock Model",
                        "tool_call": True,
                        "limit": {"context": 128000, "output": 4096},
                    }
                },
            }
        },
        "model": "mock/mock-model",
        "small_model": "mock/mock-model",
        "autoupdate": False,
        "share": "disabled",
    }
    if mcp_url is not None:
        config["mcp"] = {"mock": {"type": "remote", "url": mcp_url, "enabled": True}}
    home = sandbox.home
    return sandbox.env(  # sandbox.env sets PWD=cwd: opencode takes its directory from $PWD
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        OPENCODE_CONFIG_CONTENT=json.dumps(config),
        OPENCODE_DISABLE_AUTOUPDATE="1",
        OPENCODE_DISABLE_MODELS_FETCH="1",
        OPENCODE_DISABLE_LSP_DOWNLOAD="1",
        OPENCODE_DISABLE_SHARE="1",
    )


def opencode_texts(run: CliRun) -> list[str]:
    return [ev["part"]["text"] for ev in run.of_type("text")]


def split_title_requests(
    srv: Any, name: str
) -> tuple[list[RecordedRequest], list[RecordedRequest]]:
    reqs = generation_requests(srv, name)
    titles = [r for r in reqs if r.parsed is not None and is_opencode_title_request(r.parsed)]
    return titles, [r for r in reqs if r not in titles]


def test_opencode_text_turn(
    opencode_bin: CliBinary, sandbox: Sandbox, model_server: Any, run_cli: Any
) -> None:
    model_server.script("opencode-text", text_script(title_detector=is_opencode_title_request))
    run = run_cli(
        [opencode_bin.path, "run", "--format", "json", TEXT_PROMPT],
        env=opencode_env(sandbox, model_server.base_url("opencode-text")),
        cwd=sandbox.work,
    )
    run.assert_clean_exit()
    assert run.of_type("error") == [], run.describe()
    assert opencode_texts(run) == [TEXT_ANSWER], run.describe()
    finishes = [ev["part"]["reason"] for ev in run.of_type("step_finish")]
    assert finishes == ["stop"], run.describe()
    session_ids = {ev["sessionID"] for ev in run.events}
    assert len(session_ids) == 1, session_ids
    assert next(iter(session_ids)).startswith("ses_"), session_ids
    assert_text_request(model_server, "opencode-text", run, path="/v1/chat/completions")
    titles, main = split_title_requests(model_server, "opencode-text")
    assert len(main) == 1, [body_text(r)[:300] for r in main]
    assert len(titles) <= 1, titles  # the title request runs alongside the main one
    assert main[0].body["model"] == "mock-model"


def test_opencode_mcp_tool_turn(
    opencode_bin: CliBinary,
    sandbox: Sandbox,
    model_server: Any,
    run_cli: Any,
    mcp_server: McpTestServer,
) -> None:
    model_server.script(
        "opencode-tool",
        tool_script(
            ToolCall(id="call_conf_1", name="mock_add", arguments={"a": 2, "b": 3}),
            title_detector=is_opencode_title_request,
        ),
    )
    run = run_cli(
        [opencode_bin.path, "run", "--format", "json", TOOL_PROMPT],
        env=opencode_env(sandbox, model_server.base_url("opencode-tool"), mcp_server.url),
        cwd=sandbox.work,
    )
    run.assert_clean_exit()
    assert run.of_type("error") == [], run.describe()
    tool_uses = [ev["part"] for ev in run.of_type("tool_use")]
    assert len(tool_uses) == 1, run.describe()
    assert tool_uses[0]["tool"] == "mock_add"
    assert tool_uses[0]["callID"] == "call_conf_1"
    assert tool_uses[0]["state"]["status"] == "completed", tool_uses
    assert tool_uses[0]["state"]["input"] == {"a": 2, "b": 3}, tool_uses
    assert returned_five(tool_uses[0]["state"]["output"]), tool_uses
    finishes = [ev["part"]["reason"] for ev in run.of_type("step_finish")]
    assert finishes == ["tool-calls", "stop"], run.describe()
    assert_tool_roundtrip(model_server, "opencode-tool", mcp_server, run, call_id="call_conf_1")
    _, main = split_title_requests(model_server, "opencode-tool")
    assert len(main) == 2, [body_text(r)[:300] for r in main]
    assert "mock_add" in main[0].parsed.tool_names  # type: ignore[union-attr]
    texts = opencode_texts(run)
    assert texts[-1].startswith(FOLLOW_UP), texts
    assert returned_five(texts[-1]), texts


# --------------------------------------------------------------------------------------------
# Gemini CLI (Gemini API streamGenerateContent)
# --------------------------------------------------------------------------------------------

GEMINI_MODEL = "gemini-2.5-pro"  # -m skips the "auto" router's classifier request


def gemini_env(sandbox: Sandbox, base_url: str, mcp_url: str | None = None) -> dict[str, str]:
    settings: dict[str, Any] = {
        "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
        "general": {"disableAutoUpdate": True, "disableUpdateNag": True, "maxAttempts": 2},
    }
    if mcp_url is not None:
        settings["mcpServers"] = {"mock": {"httpUrl": mcp_url, "trust": True}}
    gemini_dir = sandbox.home / ".gemini"
    gemini_dir.mkdir(exist_ok=True)
    (gemini_dir / "settings.json").write_text(json.dumps(settings))
    return sandbox.env(GEMINI_API_KEY="sk-test", GOOGLE_GEMINI_BASE_URL=base_url)


def gemini_argv(cli: CliBinary, prompt: str) -> list[str]:
    return [cli.path, "-m", GEMINI_MODEL, "-p", prompt, "--output-format", "stream-json"]


def gemini_answer(run: CliRun) -> str:
    return "".join(ev["content"] for ev in run.of_type("message") if ev.get("role") == "assistant")


GEMINI_PATH = f"/v1beta/models/{GEMINI_MODEL}:streamGenerateContent"


def test_gemini_text_turn(
    gemini_bin: CliBinary, sandbox: Sandbox, model_server: Any, run_cli: Any
) -> None:
    model_server.script("gemini-text", text_script())
    run = run_cli(
        gemini_argv(gemini_bin, TEXT_PROMPT),
        env=gemini_env(sandbox, model_server.base_url("gemini-text")),
        cwd=sandbox.work,
    )
    run.assert_clean_exit()
    assert run.events[0]["type"] == "init"
    assert run.events[0]["model"] == GEMINI_MODEL
    assert gemini_answer(run) == TEXT_ANSWER, run.describe()
    result = run.of_type("result")
    assert len(result) == 1, run.describe()
    assert result[0]["status"] == "success", run.describe()
    reqs = assert_text_request(
        model_server, "gemini-text", run, path=GEMINI_PATH, body_stream=False
    )
    assert len(reqs) == 1, [r.path for r in reqs]
    assert reqs[0].query == "alt=sse"


def test_gemini_mcp_tool_turn(
    gemini_bin: CliBinary,
    sandbox: Sandbox,
    model_server: Any,
    run_cli: Any,
    mcp_server: McpTestServer,
) -> None:
    model_server.script(
        "gemini-tool", tool_script(ToolCall(name="mcp_mock_add", arguments={"a": 2, "b": 3}))
    )
    run = run_cli(
        gemini_argv(gemini_bin, TOOL_PROMPT),
        env=gemini_env(sandbox, model_server.base_url("gemini-tool"), mcp_server.url),
        cwd=sandbox.work,
    )
    run.assert_clean_exit()
    tool_uses = run.of_type("tool_use")
    assert [(t["tool_name"], t["parameters"]) for t in tool_uses] == [
        ("mcp_mock_add", {"a": 2, "b": 3})
    ], run.describe()
    tool_results = run.of_type("tool_result")
    assert len(tool_results) == 1, run.describe()
    assert tool_results[0]["status"] == "success", run.describe()
    assert returned_five(tool_results[0]["output"]), tool_results
    follow = assert_tool_roundtrip(model_server, "gemini-tool", mcp_server, run, call_id=None)
    assert "mcp_mock_add" in follow.parsed.tool_names  # type: ignore[union-attr]
    answer = gemini_answer(run)
    assert answer.startswith(TOOL_PREAMBLE), answer
    assert FOLLOW_UP in answer, answer
    assert returned_five(answer.split(FOLLOW_UP, 1)[1]), answer
    assert run.of_type("result")[-1]["status"] == "success", run.describe()
