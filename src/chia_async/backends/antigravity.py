"""Google Antigravity CLI backend (``agy``, print mode).

``AntigravityLLM`` runs Google's Antigravity CLI non-interactively: the answer comes back as
**plain text** on stdout (print mode has no JSON or stream format, so there is no tool or
usage trace to parse). It is passed on as :class:`~chia_async.events.TextDelta` events as the
CLI writes it; the only hold-back is the first line, which is where ``agy`` prints its own
failures (``You've hit your limit · resets 4pm (America/Los_Angeles)``, a sign-in URL) even
when it exits 0 — so such a line never reaches the caller as an answer.

Auth is OAuth only: ``agy`` signs in with a Google account and keeps its token under the
Gemini config dir; there is no API-key path. The system prompt is folded into the user
message (print mode has no system-prompt flag), as in the reference. Errors are classified
from text, structured signatures first (a rate-limit or sign-in line), then patterns over
stdout and stderr of a failed run.

**How the prompt reaches agy.** By default on stdin, with no prompt flag: ``agy`` 1.1.1 and
later read the prompt from a non-TTY stdin when no ``--print``/``-p`` value is given (1.1.1
stopped reading stdin *after* a prompt flag, to fix a hang). That keeps the prompt out of
``ps``/``/proc/*/cmdline`` and out of the 128 KiB per-argument limit of Linux.
``prompt_in_argv=True`` passes it as ``--print <prompt>``, the reference's form, for builds
that take it only there.

**Tested against a fake.** No public ``agy`` build can be installed in this project's CI, so
the tests drive ``tests/antigravity/fake_agy.py``, a stand-in that implements the documented
print-mode behaviour (flags, stdin, plain-text output, the failure texts above); the real
CLI's output was not captured. Report differences from a real ``agy`` as bugs.

Errors keep the reference's ``chia.models.antigravity`` classes and signatures; each also
inherits the shared class of :mod:`chia_async.errors`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import re
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import anyio
import orjson

from chia_async import errors
from chia_async._event_base import TurnEvent
from chia_async.backends.gemini_cli import gemini_mcp_server
from chia_async.base import Attempt, check_flags
from chia_async.errors import ChiaError
from chia_async.events import Raw, TextDelta
from chia_async.ratelimit import parse_rate_limit_reset
from chia_async.results import QueryResult
from chia_async.subprocess.backend import CLIBackend, Invocation, RecordParser
from chia_async.subprocess.process import ProcessOutcome

__all__ = [
    "AntigravityError",
    "AntigravityLLM",
    "AntigravityOutputParser",
    "AuthenticationError",
    "BillingError",
    "ContextLengthExceededError",
    "InvalidRequestError",
    "MaxOutputTokensError",
    "RateLimitError",
    "ServerError",
    "UnknownAntigravityError",
    "parse_rate_limit_reset",
]


class AntigravityError(errors.BackendError):
    """Base for Antigravity CLI errors. Every subclass pickles with all its fields (for Ray).

    Also a :class:`chia_async.errors.ChiaError`."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class RateLimitError(AntigravityError, errors.RateLimitError):
    """A rate or usage limit was hit; ``reset_time`` says when it lifts."""

    def __init__(
        self,
        node_id: str,
        reset_time: datetime | None = None,
        raw_message: str = "",
        exit_code: int = -1,
    ) -> None:
        self._init(
            node_id=node_id, reset_time=reset_time, raw_message=raw_message, exit_code=exit_code
        )


