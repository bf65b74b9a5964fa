"""The same task as 03_mcp_tools.py, on a coding-agent CLI: Claude Code runs the turn (and the
tool calls) itself, and chia_async streams its events.

    python examples/04_cli_agent.py

Needs the ``claude`` CLI (on PATH, or in .ci-cache/npm/bin from .ci/install-clis). Uses
Anthropic when ``ANTHROPIC_API_KEY`` is set; else the CLI talks to a scripted model on
loopback, with a scratch HOME so your own ~/.claude is not touched.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

from chia_async.backends.claude import ClaudeCodeLLM
from chia_async.events import SessionStarted, TextDelta, ToolCallFinished, ToolResult
from chia_async.testing import ParsedRequest, ScriptedModelServer, ToolCall, Turn
from chia_async.tools import ChiaTool

HERE = Path(__file__).parent
TASK = "What is 1234 + 4321? Use the calculator."


def find_claude() -> str | None:
    local = HERE.parent / ".ci-cache" / "npm" / "bin" / "claude"
    return shutil.which("claude") or (str(local) if local.exists() else None)


def run(llm: ClaudeCodeLLM) -> None:
    # the CLI starts the stdio server itself, from the MCP config chia_async writes for it
    calculator = ChiaTool.stdio(
        sys.executable, str(HERE / "calculator_server.py"), name="calculator"
    )
    for event in llm.stream_sync(TASK, [calculator]):
        if isinstance(event, SessionStarted):
            print(f"session: {event.session_id}")
        elif isinstance(event, ToolCallFinished):
            print(f"tool call: {event.name}({event.arguments})")
        elif isinstance(event, ToolResult):
            print(f"tool result: {event.output}")
        elif isinstance(event, TextDelta):
            print(event.text, end="", flush=True)
    print()


def scripted_model(request: ParsedRequest) -> Turn:
    """Plays the model: calls the add tool, then answers with its result."""
    if request.tool_results:
        return Turn(text=f"The calculator says: {request.tool_results[-1].output}")
    add = next(name for name in request.tool_names if name.endswith("__add"))
    return Turn(tool_calls=[ToolCall(name=add, arguments={"a": 1234, "b": 4321})])


def main() -> None:
    claude = find_claude()
    if claude is None:
        print("skipped: the claude CLI is not installed (npm install -g @anthropic-ai/claude-code)")
        return
    if os.environ.get("ANTHROPIC_API_KEY"):
        run(ClaudeCodeLLM(cli_path=claude, api_key=os.environ["ANTHROPIC_API_KEY"]))
        return
    with ScriptedModelServer() as server, tempfile.TemporaryDirectory() as home:
        server.script("default", scripted_model)
        env = {"HOME": home, "ANTHROPIC_BASE_URL": server.url}
        run(ClaudeCodeLLM(cli_path=claude, api_key="offline", env=env, work_dir=home))


if __name__ == "__main__":
    main()
