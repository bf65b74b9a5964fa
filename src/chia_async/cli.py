"""The ``chia-async`` command (also ``python -m chia_async``).

``demo`` runs the main job offline: an OpenAI-compatible backend against the built-in
scripted model server, with a real MCP tool, streamed to the terminal.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    """An OpenAI-compatible backend against the built-in scripted model server, calling a
    real MCP tool (an in-process ``mcp`` server), streamed to the terminal."""
    from mcp.server import MCPServer

    from chia_async.backends.openai_compat import OpenAICompatLLM
    from chia_async.events import (
        Completed,
        Retrying,
        TextDelta,
        ToolCallFinished,
        ToolResult,
    )
    from chia_async.testing import Fault, ParsedRequest, ScriptedModelServer, ToolCall, Turn
    from chia_async.tools import ChiaTool

    calculator = MCPServer("calculator", log_level="WARNING")  # mcp logs INFO to the root logger

    @calculator.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    state = {"failed_once": False}

    def model(request: ParsedRequest) -> Turn:
        # the scripted "model": one transient 503 (retried), a tool call, then an answer
        if not state["failed_once"]:
            state["failed_once"] = True
            return Turn(fault=Fault.http(503, "overloaded", retry_after=0.2))
        if request.tool_results:
            total = request.tool_results[0].output
            return Turn(text=f"The calculator says 2 + 3 = {total}.", chunks=6, chunk_delay=0.05)
        tool = next(name for name in request.tool_names if name.endswith("add"))
        return Turn(
            text="Let me add those. ", tool_calls=[ToolCall(name=tool, arguments={"a": 2, "b": 3})]
        )

    out = sys.stdout
    with ScriptedModelServer() as server:
        server.script("demo", model)
        llm = OpenAICompatLLM(
            "scripted-model",
            base_url=server.base_url("demo") + "/v1",
            api_key="sk-demo",
            logging_name="demo",
            logging_level=logging.WARNING,  # the terminal shows events, not debug logs
        )
        tools = [ChiaTool.in_process(calculator, name="calculator")]
        for event in llm.stream_sync(args.prompt, tools):
            if isinstance(event, Retrying):
                print(f"[retrying in {event.delay:.2f}s after: {event.error}]", file=out)
            elif isinstance(event, TextDelta):
                out.write(event.text)
                out.flush()
            elif isinstance(event, ToolCallFinished):
                print(f"\n[tool call {event.name}({event.arguments})]", file=out)
            elif isinstance(event, ToolResult):
                print(f"[tool result: {event.output}]", file=out)
            elif isinstance(event, Completed):
                usage = event.result.usage
                print(
                    f"\n[done: success={event.result.success} stop={event.result.stop_reason} "
                    f"tokens in/out={usage.input_tokens}/{usage.output_tokens} "
                    f"in {event.result.duration_s:.2f}s]",
                    file=out,
                )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chia-async`` command."""
    parser = argparse.ArgumentParser(prog="chia-async", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a streamed turn offline")
    demo.add_argument("prompt", nargs="?", default="What is 2 + 3? Use the calculator.")
    demo.set_defaults(handler=_demo)
    args = parser.parse_args(argv)
    handler = args.handler
    return int(handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