class AuthenticationError(AntigravityError, errors.AuthenticationError):
    """The credentials are missing, invalid or expired."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class BillingError(AntigravityError, errors.BillingError):
    """The account has a billing, credit or quota problem."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class InvalidRequestError(AntigravityError, errors.InvalidRequestError):
    """The request is malformed or names something that does not exist."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class ServerError(AntigravityError, errors.ServerError):
    """A transient service-side failure (5xx, overloaded, connection)."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class MaxOutputTokensError(AntigravityError, errors.MaxOutputTokensError):
    """The response was truncated at the output token limit."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class UnknownAntigravityError(AntigravityError, errors.UnknownError):
    """A failure the CLI's output does not explain."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class ContextLengthExceededError(InvalidRequestError, errors.ContextLengthExceededError):
    """The prompt exceeded the model's context window. Not in the reference: a subclass of
    this backend's InvalidRequestError, so code written against the reference still catches it."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


# -- print-mode output -------------------------------------------------------------------------

#: Lines agy prints *instead of* an answer, also with exit code 0 (the reference notes that
#: print mode exits 0 when unauthenticated, printing a sign-in URL). Matched only against
#: the first line of stdout, and only when it is short, so an answer that merely talks about
#: rate limits is not mistaken for one.
_CLI_FAILURE_LINE = re.compile(
    r"hit your (?:\w+ )?limit|usage limit|out of (?:extra )?usage"
    r"|rate limit(?:ed| exceeded| reached)|resource has been exhausted|quota exceeded"
    r"|too many requests"
    r"|authentication required|not logged in|please sign in|sign in again"
    r"|visit the url to log in|log in at https?://|authentication (?:timed out|cancel+ed)"
    r"|auth cancel+ed|^error: empty prompt",
    re.IGNORECASE,
)
_FAILURE_LINE_MAX = 400
#: held-back text before the first line is complete (a first line longer than this is an answer)
_HOLD_LIMIT = 1024

_CONTEXT = re.compile(
    r"context (?:window|length)|prompt is too long|input token count|too many (?:input )?tokens"
    r"|exceeds the maximum number of tokens|maximum context",
    re.IGNORECASE,
)
_MAX_OUTPUT = re.compile(
    r"max(?:imum)? output tokens|output token limit|max_tokens|exceeded the token limit"
    r"|response was truncated",
    re.IGNORECASE,
)
_BILLING = re.compile(
    r"billing|payment|\b402\b|out of credits?|insufficient (?:credit|funds|balance)"
    r"|upgrade your plan|credit balance",
    re.IGNORECASE,
)
_RATE = re.compile(
    r"hit your (?:\w+ )?limit|usage limit|out of (?:extra )?usage|rate[ _-]?limit"
    r"|too many requests|resource[ _]exhausted|resource has been exhausted|\b429\b"
    r"|quota exceeded",
    re.IGNORECASE,
)
_AUTH = re.compile(
    r"authentication required|not logged in|please sign in|sign in again|visit the url to log in"
    r"|unauthori[sz]ed|unauthenticated|\b401\b|\b403\b|permission denied|invalid_grant"
    r"|token (?:has )?expired|expired or revoked|api key not valid|invalid api key"
    r"|authentication (?:failed|timed out|cancel+ed)|auth cancel+ed",
    re.IGNORECASE,
)
_INVALID = re.compile(
    r"empty prompt|invalid (?:request|argument|model)|unknown model|model not found"
    r"|flag provided but not defined|unknown (?:shorthand )?flag|bad request|\b400\b|\b404\b",
    re.IGNORECASE,
)
_SERVER = re.compile(
    r"\b50[0-4]\b|server error|overloaded|internal error|service unavailable|\bunavailable\b"
    r"|bad gateway|deadline exceeded|connection (?:reset|refused|error|closed)|econnreset"
    r"|econnrefused|socket hang up|fetch failed|network error|timed out|timeout",
    re.IGNORECASE,
)
#: what a failure message keeps of the output, at most (the field is clipped again anyway)
_MESSAGE_MAX = 2000


class AntigravityOutputParser:
    """Reads ``agy`` print-mode output (plain text) and classifies the run's outcome.

    Pure: no I/O. :meth:`feed_text` takes stdout as it arrives and returns the events to
    emit; :meth:`flush` returns what was still held back at the end; :meth:`outcome`
    returns the answer or raises the typed error. Text is held back only until the first
    line is complete (or :data:`_HOLD_LIMIT` characters arrived): if that line is one of
    ``agy``'s own failure lines, nothing of the output is an answer.
    """

    def __init__(self, node_id: str, *, now: Callable[[], datetime] | None = None) -> None:
        self.node_id = node_id
        self._now = now or (lambda: datetime.now(UTC))
        self._parts: list[str] = []
        self._holding = True
        self._cli_failure = False

    @property
    def stdout(self) -> str:
        """Everything read from stdout so far."""
        return "".join(self._parts)

    # -- RecordParser (text mode never sees JSONL records; kept for the protocol) --------------

    def feed(self, record: Mapping[str, Any]) -> list[TurnEvent]:
        """A JSON record: not something print mode prints; passed on as ``Raw``."""
        return [Raw(source="antigravity", data=dict(record))]

    def is_terminal(self, record: Mapping[str, Any]) -> bool:
        """Print mode has no terminal record: the run ends when the process does."""
        return False

    # -- text ---------------------------------------------------------------------------------

    def feed_text(self, text: str) -> list[TurnEvent]:
        """The events for one read of stdout."""
        self._parts.append(text)
        if not self._holding:
            return [] if self._cli_failure else [TextDelta(text=text)]
        head = self.stdout
        body = head.lstrip()
        newline = body.find("\n")
        if newline < 0 and len(body) < _HOLD_LIMIT:
            return []
        self._holding = False
        if self._is_failure_line(body[:newline] if newline >= 0 else body):
            self._cli_failure = True
            return []
        return [TextDelta(text=head)]

    def flush(self) -> list[TurnEvent]:
        """At the end of stdout: the held-back text, unless it is a failure line."""
        if not self._holding:
            return []
        self._holding = False
        head = self.stdout
        if self._is_failure_line(head.strip()):
            self._cli_failure = True
            return []
        return [TextDelta(text=head)] if head else []

    @staticmethod
    def _is_failure_line(line: str) -> bool:
        line = line.strip()
        return (
            bool(line) and len(line) <= _FAILURE_LINE_MAX and bool(_CLI_FAILURE_LINE.search(line))
        )

    # -- outcome ------------------------------------------------------------------------------

    def outcome(self, exit_code: int | None, stderr: str = "") -> str:
        """The answer of a successful run, or raise the run's typed error."""
        code = -1 if exit_code is None else exit_code
        stdout = self.stdout
        answer = stdout.strip()
        if self._cli_failure:
            raise self.classify(_join(stdout, stderr), code)
        if code != 0:
            raise self.classify(
                _join(stdout, stderr), code, fallback=f"agy exited with code {code}"
            )
        if not answer:
            # A known agy failure mode: print mode finishes but writes nothing when stdout
            # is not a terminal on some builds. Never a successful empty answer.
            raise self.classify(
                stderr,
                code,
                fallback="agy exited 0 without printing an answer (stdout was empty)",
            )
        return answer

    def classify(self, text: str, exit_code: int = -1, *, fallback: str = "") -> ChiaError:
        """The typed error ``text`` (stdout and stderr of a failed run) describes."""
        message = text.strip()[-_MESSAGE_MAX:] or fallback or "agy failed without a message"
        node, code = self.node_id, exit_code
        if _CONTEXT.search(text):
            return ContextLengthExceededError(node, exit_code=code, raw_message=message)
        if _MAX_OUTPUT.search(text):
            return MaxOutputTokensError(node, exit_code=code, raw_message=message)
        if _BILLING.search(text):
            return BillingError(node, exit_code=code, raw_message=message)
        reset = parse_rate_limit_reset(text, self._now())
        if _RATE.search(text) or (reset is not None and "reset" in text.lower()):
            return RateLimitError(node, reset, raw_message=message, exit_code=code)
        if _AUTH.search(text):
            return AuthenticationError(node, exit_code=code, raw_message=message)
        if _INVALID.search(text):
            return InvalidRequestError(node, exit_code=code, raw_message=message)
        if _SERVER.search(text):
            return ServerError(node, exit_code=code, raw_message=message)
        return UnknownAntigravityError(node, exit_code=code, raw_message=message)


