"""A provider API with MCP tools: the model calls ``add`` on an MCP server that chia_async
starts over stdio, runs the calls, and sends the results back until the model answers.

    python examples/03_mcp_tools.py

Talks to OpenAI when ``OPENAI_API_KEY`` is set, else to a scripted model on loopback.
Other ways to give a tool: ``ChiaTool.http("http://host:port/mcp")`` for a server that is
already running, ``ChiaTool.in_process(server)`` for an ``mcp`` server object in this process.
"""

import os
import sys
from pathlib import Path

from chia_async.backends.openai_providers import OpenAILLM
from chia_async.events import TextDelta, ToolCallFinished, ToolResult
from chia_async.testing import ParsedRequest, ScriptedModelServer, ToolCall, Turn
from chia_async.tools import ChiaTool

SERVER = Path(__file__).with_name("calculator_server.py")
TASK = "What is 1234 + 4321? Use the calculator."


def run(llm: OpenAILLM) -> None:
    calculator = ChiaTool.stdio(sys.executable, str(SERVER), name="calculator")
    for event in llm.stream_sync(TASK, [calculator]):
        if isinstance(event, ToolCallFinished):
            print(f"tool call: {event.name}({event.arguments})")
        elif isinstance(event, ToolResult):
            print(f"tool result: {event.output}")
        elif isinstance(event, TextDelta):
            print(event.text, end="", flush=True)
    print()


def scripted_model(request: ParsedRequest) -> Turn:
    """Plays the model: calls the add tool, then reads its result back."""
    if request.tool_results:
        return Turn(text=f"1234 + 4321 = {request.tool_results[-1].output}")
    add = next(name for name in request.tool_names if name.endswith("add"))
    return Turn(tool_calls=[ToolCall(name=add, arguments={"a": 1234, "b": 4321})])


def main() -> None:
    if os.environ.get("OPENAI_API_KEY"):
        run(OpenAILLM("gpt-5-mini"))
        return
    with ScriptedModelServer() as server:
        server.script("default", scripted_model)
        run(OpenAILLM("gpt-5-mini", base_url=f"{server.url}/v1", api_key="offline"))


if __name__ == "__main__":
    main()
