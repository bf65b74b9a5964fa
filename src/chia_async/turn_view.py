"""Show a turn's events in a terminal, as ``chia-async run`` does.

:class:`PlainView` writes plain lines; :class:`RichView` (with the optional ``rich`` package,
``pip install 'chia-async[cli]'``) adds colours and a spinner while the turn waits on the
model, a tool or a retry; :class:`JsonView` writes one ``event.to_dict()`` per line, which
``TurnEvent.from_dict`` reads back. :func:`make_view` picks Rich when it is installed::

    view = make_view(sys.stdout)
    async for event in llm.stream(prompt, tools):
        view.event(event)
    view.close()

``rich`` is imported only when a :class:`RichView` is made.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chia_async._event_base import TurnEvent
    from chia_async.results import QueryResult

__all__ = ["JsonView", "PlainView", "RichView", "clip", "make_view", "summary"]


def clip(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _format_arguments(arguments: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())


class PlainView:
    """The live view of a turn as plain text. :class:`RichView` styles the same lines."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.mid_line = False  # the last thing written was streamed text without a newline
        self.streaming: str | None = None  # "text" | "reasoning" while a stream is open

    # sinks: RichView overrides these two (and the spinner)
    def write_stream(self, text: str, kind: str) -> None:
        self.out.write(text)
        self.out.flush()

    def write_line(self, text: str, style: str) -> None:
        self.out.write(f"{text}\n")
        self.out.flush()

    def wait(self, message: str | None) -> None:
        """Show (or, with None, clear) what the turn is waiting for; plain text shows nothing."""

    # events
    def _end_stream(self) -> None:
        if self.mid_line:
            self.write_stream("\n", "text")
            self.mid_line = False
        self.streaming = None

    def line(self, text: str, style: str = "") -> None:
        """Write one line, ending any text streamed before it."""
        self.wait(None)
        self._end_stream()
        self.write_line(text, style)

    def header(self, backend: str, model: str, tools: Sequence[str], resumed: bool) -> None:
        """The first line: what is running."""
        parts = [f"backend {backend}"]
        if model:
            parts.append(f"model {model}")
        if tools:
            parts.append(f"tools {', '.join(tools)}")
        if resumed:
            parts.append("resuming the last session")
        self.line(" · ".join(parts), "dim")
        self.wait("waiting for the model")

    def event(self, event: TurnEvent) -> None:
        """Show one event."""
        from chia_async import events as ev

        if isinstance(event, ev.TextDelta | ev.ReasoningDelta):
            kind = "text" if isinstance(event, ev.TextDelta) else "reasoning"
            if not event.text:
                return
            self.wait(None)
            if self.streaming != kind:
                self._end_stream()
                self.streaming = kind
                if kind == "reasoning":
                    self.write_stream("(thinking) ", "reasoning")
            self.write_stream(event.text, kind)
            self.mid_line = not event.text.endswith("\n")
        elif isinstance(event, ev.ToolCallFinished):
            self.line(f"→ {event.name}({clip(_format_arguments(event.arguments), 200)})", "tool")
            self.wait(f"running {event.name}")
        elif isinstance(event, ev.ToolResult):
            by = " (run by the agent)" if event.executed_by == "backend" else ""
            mark = "✗" if event.is_error else "←"
            self.line(
                f"{mark} {clip(event.output, 300)}{by}", "error" if event.is_error else "result"
            )
            self.wait("waiting for the model")
        elif isinstance(event, ev.Retrying):
            error = event.error
            self.line(
                f"↻ attempt {event.attempt} failed ({error.kind}: {clip(str(error), 160)}); "
                f"retrying in {event.delay:.1f}s",
                "warning",
            )
            self.wait(f"retrying in {event.delay:.1f}s")
        elif isinstance(event, ev.FileChange):
            self.line(f"✎ {event.change} {event.path}", "tool")
        elif isinstance(event, ev.RateLimitStatus):
            if event.status != "allowed":
                reset = f", resets {event.reset_time.isoformat()}" if event.reset_time else ""
                self.line(f"rate limit {event.status}{reset}", "warning")
        elif isinstance(event, ev.SessionStarted):
            self.line(f"session {event.session_id}", "dim")
            self.wait("waiting for the model")
        elif isinstance(event, ev.Completed):
            self.line(summary(event.result), "done" if event.result.success else "error")

    def error(self, error: BaseException, code: int) -> None:
        """End the view after a failure (the error line itself goes to stderr)."""
        self.wait(None)
        self._end_stream()

    def close(self) -> None:
        """Stop the spinner and end an open line."""
        self.wait(None)
        self._end_stream()


def summary(result: QueryResult) -> str:
    """The last line of a turn: outcome, stop reason, tokens, cost, duration."""
    usage = result.usage
    parts = ["✓ done" if result.success else "✗ failed"]
    if result.stop_reason:
        parts[0] += f" ({result.stop_reason})"
    tokens = f"tokens {usage.input_tokens} in / {usage.output_tokens} out"
    extra = []
    if usage.cache_read_tokens:
        extra.append(f"{usage.cache_read_tokens} cache read")
    if usage.reasoning_tokens:
        extra.append(f"{usage.reasoning_tokens} reasoning")
    if extra:
        tokens += f" ({', '.join(extra)})"
    parts.append(tokens)
    parts.append(f"cost ${usage.cost_usd:.4f}" if usage.cost_usd is not None else "cost n/a")
    parts.append(f"{result.duration_s:.1f}s")
    return " · ".join(parts)


class RichView(PlainView):
    """The live view with ``rich``: colours, and a spinner while the turn waits."""

    STYLES: Mapping[str, str] = {
        "dim": "dim",
        "tool": "bold cyan",
        "result": "green",
        "error": "bold red",
        "warning": "yellow",
        "done": "bold green",
        "reasoning": "dim italic",
        "text": "",
    }

    def __init__(self, out: IO[str]) -> None:
        super().__init__(out)
        from rich.console import Console

        self.console = Console(file=out, highlight=False, soft_wrap=True, emoji=False)
        self._status: Any = None

    def write_stream(self, text: str, kind: str) -> None:
        self.console.print(text, end="", style=self.STYLES.get(kind, ""), markup=False)

    def write_line(self, text: str, style: str) -> None:
        self.console.print(text, style=self.STYLES.get(style, ""), markup=False)

    def wait(self, message: str | None) -> None:
        if not self.console.is_terminal:
            return
        if message is None:
            if self._status is not None:
                self._status.stop()
                self._status = None
            return
        if self.mid_line:
            return  # a spinner would overwrite the partial line
        if self._status is None:
            self._status = self.console.status(message, spinner="dots")
            self._status.start()
        else:
            self._status.update(message)


def make_view(out: IO[str]) -> PlainView:
    """A :class:`RichView` when ``rich`` is installed, else a :class:`PlainView`."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return PlainView(out)
    return RichView(out)


class JsonView(PlainView):
    """``--json``: one ``event.to_dict()`` per line; ``TurnEvent.from_dict`` reads it back."""

    def header(self, backend: str, model: str, tools: Sequence[str], resumed: bool) -> None:
        pass

    def event(self, event: TurnEvent) -> None:
        self.out.write(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")
        self.out.flush()

    def close(self) -> None:
        pass