def _join(stdout: str, stderr: str) -> str:
    return "\n".join(part for part in (stdout.strip(), stderr.strip()) if part)


# -- the backend ---------------------------------------------------------------------------------

#: Linux refuses a single argv string over 128 KiB (MAX_ARG_STRLEN) with E2BIG
_ARG_MAX = 128 * 1024 - 1
#: agy's own print timeout stops it this long before our deadline, so it can say why
_PRINT_TIMEOUT_MARGIN = 5


class McpConfigFile:
    """agy's ``mcp_config.json``, shared by every run on the machine (agy has no per-run MCP
    option): servers are added for a run and taken out again when the last run using them
    ends, restoring what the file held under that name before.

    Every change happens under an exclusive lock (``flock`` on a sibling lock file) with an
    atomic replace (0600). Which run holds which entries is kept next to it in
    ``.chia-mcp-holders.json``; a run that died without cleaning up leaves its entries, as
    the reference always did.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._holders = path.with_name(".chia-mcp-holders.json")

    def add(self, servers: Mapping[str, Any]) -> str:
        """Put ``servers`` into the file; returns the holder id to :meth:`remove` them with."""
        holder = uuid.uuid4().hex
        with self._locked() as (config, state):
            held = {name for names in state["holders"].values() for name in names}
            entries = config.setdefault("mcpServers", {})
            for name, server in servers.items():
                if name not in held:
                    state["saved"][name] = entries.get(name)
                entries[name] = server
            state["holders"][holder] = sorted(servers)
        return holder

    def remove(self, holder: str) -> None:
        """Take out the entries of ``holder`` that no other run still holds."""
        with self._locked() as (config, state):
            names = state["holders"].pop(holder, [])
            held = {name for names_ in state["holders"].values() for name in names_}
            entries = config.setdefault("mcpServers", {})
            for name in names:
                if name in held:
                    continue
                before = state["saved"].pop(name, None)
                if before is None:
                    entries.pop(name, None)
                else:
                    entries[name] = before

    @contextlib.contextmanager
    def _locked(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path.with_name(".mcp_config.json.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                config = _read_object(self.path)
                if not isinstance(config.get("mcpServers"), dict):
                    config["mcpServers"] = {}
                state = _read_object(self._holders)
                for key in ("holders", "saved"):
                    if not isinstance(state.get(key), dict):
                        state[key] = {}
                yield config, state
                _write_atomic(self.path, config)
                if state["holders"] or state["saved"]:
                    _write_atomic(self._holders, state)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        self._holders.unlink()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _read_object(path: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        value = orjson.loads(path.read_bytes())
        if isinstance(value, dict):
            return value
    return {}


def _write_atomic(path: Path, value: Mapping[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(orjson.dumps(value, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)


#: the MCP entries a run added (attempt -> file and holder id), taken out when it ends
_HELD: weakref.WeakKeyDictionary[Attempt, tuple[McpConfigFile, str]] = weakref.WeakKeyDictionary()


class AntigravityLLM(CLIBackend):
    """The Google Antigravity CLI as a backend: ``agy`` in print mode, plain-text output.

    Parameters are the reference's: ``agy_bin`` (name on ``PATH`` or a path), ``work_dir``
    (the CLI's working directory; default: this process's), ``add_dirs`` (``--add-dir``,
    extra workspace directories), ``gemini_dir`` (agy's config dir, default
    ``$HOME/.gemini``: tools are registered in its ``config/mcp_config.json``),
    ``dangerously_skip_permissions`` (``--dangerously-skip-permissions``, on by default:
    print mode cannot ask), ``sandbox`` (``--sandbox``), ``extra_cli_args`` (appended as
    given). ``--print-timeout`` is set to the time left of the call, less a few seconds, so
    agy stops first and says so.

    Keyword-only additions: ``env`` (added to the child's environment; ``HOME`` here also
    moves the default ``gemini_dir``), ``idle_timeout_seconds`` (no stdout for that long
    ends the run with a :class:`~chia_async.errors.StallError`; print mode is silent until it
    answers, so keep it generous), ``prompt_in_argv`` (see the module docstring),
    ``log_stream``/``log_all`` as for the other CLI backends.

    Tools are merged into ``<gemini_dir>/config/mcp_config.json`` under their names, the
    only place agy reads MCP servers from (see :class:`McpConfigFile`): other servers in it
    are kept, and a run's entries are taken out again when it ends (the reference left
    them), so no per-run loopback URL or token stays behind. Concurrent calls that use the
    same tool name must mean the same server.
    """

    backend_name: ClassVar[str] = "antigravity"
    #: the Ray resource a worker must advertise to run these calls
    ray_resource: str = "antigravity"
    cli_name: ClassVar[str] = "agy"
    install_command: ClassVar[str] = "curl -fsSL https://antigravity.google/cli/install.sh | bash"
    raw_source: ClassVar[str] = "antigravity"
    stdout_format: ClassVar[Literal["jsonl", "text"]] = "text"
    env_allowlist: ClassVar[tuple[str, ...]] = (
        "GEMINI_FORCE_FILE_STORAGE",
        "GEMINI_FORCE_ENCRYPTED_FILE_STORAGE",
        "GOOGLE_CLOUD_PROJECT",
        "NO_BROWSER",
    )

    def __init__(
        self,
        model: str | None = None,
        system_message: str = "",
        timeout_seconds: int = 600,
        retries: int = 3,
        logging_name: str = "antigravity",
        logging_level: int = logging.DEBUG,
        log_dir: str | None = None,
        agy_bin: str = "agy",
        work_dir: str | None = None,
        add_dirs: list[str] | None = None,
        gemini_dir: str | None = None,
        dangerously_skip_permissions: bool = True,
        sandbox: bool = False,
        extra_cli_args: list[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        idle_timeout_seconds: float | None = 300.0,
        prompt_in_argv: bool = False,
        log_stream: bool = True,
        log_all: bool = False,
    ) -> None:
        if not isinstance(agy_bin, str) or not agy_bin:
            raise TypeError("agy_bin must be a non-empty str")
        dirs: object = add_dirs
        if dirs is not None and (
            isinstance(dirs, str)
            or not isinstance(dirs, Sequence)
            or not all(isinstance(d, str) and d for d in dirs)
        ):
            raise TypeError("add_dirs must be a list of non-empty str")
        if gemini_dir is not None and not isinstance(gemini_dir, str | os.PathLike):
            raise TypeError("gemini_dir must be a path or None")
        check_flags(
            dangerously_skip_permissions=dangerously_skip_permissions,
            sandbox=sandbox,
            prompt_in_argv=prompt_in_argv,
        )
        super().__init__(
            model=model or "",
            system_message=system_message,
            timeout_seconds=timeout_seconds,
            retries=retries,
            logging_name=logging_name,
            logging_level=logging_level,
            log_dir=log_dir,
            cli_path=agy_bin,
            env=env,
            extra_cli_args=extra_cli_args,
            work_dir=work_dir,
            idle_timeout_seconds=idle_timeout_seconds,
            log_stream=log_stream,
            log_all=log_all,
        )
        self.agy_bin = agy_bin
        self.add_dirs = list(add_dirs or [])
        self.gemini_dir = os.fspath(gemini_dir) if gemini_dir is not None else None
        self.dangerously_skip_permissions = dangerously_skip_permissions
        self.sandbox = sandbox
        self.prompt_in_argv = prompt_in_argv

    # -- helpers ------------------------------------------------------------------------------

    def _cwd(self) -> str:
        return os.path.realpath(self.work_dir or os.getcwd())

    def _format_prompt(self, user_message: str) -> str:
        if not self.system_message:
            return user_message
        return f"[System Instructions]\n{self.system_message}\n\n[User Request]\n{user_message}"

    def _config_dir(self) -> Path:
        if self.gemini_dir:
            return Path(self.gemini_dir).expanduser()
        home = self.env.get("HOME") or os.environ.get("HOME") or "~"
        return Path(home).expanduser() / ".gemini"

    # -- CLIBackend hooks ---------------------------------------------------------------------

    async def _invocation(self, attempt: Attempt, scratch: Path) -> Invocation:
        argv = [self._executable()]
        if self.dangerously_skip_permissions:
            argv.append("--dangerously-skip-permissions")
        if self.sandbox:
            argv.append("--sandbox")
        if self.model:
            argv += ["--model", self.model]
        for directory in self.add_dirs:
            argv += ["--add-dir", directory]
        print_timeout = max(1, math.floor(attempt.remaining()) - _PRINT_TIMEOUT_MARGIN)
        argv += ["--print-timeout", f"{print_timeout}s", *self.extra_cli_args]
        if attempt.tools:
            servers = {
                tool.name: gemini_mcp_server(tool, node_id=self.logging_name, trust=False)
                for tool in attempt.tools
            }
            config = McpConfigFile(self._config_dir() / "config" / "mcp_config.json")
            holder = await anyio.to_thread.run_sync(config.add, servers)
            _HELD[attempt] = (config, holder)
        prompt = self._format_prompt(attempt.message)
        if not self.prompt_in_argv:
            return Invocation(argv=argv, stdin=prompt.encode(), cwd=self._cwd())
        if len(prompt.encode()) > _ARG_MAX:
            raise InvalidRequestError(
                self.logging_name,
                raw_message=f"the prompt is {len(prompt.encode())} bytes; one command-line "
                f"argument holds at most {_ARG_MAX} on Linux (prompt_in_argv=True)",
            )
        return Invocation(argv=[*argv, "--print", prompt], cwd=self._cwd())

    async def _run(self, attempt: Attempt) -> QueryResult:
        try:
            return await super()._run(attempt)
        finally:
            held = _HELD.pop(attempt, None)
            if held is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(held[0].remove, held[1])

    def _new_parser(self) -> AntigravityOutputParser:
        return AntigravityOutputParser(self.logging_name)

    def _text_events(self, parser: RecordParser, text: str) -> list[TurnEvent]:
        assert isinstance(parser, AntigravityOutputParser)
        return parser.feed_text(text)

    async def _finish(
        self, attempt: Attempt, parser: RecordParser, outcome: ProcessOutcome, stdout: str
    ) -> QueryResult:
        assert isinstance(parser, AntigravityOutputParser)
        for event in parser.flush():
            await attempt.emit(event)
        answer = parser.outcome(outcome.exit_code, outcome.stderr_tail)
        return attempt.result(
            result=answer,
            returncode=outcome.exit_code or 0,
            stderr=outcome.stderr_tail,
            stream_result=stdout,
            success=True,
        )
