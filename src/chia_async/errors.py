"""The error taxonomy shared by every backend.

Every error chia_async raises is a :class:`ChiaError`. Backends raise the classes their
reference module names (``chia_async.backends.claude.RateLimitError``...), each of which
inherits both its backend's base (``ClaudeCodeError``) and the shared class here
(:class:`RateLimitError`), so one ``except`` clause catches a kind of failure from any backend::

    ChiaError
     ├── RateLimitError            reset_time: when the limit lifts (aware UTC) or None
     ├── AuthenticationError       bad, missing or expired credentials          never retried
     ├── BillingError              payment / quota / credit exhausted           never retried
     ├── InvalidRequestError       malformed request, unknown model             never retried
     │    └── ContextLengthExceededError   the prompt does not fit              never retried
     ├── ServerError               5xx, overloaded, connection lost; retry_after
     │    ├── IncompleteResponseError      stream ended without its end marker
     │    └── MalformedResponseError       a chunk that is not valid for the protocol
     ├── MaxOutputTokensError      truncated at the output limit; partial_text  never retried
     ├── ContentBlockedError       safety / policy block; block_reason         never retried
     ├── TimeoutError              the call's deadline passed (also a builtins.TimeoutError)
     │    └── StallError           no output within the idle deadline
     ├── CLINotFoundError          the CLI binary is missing; install_command   never retried
     ├── ProcessError              a CLI exited badly with nothing classifiable; exit_code, stderr
     │    └── OutputLineTooLongError       one output line passed the line cap  never retried
     ├── BackendError              base of each backend's own family (ClaudeCodeError, ...)
     └── UnknownError              could not be classified                      never retried

Rules every class follows:

* **Plain data only.** Fields are strings, numbers, aware datetimes — never SDK, httpx or
  process objects — so an error crosses process boundaries (Ray, multiprocessing) intact.
* **Picklable with all fields.** One ``__reduce__`` on :class:`ChiaError` rebuilds any
  subclass from its ``__dict__``, whatever its constructor signature.
* **No secrets.** ``raw_message`` and ``stderr`` pass through :func:`~chia_async.redaction.redact`
  when the error is built, so a key echoed by a server or CLI never reaches a log or a repr.
* **Retry class is a property of the class** (:attr:`ChiaError.retryable`); the retry policy
  (:mod:`chia_async.retry`) adds the wait and the cap.
"""

from __future__ import annotations

import builtins
import importlib
import typing
from datetime import datetime
from typing import Any, ClassVar

from chia_async.redaction import redact

__all__ = [
    "AuthenticationError",
    "BackendError",
    "BillingError",
    "CLINotFoundError",
    "ChiaError",
    "ContentBlockedError",
    "ContextLengthExceededError",
    "IncompleteResponseError",
    "InvalidRequestError",
    "MalformedResponseError",
    "MaxOutputTokensError",
    "OutputLineTooLongError",
    "ProcessError",
    "RateLimitError",
    "ServerError",
    "StallError",
    "TimeoutError",
    "UnknownError",
]

# Fields are capped so a multi-megabyte stderr or body never rides along in an exception.
_MAX_TEXT = 8192


def _clip(text: str) -> str:
    text = redact(text)
    if len(text) > _MAX_TEXT:
        half = _MAX_TEXT // 2
        return f"{text[:half]}\n...[{len(text) - _MAX_TEXT} characters cut]...\n{text[-half:]}"
    return text


def _restore(cls: type[ChiaError], state: dict[str, Any], args: tuple[Any, ...]) -> ChiaError:
    """Rebuild an error without calling its constructor (signatures differ per class)."""
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    obj.args = args
    return obj


