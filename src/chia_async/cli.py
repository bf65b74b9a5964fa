"""The ``chia-async`` command (also ``python -m chia_async``).

``demo`` runs the main job offline: a backend streams a turn to the terminal.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from chia_async.errors import ServerError
    from chia_async.events import (
        Completed,
        ReasoningDelta,
        Retrying,
        StepFinished,
        TextDelta,
    )
    from chia_async.results import Usage
    from chia_async.testing import Delay, ScriptedLLM

    # The scripted backend replays a realistic turn: a transient failure that is retried,
    # then reasoning and an answer streamed in pieces.
    words = ["chia_async", "streams", "every", "backend", "through", "one", "interface."]
    llm = ScriptedLLM(
        [
            ServerError("demo", "503 overloaded (scripted)", retry_after=0.2),
            [
                ReasoningDelta(text="The user wants a one-line summary."),
                *[step for word in words for step in (Delay(0.03), word + " ")],
                Usage(input_tokens=12, output_tokens=len(words)),
                StepFinished(finish_reason="end_turn"),
            ],
        ],
        logging_name="demo",
    )
    out = sys.stdout
    for event in llm.stream_sync(args.prompt):
        if isinstance(event, Retrying):
            print(f"[retrying in {event.delay:.2f}s after: {event.error}]", file=out)
        elif isinstance(event, ReasoningDelta):
            print(f"[thinking] {event.text}", file=out)
        elif isinstance(event, TextDelta):
            out.write(event.text)
            out.flush()
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
    demo.add_argument("prompt", nargs="?", default="Summarise chia_async in one line.")
    demo.set_defaults(handler=_demo)
    args = parser.parse_args(argv)
    handler = args.handler
    return int(handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
