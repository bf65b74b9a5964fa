"""``CLIBackend``: what every coding-agent CLI backend shares.

A CLI backend fills in three hooks and inherits the rest:

* :meth:`CLIBackend._invocation` — the argv, extra environment, stdin bytes and working
  directory of one run (files it writes go into the per-run scratch directory, 0700, which
  is removed afterwards);
* :meth:`CLIBackend._new_parser` — an object mapping each stdout record to events
  (``feed``), telling whether a record is the terminal one (``is_terminal``);
* :meth:`CLIBackend._finish` — the run's result from the parser and the process outcome,
  or the typed error.

A CLI that prints plain text rather than JSONL sets ``stdout_format = "text"``: its stdout
is then not framed into records but passed on as it arrives, each read through
:meth:`CLIBackend._text_events` (``TextDelta`` by default).

The base runs the process under :class:`~chia_async.subprocess.process.SupervisedProcess`
(own process group, concurrent stdout/stderr drains, line framing without a 64 KiB limit,
total and idle deadlines, TERM→KILL teardown on every exit path), builds the child
environment from an allowlist (:func:`~chia_async.subprocess.environment.build_child_env`),
never passes the prompt in argv, and logs raw records when asked.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import orjson

from chia_async._event_base import TurnEvent
from chia_async.base import Attempt, LLMCallBase
from chia_async.events import Raw, TextDelta
from chia_async.redaction import is_secret_name, register_secret
from chia_async.results import QueryResult
from chia_async.subprocess.discovery import find_cli
from chia_async.subprocess.environment import build_child_env
from chia_async.subprocess.framing import Diagnostic, TextChunk
from chia_async.subprocess.process import ProcessOutcome, ProcessSpec, SupervisedProcess

__all__ = ["CLIBackend", "Invocation", "RecordParser"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Invocation:
    """One run of a CLI: what to execute and how."""

    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)  # added to the allowlisted env
    stdin: bytes | None = None
    cwd: str | None = None


class RecordParser(Protocol):
    """Maps a CLI's stdout records to events."""

    def feed(self, record: Mapping[str, Any]) -> list[TurnEvent]:
        """The events one record stands for."""

    def is_terminal(self, record: Mapping[str, Any]) -> bool:
        """Whether ``record`` is the CLI's last word (``result``, ``turn.completed``...)."""