class ChiaError(Exception):
    """Base of every error raised by chia_async.

    Subclasses keep the constructor signatures of the API reference; they all store their
    arguments as attributes through :meth:`_init`, which also builds the message.
    """

    #: whether the retry policy may try again (before any content reached the caller)
    retryable: ClassVar[bool] = False
    #: short machine name of the failure kind, e.g. ``"rate_limit"``
    kind: ClassVar[str] = "error"

    # Every field any subclass may carry, with its default. Declared here so that code catching
    # a shared class can read e.g. ``err.reset_time`` whichever backend raised it.
    node_id: str
    error_type: str
    raw_message: str
    exit_code: int
    status_code: int | str | None
    reset_time: datetime | None
    retry_after: float | None
    partial_text: str
    block_reason: str
    stderr: str

    _DEFAULTS: ClassVar[dict[str, Any]] = {
        "node_id": "",
        "raw_message": "",
        "exit_code": -1,
        "status_code": None,
        "reset_time": None,
        "retry_after": None,
        "partial_text": "",
        "block_reason": "",
        "stderr": "",
    }

    def __init__(self, message: str = "", *, node_id: str = "") -> None:
        self._init(node_id=node_id, raw_message=message)

    def _init(self, **fields: Any) -> None:
        """Store ``fields`` (redacting free text) and set the exception message."""
        for key in ("raw_message", "stderr", "partial_text"):
            if key in fields and fields[key] is not None:
                fields[key] = _clip(str(fields[key]))
        fields.setdefault("error_type", self.kind)
        self.__dict__.update(fields)
        self.args = (self._describe(),)

    def __getattr__(self, name: str) -> Any:
        # Only reached when the attribute is missing: shared fields a subclass's signature
        # does not take (e.g. retry_after on Bedrock's ServerError) read as their defaults.
        defaults = type(self)._DEFAULTS
        if name in defaults:
            return defaults[name]
        if name == "error_type":
            return self.kind
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _describe(self) -> str:
        parts = []
        if self.node_id:
            parts.append(f"[{self.node_id}]")
        detail = self._detail()
        if detail:
            parts.append(detail)
        text = self.raw_message or (self.__doc__ or type(self).__name__).strip().splitlines()[0]
        parts.append(text)
        return " ".join(parts)

    def _detail(self) -> str:
        return ""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.fields().items())
        return f"{type(self).__qualname__}({fields})"

    def __eq__(self, other: object) -> bool:
        # Value equality, so an error that crossed a process boundary compares equal to the
        # original; exceptions compare by identity otherwise.
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, ChiaError)
        return self.fields() == other.fields() and self.args == other.args

    def __hash__(self) -> int:
        return hash((type(self), self.args))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), dict(self.__dict__), self.args))

    def fields(self) -> dict[str, Any]:
        """The error's data: every stored field, as a new dict."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form; :meth:`from_dict` rebuilds the same class and fields."""
        data: dict[str, Any] = {}
        for key, value in self.fields().items():
            data[key] = value.isoformat() if isinstance(value, datetime) else value
        return {
            "type": f"{type(self).__module__}.{type(self).__qualname__}",
            "message": str(self),
            "fields": data,
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> ChiaError:
        """Rebuild an error serialised by :meth:`to_dict`.

        Only classes defined inside ``chia_async`` are accepted, so a log line can never make
        this import arbitrary modules.
        """
        qualified = str(data.get("type", ""))
        module_name, _, name = qualified.rpartition(".")
        if not (module_name == "chia_async" or module_name.startswith("chia_async.")):
            raise ValueError(f"not a chia_async error type: {qualified!r}")
        cls = getattr(importlib.import_module(module_name), name, None)
        if not (isinstance(cls, type) and issubclass(cls, ChiaError)):
            raise ValueError(f"not a chia_async error type: {qualified!r}")
        state = dict(data.get("fields", {}))
        for key, value in state.items():
            if isinstance(value, str) and _is_datetime_field(key):
                state[key] = datetime.fromisoformat(value)
        return _restore(cls, state, (str(data.get("message", "")),))


def _is_datetime_field(name: str) -> bool:
    hints = _field_hints()
    return "datetime" in str(hints.get(name, ""))


_HINTS: dict[str, Any] | None = None


def _field_hints() -> dict[str, Any]:
    global _HINTS
    if _HINTS is None:
        _HINTS = typing.get_type_hints(ChiaError)
    return _HINTS


class RateLimitError(ChiaError):
    """The provider or CLI refused the request because a rate or usage limit was hit."""

    retryable = True
    kind = "rate_limit"

    def __init__(
        self, node_id: str = "", reset_time: datetime | None = None, raw_message: str = ""
    ) -> None:
        self._init(node_id=node_id, reset_time=reset_time, raw_message=raw_message)

    def _detail(self) -> str:
        if self.reset_time is not None:
            return f"rate limited until {self.reset_time.isoformat()}:"
        return "rate limited:"


class AuthenticationError(ChiaError):
    """The credentials are missing, invalid or expired."""

    kind = "authentication"

    def __init__(self, node_id: str = "", raw_message: str = "") -> None:
        self._init(node_id=node_id, raw_message=raw_message)


class BillingError(ChiaError):
    """The account has a payment, credit or quota problem; more requests cannot fix it."""

    kind = "billing"

    def __init__(self, node_id: str = "", raw_message: str = "") -> None:
        self._init(node_id=node_id, raw_message=raw_message)


class InvalidRequestError(ChiaError):
    """The request is malformed or names something that does not exist."""

    kind = "invalid_request"

    def __init__(self, node_id: str = "", raw_message: str = "") -> None:
        self._init(node_id=node_id, raw_message=raw_message)


class ContextLengthExceededError(InvalidRequestError):
    """The prompt does not fit the model's context window."""

    kind = "context_length"


class ServerError(ChiaError):
    """A transient failure on the service side: 5xx, overloaded, connection lost."""

    retryable = True
    kind = "server"

    def __init__(
        self, node_id: str = "", raw_message: str = "", retry_after: float | None = None
    ) -> None:
        self._init(node_id=node_id, raw_message=raw_message, retry_after=retry_after)


class IncompleteResponseError(ServerError):
    """The response stream ended before its end marker: the turn is incomplete."""

    kind = "incomplete_response"


class MalformedResponseError(ServerError):
    """The service sent a chunk that is not valid for its protocol."""

    kind = "malformed_response"


class MaxOutputTokensError(ChiaError):
    """The answer was cut at the output token limit; ``partial_text`` holds what arrived."""

    kind = "max_output_tokens"

    def __init__(self, node_id: str = "", raw_message: str = "", partial_text: str = "") -> None:
        self._init(node_id=node_id, raw_message=raw_message, partial_text=partial_text)


class ContentBlockedError(ChiaError):
    """The prompt or the answer was blocked by a safety or policy filter."""

    kind = "content_blocked"

    def __init__(self, node_id: str = "", block_reason: str = "", raw_message: str = "") -> None:
        self._init(node_id=node_id, block_reason=block_reason, raw_message=raw_message)

    def _detail(self) -> str:
        return f"blocked ({self.block_reason}):" if self.block_reason else "blocked:"


class TimeoutError(ChiaError, builtins.TimeoutError):
    """The call did not finish within its deadline (``timeout_seconds``)."""

    retryable = True
    kind = "timeout"

    def __init__(self, node_id: str = "", raw_message: str = "", timeout: float | None = None):
        self._init(node_id=node_id, raw_message=raw_message, timeout=timeout)


class StallError(TimeoutError):
    """No output arrived within the idle deadline."""

    kind = "stall"


class CLINotFoundError(ChiaError):
    """The CLI binary could not be found; ``install_command`` says how to get it."""

    kind = "cli_not_found"

    def __init__(self, node_id: str = "", cli: str = "", install_command: str = "") -> None:
        message = f"{cli!r} was not found on PATH" if cli else "CLI not found"
        if install_command:
            message += f"; install it with: {install_command}"
        self._init(node_id=node_id, cli=cli, install_command=install_command, raw_message=message)


class ProcessError(ChiaError):
    """A CLI process failed and its output said nothing that could be classified."""

    retryable = True
    kind = "process"

    def __init__(
        self, node_id: str = "", exit_code: int = -1, stderr: str = "", raw_message: str = ""
    ) -> None:
        self._init(node_id=node_id, exit_code=exit_code, stderr=stderr, raw_message=raw_message)

    def _detail(self) -> str:
        return f"exit code {self.exit_code}:"


class OutputLineTooLongError(ProcessError):
    """One line of the CLI's output was longer than the line cap."""

    retryable = False
    kind = "line_too_long"


class BackendError(ChiaError):
    """Base of each backend's own error family (``ClaudeCodeError``, ``CodexError``...).

    Deliberately defines no class attributes: a family base sits *before* the shared class
    in the MRO of e.g. ``claude.RateLimitError(ClaudeCodeError, errors.RateLimitError)``, so
    anything defined here would shadow the shared class's ``kind`` and ``retryable``.
    """


class UnknownError(ChiaError):
    """A failure that could not be classified."""

    kind = "unknown"

    def __init__(self, node_id: str = "", raw_message: str = "", stderr: str = "") -> None:
        self._init(node_id=node_id, raw_message=raw_message, stderr=stderr)
