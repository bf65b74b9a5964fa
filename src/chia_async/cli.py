"""The ``chia-async`` command (also ``python -m chia_async``).

Commands::

    chia-async run --backend NAME [--model M] [--tool URL|CMD]... [--resume] [--json] PROMPT
    chia-async backends [NAME...] [--json]
    chia-async serve [--port N] [--script FILE]...
    chia-async demo

``run`` streams one turn: text as it arrives, tool calls and their results, retries with
their wait, and usage and cost at the end (with ``rich`` when it is installed, plain text
otherwise), or, with ``--json``, one JSON event per line (``TurnEvent.from_dict`` reads them
back). ``backends`` says which backends are usable here and what to do about the others.
``serve`` runs the scripted model server with built-in scripts, for offline use, and prints
the base URL each backend needs. ``demo`` runs the main job offline in one command.

Exit codes of ``run`` (a failure also prints one line, ``chia-async: error: KIND: ...``, on
stderr; a JSON object with ``--json``):

====  ====================================================================
0     success
1     any other failure (unknown error, a result that is not a success)
2     usage: bad arguments, unknown backend, no model, nothing to resume
3     not installed: the backend's SDK, its CLI, or the backend itself
4     authentication: missing, invalid or expired credentials
5     billing: payment, credit or quota exhausted
6     rate limit (the reset time, when known, is in the message)
7     invalid request
8     context length exceeded
9     server error (5xx, overloaded, incomplete or malformed response)
10    timeout or stall
11    output truncated at the max output tokens
12    content blocked by a safety filter
13    the CLI process failed
130   interrupted (Ctrl-C)
143   terminated (SIGTERM)
====  ====================================================================
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from chia_async.turn_view import clip

if TYPE_CHECKING:
    from chia_async.backends.registry import BackendEntry
    from chia_async.base import LLMCallBase
    from chia_async.results import QueryResult
    from chia_async.testing.script import Script
    from chia_async.tools import ChiaTool
    from chia_async.turn_view import PlainView

__all__ = ["EXIT_CODES", "exit_code_for", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_INSTALLED = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

#: Exit code of ``run`` per error kind (:attr:`chia_async.errors.ChiaError.kind`).
EXIT_CODES: Mapping[str, int] = {
    "cli_not_found": EXIT_NOT_INSTALLED,
    "authentication": 4,
    "billing": 5,
    "rate_limit": 6,
    "invalid_request": 7,
    "context_length": 8,
    "server": 9,
    "incomplete_response": 9,
    "malformed_response": 9,
    "timeout": 10,
    "stall": 10,
    "max_output_tokens": 11,
    "content_blocked": 12,
    "process": 13,
    "line_too_long": 13,
}

#: The key handed to a backend pointed at a loopback server when no key is configured:
#: local servers (the scripted one, Ollama, vLLM) ignore it, but SDKs and CLIs refuse none.
LOCAL_PLACEHOLDER_KEY = "chia-local-no-key"


def exit_code_for(error: BaseException) -> int:
    """The exit code of ``run`` for ``error`` (see the module docstring)."""
    return EXIT_CODES.get(str(getattr(error, "kind", "")), EXIT_FAILED)


class UsageError(Exception):
    """A mistake in the command line: exit code 2."""


class NotInstalledError(Exception):
    """Something the command needs is not installed: exit code 3."""


# -- demo -----------------------------------------------------------------------------------------


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


# -- run: arguments -------------------------------------------------------------------------------

_TOOL_NAME = re.compile(r"^([A-Za-z0-9_-]{1,64})=(.+)$", re.DOTALL)


def parse_tools(specs: Sequence[str]) -> list[ChiaTool]:
    """``--tool`` values as ChiaTools: a URL is a streamable-HTTP MCP server, anything else a
    command line that starts a stdio MCP server. ``NAME=...`` names the server (default:
    the module of ``python -m MODULE``, the command's file name, or ``tools``)."""
    from chia_async.tools import ChiaTool

    tools: list[ChiaTool] = []
    taken: set[str] = set()
    for spec in specs:
        named = _TOOL_NAME.match(spec)
        name, target = (named.group(1), named.group(2)) if named else (None, spec)
        target = target.strip()
        if not target:
            raise UsageError(f"--tool {spec!r}: give a URL or a command")
        if target.startswith(("http://", "https://")):
            base = name or "tools"
            tool_name = name or _unique(base, taken)
            tool = ChiaTool.http(target, name=tool_name)
        else:
            try:
                argv = shlex.split(target)
            except ValueError as exc:
                raise UsageError(f"--tool {spec!r}: {exc}") from None
            if not argv:
                raise UsageError(f"--tool {spec!r}: give a URL or a command")
            tool_name = name or _unique(_command_name(argv), taken)
            tool = ChiaTool.stdio(argv, name=tool_name)
        if tool.name in taken:
            raise UsageError(f"two --tool options are named {tool.name!r}; name them NAME=...")
        taken.add(tool.name)
        tools.append(tool)
    return tools


_RUNNERS = re.compile(r"^(python[\d.]*|node|npx|bunx?|deno|uvx?|pipx|sh|bash|run|x|exec)$")


def _command_name(argv: Sequence[str]) -> str:
    """A server name from its command: the module of ``python -m MODULE``, else the first
    word that is not a runner (``python``, ``npx``, ``uvx``...) or an option."""
    if "-m" in argv[:-1]:
        candidate = argv[argv.index("-m") + 1]
    else:
        words = [os.path.basename(a) for a in argv if not a.startswith("-")]
        candidate = next((w for w in words if not _RUNNERS.match(w)), words[0] if words else "")
        candidate = candidate.rsplit(".", 1)[0] if candidate.endswith((".py", ".js")) else candidate
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", candidate)[:64]
    return cleaned or "tools"


def _unique(base: str, taken: set[str]) -> str:
    if base not in taken:
        return base
    n = 2
    while f"{base}{n}"[:64] in taken:
        n += 1
    return f"{base}{n}"[:64]


def _is_loopback(url: str | None) -> bool:
    if not url:
        return False
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _choose_key(args: argparse.Namespace, entry: BackendEntry) -> str | None:
    """The API key for the run: ``--api-key-env``'s variable; else, for a provider API,
    the first of its usual variables that is set; else a placeholder for a loopback server.
    A CLI backend otherwise uses the CLI's own login."""
    if args.api_key_env:
        value = os.environ.get(args.api_key_env)
        if not value:
            raise UsageError(f"--api-key-env: {args.api_key_env} is not set")
        return value
    if entry.key_param is None:
        return None
    if entry.kind == "api":
        for name in entry.key_env:
            value = os.environ.get(name)
            if value:
                return value
    if _is_loopback(args.base_url):
        return LOCAL_PLACEHOLDER_KEY
    return None


def _load_class(entry: BackendEntry) -> type[LLMCallBase]:
    """The backend's class (its module defines its result class too), SDK checked."""
    from chia_async.backends import registry
    from chia_async.extras import MissingExtraError

    try:
        cls = registry.load_class(entry)
        registry.require_sdk(entry)
    except (registry.BackendUnavailableError, MissingExtraError) as exc:
        raise NotInstalledError(str(exc)) from None
    return cls


def _build_llm(args: argparse.Namespace, entry: BackendEntry) -> LLMCallBase:
    from chia_async.backends import registry

    cls = _load_class(entry)
    kwargs: dict[str, Any] = {
        "timeout_seconds": args.timeout,
        "retries": args.retries,
        "logging_level": logging.DEBUG if args.verbose else logging.WARNING,
    }
    if args.system:
        kwargs["system_message"] = args.system
    if args.work_dir is not None:
        if not registry.accepts(cls, "work_dir"):
            raise UsageError(f"backend {entry.name!r} does not take --work-dir")
        kwargs["work_dir"] = args.work_dir
    if entry.resume and registry.accepts(cls, "resume_session"):
        kwargs["resume_session"] = True  # so that the result carries the session state
    try:
        return registry.build(
            entry,
            model=args.model,
            api_key=_choose_key(args, entry),
            base_url=args.base_url,
            cli_path=args.cli_path,
            **kwargs,
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None


# -- run: sessions --------------------------------------------------------------------------------


def state_dir() -> Path:
    """Where ``run`` keeps the last session of each backend: ``$XDG_STATE_HOME/chia-async``
    (default ``~/.local/state/chia-async``)."""
    root = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(root) / "chia-async"


def _session_file(backend: str) -> Path:
    return state_dir() / "sessions" / f"{backend}.json"


def save_session(backend: str, model: str, result: QueryResult) -> Path:
    """Keep ``result``'s session state for ``run --resume`` (a 0600 file, written atomically)."""
    slim = dataclasses.replace(result, stream_result="", stderr="")
    payload = {
        "version": 1,
        "backend": backend,
        "model": model,
        "cwd": os.getcwd(),
        "saved_at": time.time(),
        "result": slim.to_dict(),
    }
    path = _session_file(backend)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(payload, file)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def load_session(backend: str) -> tuple[str, QueryResult]:
    """The model and result ``save_session`` kept for ``backend``."""
    from chia_async.results import QueryResult

    path = _session_file(backend)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        return str(payload.get("model") or ""), QueryResult.from_dict(payload["result"])
    except FileNotFoundError:
        raise UsageError(
            f"--resume: no saved session for backend {backend!r} (run once without --resume)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--resume: cannot read {path}: {exc}") from None


def _error_line(error: BaseException, code: int, as_json: bool) -> str:
    from chia_async.errors import ChiaError

    if isinstance(error, ChiaError):
        kind, message = error.kind, str(error)
    elif isinstance(error, UsageError):
        kind, message = "usage", str(error)
    elif isinstance(error, NotInstalledError):
        kind, message = "not_installed", str(error)
    else:
        kind, message = type(error).__name__, str(error)
    from chia_async.redaction import redact

    message = redact(" ".join(message.split()))
    if as_json:
        data: dict[str, Any] = {"error": {"kind": kind, "message": message}, "exit_code": code}
        if isinstance(error, ChiaError):
            data["error"] = {"kind": kind, **error.to_dict()}
        return json.dumps(data, default=str, ensure_ascii=False)
    return f"chia-async: error: {kind}: {clip(message, 600)}"


# -- run ------------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from chia_async.turn_view import JsonView, make_view

    view: PlainView = JsonView(sys.stdout) if args.json else make_view(sys.stdout)
    try:
        return _run_turn(args, view)
    except (UsageError, NotInstalledError) as exc:
        view.close()
        code = EXIT_USAGE if isinstance(exc, UsageError) else EXIT_NOT_INSTALLED
        print(_error_line(exc, code, args.json), file=sys.stderr)
        return code


def _run_turn(args: argparse.Namespace, view: PlainView) -> int:
    from chia_async.backends import registry

    try:
        entry = registry.get(args.backend)
    except registry.UnknownBackendError as exc:
        raise UsageError(str(exc)) from None
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        raise UsageError("the prompt is empty")
    tools = parse_tools(args.tool)
    previous = None
    if args.resume:
        if not entry.resume:
            raise UsageError(f"backend {entry.name!r} cannot resume a session")
        _load_class(entry)  # before reading the result: its class may live in the backend
        saved_model, previous = load_session(entry.name)
        args.model = args.model or saved_model or None
    llm = _build_llm(args, entry)
    if previous is not None:
        restore: Callable[[QueryResult], None] | None = getattr(llm, "restore_session", None)
        if restore is None:
            raise UsageError(f"backend {entry.name!r} cannot resume a session")
        try:
            restore(previous)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--resume: {exc}") from None
    view.header(entry.name, llm.model, [t.name for t in tools], previous is not None)
    outcome: dict[str, Any] = {}
    try:
        asyncio.run(_stream(llm, prompt, tools, view, outcome))
    except KeyboardInterrupt:
        view.close()
        print("chia-async: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except asyncio.CancelledError:  # SIGTERM: the turn was torn down like on Ctrl-C
        view.close()
        print("chia-async: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    error: BaseException | None = outcome.get("error")
    result: QueryResult | None = outcome.get("result")
    if isinstance(error, UsageError):
        raise error
    if error is not None:
        code = exit_code_for(error)
        view.error(error, code)
        print(_error_line(error, code, args.json), file=sys.stderr)
        return code
    view.close()
    if result is None:  # a stream never ends without Completed or an error; be safe anyway
        print("chia-async: error: unknown: the turn ended without a result", file=sys.stderr)
        return EXIT_FAILED
    if entry.resume and result.session is not None:
        save_session(entry.name, llm.model, result)
    if not result.success:
        if result.error is not None:
            code = exit_code_for(result.error)
            print(_error_line(result.error, code, args.json), file=sys.stderr)
            return code
        print("chia-async: error: failed: the backend reported a failed turn", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


async def _stream(
    llm: LLMCallBase,
    prompt: str,
    tools: Sequence[ChiaTool],
    view: PlainView,
    outcome: dict[str, Any],
) -> None:
    from chia_async.errors import ChiaError
    from chia_async.events import Completed

    # SIGTERM cancels the turn as Ctrl-C does, so MCP servers and CLIs are stopped too
    task = asyncio.current_task()
    if task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        stream = llm.stream(prompt, tools)  # checks the prompt and tools; starts nothing
    except (TypeError, ValueError) as exc:
        outcome["error"] = UsageError(str(exc))
        return
    try:
        async with llm, stream as events:
            async for event in events:
                view.event(event)
                if isinstance(event, Completed):
                    outcome["result"] = event.result
    except ChiaError as exc:
        outcome["error"] = exc


# -- backends -------------------------------------------------------------------------------------


def _backends(args: argparse.Namespace) -> int:
    from chia_async.backends import registry

    try:
        entries = [registry.get(name) for name in args.names] or list(registry.BACKENDS.values())
    except registry.UnknownBackendError as exc:
        print(_error_line(UsageError(str(exc)), EXIT_USAGE, args.json), file=sys.stderr)
        return EXIT_USAGE

    async def inspect_all() -> list[registry.BackendStatus]:
        return list(await asyncio.gather(*(registry.inspect(e) for e in entries)))

    statuses = asyncio.run(inspect_all())
    if args.json:
        for status in statuses:
            print(json.dumps(status.to_dict()))
        return EXIT_OK
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        width = max(len(s.name) for s in statuses)
        for s in statuses:
            print(f"{s.name:<{width}}  {s.status:<19}  {s.detail}")
            if s.hint:
                print(f"{'':<{width}}  {'':<19}  → {s.hint}")
        return EXIT_OK
    from rich.markup import escape

    table = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 2, 0, 0))
    table.add_column("backend", no_wrap=True, style="bold")
    table.add_column("status", no_wrap=True)
    table.add_column("details", overflow="fold")
    colours = {"ready": "green", "not available": "dim", "not configured": "yellow"}
    for s in statuses:
        detail = f"[dim]{escape(s.summary)}[/]\n{escape(s.detail)}"
        if s.hint:
            detail += f"\n[bold]→ {escape(s.hint)}[/]"
        colour = colours.get(s.status, "red")
        table.add_row(s.name, f"[{colour}]{s.status}[/]", detail)
    Console(highlight=False, emoji=False).print(table)
    return EXIT_OK


# -- serve ----------------------------------------------------------------------------------------

#: Tools the ``tool`` script knows how to call, by the end of their name.
_TOOL_ARGUMENTS: Mapping[str, dict[str, Any]] = {
    "add": {"a": 2, "b": 3},
    "get_current_time": {"timezone": "UTC"},
}


def builtin_scripts() -> list[tuple[Script, str]]:
    """The scripts ``serve`` plays without a script file, with what each does."""
    from chia_async.testing.script import Fault, ParsedRequest, Script, ToolCall, Turn

    def hello(request: ParsedRequest) -> Turn:
        said = clip(request.last_user_text, 200)
        return Turn(text=f"Hello from the scripted model! You said: {said}", chunks=8)

    count = iter(range(1 << 62))

    def tool(request: ParsedRequest) -> Turn:
        results = request.tool_results
        if results:
            outputs = "; ".join(clip(r.output, 300) for r in results)
            return Turn(text=f"The tool returned: {outputs}", chunks=6)
        if not request.tool_names:
            return Turn(text="No tools were offered: pass --tool URL or --tool COMMAND.")
        for name in request.tool_names:
            for suffix, arguments in _TOOL_ARGUMENTS.items():
                if name.endswith(suffix):
                    return Turn(
                        text="Let me call a tool. ",
                        tool_calls=[ToolCall(name=name, arguments=arguments)],
                    )
        name = request.tool_names[0]
        arguments = {"text": request.last_user_text} if name.endswith("echo") else {}
        return Turn(
            text="Let me call a tool. ", tool_calls=[ToolCall(name=name, arguments=arguments)]
        )

    def flaky(request: ParsedRequest) -> Turn:
        if next(count) % 2 == 0:
            return Turn(fault=Fault.http(503, "overloaded", retry_after=1.0))
        return Turn(text="Answered on the second try.", chunks=4)

    def slow(request: ParsedRequest) -> Turn:
        words = "This answer arrives one word at a time, slowly enough to watch it stream."
        return Turn(text=[w + " " for w in words.split()], chunk_delay=0.15)

    def fixed(turn: Turn) -> Callable[[ParsedRequest], Turn]:
        return lambda request: turn

    specs: list[tuple[str, Callable[[ParsedRequest], Turn], str]] = [
        ("hello", hello, "streams a greeting that echoes the prompt"),
        ("tool", tool, "calls a tool (add, get_current_time, echo...), then reports its result"),
        ("flaky", flaky, "a 503 with retry-after: 1, then an answer (watch the retry)"),
        ("slow", slow, "an answer dripped word by word"),
        (
            "rate-limit",
            fixed(Turn(fault=Fault.http(429, retry_after=3600))),
            "429, resets in an hour: RateLimitError (exit 6)",
        ),
        ("auth", fixed(Turn(fault=Fault.http(401))), "401: AuthenticationError (exit 4)"),
        (
            "billing",
            fixed(Turn(fault=Fault.http(429, "billing"))),
            "quota exhausted: BillingError (exit 5)",
        ),
        (
            "invalid",
            fixed(Turn(fault=Fault.http(400))),
            "400: InvalidRequestError (exit 7)",
        ),
        (
            "context-length",
            fixed(Turn(fault=Fault.http(400, "context_length"))),
            "prompt too long: ContextLengthExceededError (exit 8)",
        ),
        (
            "server-error",
            fixed(Turn(fault=Fault.http(500))),
            "500 every time: ServerError after the retries (exit 9)",
        ),
        (
            "max-tokens",
            fixed(Turn(text="This answer is cut", stop="max_tokens")),
            "truncated: MaxOutputTokensError with the partial text (exit 11)",
        ),
        (
            "blocked",
            fixed(Turn(text="", stop="content_filter")),
            "content filter: ContentBlockedError (exit 12)",
        ),
        (
            "stall",
            fixed(Turn(fault=Fault(kind="stall"))),
            "headers, then silence: a timeout (exit 10; use --timeout)",
        ),
    ]
    scripts = [(Script(name, fn), description) for name, fn, description in specs]
    scripts.append((Script("default", hello), "what a base URL without /s/NAME plays (hello)"))
    return scripts


_PROTOCOLS: Sequence[tuple[tuple[str, ...], str, str]] = (
    (("openai", "openai_responses"), "OpenAI-compatible", "/v1"),
    (("anthropic",), "Anthropic", ""),
    (("gemini",), "Gemini", ""),
    (("bedrock",), "Bedrock", ""),
)


def serve_banner(url: str, scripts: Sequence[tuple[str, str]]) -> str:
    """What ``serve`` prints once it listens: the scripts, and each backend's base URL."""
    from chia_async.backends.registry import BACKENDS

    lines = [f"serving on {url}", "", "scripts (choose one with the /s/NAME/ part of the URL):"]
    width = max(len(name) for name, _ in scripts)
    lines += [f"  {name:<{width}}  {description}" for name, description in scripts]
    lines += ["", "base URLs (--base-url), with NAME a script name:"]
    for protocols, label, suffix in _PROTOCOLS:
        names = [e.name for e in BACKENDS.values() if e.protocol in protocols and e.base_url_param]
        if names:
            lines.append(f"  {f'{url}/s/NAME{suffix}':<40}  {label}: {', '.join(names)}")
    lines += [
        "",
        "try, in another terminal:",
        f'  chia-async run --backend openai --base-url {url}/s/hello/v1 "say hello"',
        f"  chia-async run --backend openai --base-url {url}/s/tool/v1 "
        '--tool "python -m mcp_server_time" "what time is it?"',
        f'  chia-async run --backend openai --base-url {url}/s/flaky/v1 "hi"',
        f'  chia-async run --backend claude --base-url {url}/s/hello "say hello"',
        "",
        "no key is needed: a loopback --base-url gets a placeholder. Ctrl-C stops the server.",
    ]
    return "\n".join(lines)


def _serve(args: argparse.Namespace) -> int:
    try:
        from chia_async.testing.script import ScriptFileError, load_scripts
        from chia_async.testing.server import ScriptedModelServer
    except ImportError as exc:
        print(f"chia-async: error: not_installed: {exc}", file=sys.stderr)
        return EXIT_NOT_INSTALLED
    described = builtin_scripts()
    for path in args.script:
        try:
            described += [(s, f"from {path}") for s in load_scripts(path)]
        except ScriptFileError as exc:
            print(f"chia-async: error: usage: {exc}", file=sys.stderr)
            return EXIT_USAGE
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server = ScriptedModelServer(host=args.host, port=args.port, max_recorded=1000)
        shown: dict[str, str] = {}
        for script, description in described:  # later ones (files) replace built-ins
            server.add(script)
            shown[script.name] = description
        try:
            server.start()
        except OSError as exc:
            print(
                f"chia-async: error: cannot listen on {args.host}:{args.port}: {exc}",
                file=sys.stderr,
            )
            return EXIT_FAILED
        try:
            print(serve_banner(server.url, list(shown.items())), flush=True)
            while not stop.wait(0.5):  # a timed wait keeps the main thread responsive
                pass
        finally:
            server.close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK


# -- the command ----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chia-async",
        description="Run agent turns on any chia_async backend, check which backends are "
        "usable, and serve scripted models for offline use.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="stream one turn of a backend",
        description="Stream one turn: text as it arrives, tool calls and results, retries, "
        "usage and cost. Exit codes: 0 ok, 1 other failure, 2 usage, 3 not installed, "
        "4 authentication, 5 billing, 6 rate limit, 7 invalid request, 8 context length, "
        "9 server error, 10 timeout, 11 max output tokens, 12 content blocked, "
        "13 CLI process failed, 130 interrupted, 143 terminated.",
    )
    run.add_argument("prompt", help="the prompt ('-' reads it from stdin)")
    run.add_argument(
        "-b", "--backend", required=True, help="backend name (see: chia-async backends)"
    )
    run.add_argument("-m", "--model", help="model name (default: the backend's)")
    run.add_argument(
        "-t",
        "--tool",
        action="append",
        default=[],
        metavar="URL|CMD",
        help="an MCP server: a URL (streamable HTTP) or a command line (stdio), optionally "
        "NAME=...; may be repeated",
    )
    run.add_argument("--resume", action="store_true", help="continue this backend's last session")
    run.add_argument("--json", action="store_true", help="print events as JSON lines")
    run.add_argument("--base-url", help="the endpoint (e.g. one printed by chia-async serve)")
    run.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="read the API key from this environment variable (default: the backend's "
        "usual one for provider APIs; the CLI's own login for coding-agent CLIs)",
    )
    run.add_argument("--system", help="system message")
    run.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole turn")
    run.add_argument("--retries", type=int, default=3, help="retries of transient failures")
    run.add_argument("--cli-path", help="the coding-agent CLI executable to run")
    run.add_argument("--work-dir", help="working directory of a coding-agent CLI")
    run.set_defaults(handler=_run)

    backends = commands.add_parser(
        "backends",
        help="list backends and whether each is installed and configured",
        description="For every backend: is its SDK or CLI installed (and the CLI's version "
        "supported), are credentials present, and what to do if not. Only names of "
        "variables and files are shown, never their values.",
    )
    backends.add_argument("names", nargs="*", metavar="NAME", help="only these backends")
    backends.add_argument("--json", action="store_true", help="one JSON object per backend")
    backends.set_defaults(handler=_backends)

    serve = commands.add_parser(
        "serve",
        help="serve scripted models on loopback, for offline use",
        description="Run the scripted model server (chia_async.testing) with built-in "
        "scripts plus any --script files, printing the base URL each backend needs.",
    )
    serve.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument(
        "--script",
        action="append",
        default=[],
        metavar="FILE",
        help="script file (see chia_async.testing.script.load_scripts); may be repeated",
    )
    serve.set_defaults(handler=_serve)

    demo = commands.add_parser("demo", help="run a streamed turn offline")
    demo.add_argument("prompt", nargs="?", default="What is 2 + 3? Use the calculator.")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chia-async`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logging.getLogger("chia_async").addHandler(handler)
    handler_fn: Callable[[argparse.Namespace], int] = args.handler
    try:
        return int(handler_fn(args))
    except KeyboardInterrupt:
        print("chia-async: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, as other command-line tools do
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
