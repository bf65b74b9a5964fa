"""Command line of the test kit: run the scripted model server as a standalone process.

``python -m chia_async.testing serve --port 8765 --script scripts.json`` serves the scripts of
the file (see :func:`chia_async.testing.script.load_scripts` for the format) until SIGINT or
SIGTERM. Once it listens it prints one line, ``serving on http://HOST:PORT``, so a parent
process started with ``--port 0`` can read the port it got.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chia_async.testing",
        description="chia_async test kit: a scripted model server speaking the real wire "
        "protocols (OpenAI Chat Completions and Responses, Anthropic Messages, Gemini, "
        "Bedrock) on loopback.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve scripts from a file until SIGINT/SIGTERM",
        description="Serve the scripts of FILE. Select a script with the path prefix "
        "/s/<name>/; requests without it use the script named 'default'.",
    )
    serve.add_argument("--port", type=int, default=0, help="port to listen on (0: any free one)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument(
        "--script",
        action="append",
        default=[],
        metavar="FILE",
        help="script file (JSON, or YAML with PyYAML installed); may be repeated",
    )
    serve.add_argument(
        "--max-recorded",
        type=int,
        default=10_000,
        help="recorded requests kept in memory (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    # imported here so that --help works without the testing extra installed
    from chia_async.testing.script import ScriptFileError, load_scripts
    from chia_async.testing.server import ScriptedModelServer

    scripts = []
    for path in args.script:
        try:
            scripts.extend(load_scripts(path))
        except ScriptFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server = ScriptedModelServer(host=args.host, port=args.port, max_recorded=args.max_recorded)
        for script in scripts:
            server.add(script)
        try:
            server.start()
        except OSError as exc:
            print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 1
        try:
            print(f"serving on {server.url}", flush=True)
            # a timed wait keeps the main thread responsive to signals
            while not stop.wait(0.5):
                pass
        finally:
            server.close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
