"""Claude Code backend (``claude --print``; the Anthropic API with ``backend="api"``).

Errors keep the reference's ``chia.models.claude`` classes and signatures; each also
inherits the shared class of :mod:`chia_async.errors` (``claude.RateLimitError`` is an
``errors.RateLimitError``).
"""

from __future__ import annotations

from datetime import datetime

from chia_async import errors
from chia_async.ratelimit import parse_rate_limit_event, parse_rate_limit_reset
from chia_async.results import ClaudeCodeQueryResult

__all__ = [
    "AuthenticationError",
    "BillingError",
    "ClaudeCodeError",
    "ClaudeCodeQueryResult",
    "ContextLengthExceededError",
    "InvalidRequestError",
    "MaxOutputTokensError",
    "RateLimitError",
    "ServerError",
    "UnknownClaudeError",
    "parse_rate_limit_event",
    "parse_rate_limit_reset",
]


class ClaudeCodeError(errors.BackendError):
    """Base for all Claude Code CLI errors.

    Also a :class:`chia_async.errors.ChiaError`."""

    def __init__(
        self, node_id: str, error_type: str, exit_code: int = -1, raw_message: str = ""
    ) -> None:
        self._init(
            node_id=node_id, error_type=error_type, exit_code=exit_code, raw_message=raw_message
        )


class RateLimitError(ClaudeCodeError, errors.RateLimitError):
    """Raised when the Claude CLI response indicates a usage-limit hit."""

    def __init__(
        self, node_id: str, reset_time: datetime, raw_message: str = "", exit_code: int = -1
    ) -> None:
        self._init(
            node_id=node_id, reset_time=reset_time, raw_message=raw_message, exit_code=exit_code
        )


class AuthenticationError(ClaudeCodeError, errors.AuthenticationError):
    """Raised when the CLI's auth token/API key is invalid or expired."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class BillingError(ClaudeCodeError, errors.BillingError):
    """Raised when the billing account has payment issues."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class InvalidRequestError(ClaudeCodeError, errors.InvalidRequestError):
    """Raised when the request is malformed (bad prompt, unsupported params, etc.)."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class ServerError(ClaudeCodeError, errors.ServerError):
    """Raised when Anthropic's API returns a server-side error (500/503)."""

    def __init__(
        self,
        node_id: str,
        exit_code: int = -1,
        raw_message: str = "",
        retry_after: int | None = None,
    ) -> None:
        self._init(
            node_id=node_id, exit_code=exit_code, raw_message=raw_message, retry_after=retry_after
        )


class MaxOutputTokensError(ClaudeCodeError, errors.MaxOutputTokensError):
    """Raised when the LLM's response was truncated by the output token limit."""

    def __init__(
        self, node_id: str, exit_code: int = -1, raw_message: str = "", partial_text: str = ""
    ) -> None:
        self._init(
            node_id=node_id, exit_code=exit_code, raw_message=raw_message, partial_text=partial_text
        )


class UnknownClaudeError(ClaudeCodeError, errors.UnknownError):
    """Raised for unclassified CLI errors."""

    def __init__(
        self, node_id: str, exit_code: int = -1, raw_message: str = "", stderr: str = ""
    ) -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message, stderr=stderr)


class ContextLengthExceededError(InvalidRequestError, errors.ContextLengthExceededError):
    """The prompt exceeded the model's context window. Not in the reference: a subclass of
    this backend's InvalidRequestError, so code written against the reference still catches it."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)