class CLIBackend(LLMCallBase):
    """Base of the coding-agent CLI backends.

    ``env`` is added to the child's environment last (it wins over everything the backend
    sets). Nothing else from the parent environment reaches the CLI except the allowlist
    (PATH, HOME, locale, proxies, TMPDIR, certificates) and the variables the backend names
    in :attr:`env_allowlist`; provider keys are passed only when given explicitly.
    """

    #: name of the executable, e.g. ``"claude"``
    cli_name: ClassVar[str]
    #: how to install it, named in CLINotFoundError
    install_command: ClassVar[str]
    #: configuration variables of this CLI that may pass through from the parent env
    env_allowlist: ClassVar[tuple[str, ...]] = ()
    #: source name for Raw events of non-JSON lines
    raw_source: ClassVar[str] = "cli"
    #: ``"jsonl"``: stdout records go to the parser; ``"text"``: plain-text stdout goes,
    #: read by read, to :meth:`_text_events` (and ``stdout`` of ``_finish`` is the text)
    stdout_format: ClassVar[Literal["jsonl", "text"]] = "jsonl"

    def __init__(
        self,
        *,
        cli_path: str | None = None,
        env: Mapping[str, str] | None = None,
        extra_cli_args: Sequence[str] | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        idle_timeout_seconds: float | None = 300.0,
        log_stream: bool = True,
        log_all: bool = False,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        if env is not None and not (
            isinstance(env, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        ):
            raise TypeError("env must be a mapping of str to str")
        if extra_cli_args is not None and (
            isinstance(extra_cli_args, str) or not all(isinstance(a, str) for a in extra_cli_args)
        ):
            raise TypeError("extra_cli_args must be a list of str")
        if idle_timeout_seconds is not None and not idle_timeout_seconds > 0:
            raise ValueError("idle_timeout_seconds must be > 0 or None")
        self.cli_path = cli_path
        self.env = dict(env or {})
        self.extra_cli_args = list(extra_cli_args or [])
        self.work_dir = os.fspath(work_dir) if work_dir is not None else None
        self.idle_timeout_seconds = idle_timeout_seconds
        self.log_stream = log_stream
        self.log_all = log_all
        self.log_events = log_stream
        for name, value in self.env.items():
            if is_secret_name(name):  # a credential: mask it wherever it might show
                register_secret(value)

    # -- hooks -----------------------------------------------------------------------------

    @abstractmethod
    async def _invocation(self, attempt: Attempt, scratch: Path) -> Invocation:
        """Build the run. Write any files (MCP config, system prompt) into ``scratch``."""

    @abstractmethod
    def _new_parser(self) -> RecordParser:
        """A fresh record parser for one run."""

    @abstractmethod
    async def _finish(
        self, attempt: Attempt, parser: RecordParser, outcome: ProcessOutcome, stdout: str
    ) -> QueryResult:
        """The run's result, or raise its typed error."""

    def _text_events(self, parser: RecordParser, text: str) -> list[TurnEvent]:
        """The events for one read of a plain-text CLI's stdout (``stdout_format="text"``).

        Called as the text arrives; a backend that must see more before it can tell an
        answer from an error message overrides it to hold text back in its parser.
        """
        return [TextDelta(text=text)]

    # -- the run -----------------------------------------------------------------------------

    def _executable(self) -> str:
        return find_cli(
            self.cli_name,
            explicit_path=self.cli_path,
            install_command=self.install_command,
            node_id=self.logging_name,
        )

    async def _run(self, attempt: Attempt) -> QueryResult:
        if not any(tool.transport == "in_process" for tool in attempt.tools):
            return await self._run_process(attempt)
        # The CLI is another process: serve in-process MCP servers on loopback for this run
        # (token-protected) and hand the CLI http tools instead.
        from chia_async.loop.loopback import loopback_tools

        async with loopback_tools(attempt.tools, node_id=self.logging_name) as tools:
            attempt.tools = tools
            return await self._run_process(attempt)

    async def _run_process(self, attempt: Attempt) -> QueryResult:
        scratch = Path(tempfile.mkdtemp(prefix=f"chia-{self.cli_name}-"))
        try:
            invocation = await self._invocation(attempt, scratch)
            env = build_child_env(
                allow=self.env_allowlist,
                explicit={**dict(invocation.env), **self.env},
            )
            spec = ProcessSpec(
                argv=list(invocation.argv),
                env=env,
                cwd=invocation.cwd,
                stdin=invocation.stdin,
                total_timeout=attempt.remaining(),
                idle_timeout=self.idle_timeout_seconds,
                stdout_format=self.stdout_format,
            )
            parser = self._new_parser()
            lines: list[str] = []
            self.logger.debug("%s: running %s", self.logging_name, " ".join(spec.argv[:1]))
            async with SupervisedProcess(spec, node_id=self.logging_name) as process:
                async for record in process.records():
                    if isinstance(record, TextChunk):
                        lines.append(record.text)
                        if self.log_all:
                            attempt.log_raw(self.raw_source, record.text)
                        for event in self._text_events(parser, record.text):
                            await attempt.emit(event)
                        continue
                    if isinstance(record, Diagnostic):
                        lines.append(record.text)
                        await attempt.emit(
                            Raw(source=f"{self.raw_source}:stdout", data=record.text)
                        )
                        continue
                    lines.append(_dump(record))
                    if self.log_all:
                        attempt.log_raw(self.raw_source, record)
                    for event in parser.feed(record):
                        await attempt.emit(event)
                    if parser.is_terminal(record):
                        process.mark_terminal()
                outcome = await process.wait()
            if self.log_all and outcome.stderr_tail:
                attempt.log_raw(f"{self.raw_source}:stderr", outcome.stderr_tail)
            joiner = "" if self.stdout_format == "text" else "\n"
            return await self._finish(attempt, parser, outcome, joiner.join(lines))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _dump(record: Mapping[str, Any]) -> str:
    return orjson.dumps(record).decode()


def write_private(path: Path, data: str | bytes) -> Path:
    """Write ``data`` to a new file readable only by this user (0600)."""
    payload = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(payload)
    return path
