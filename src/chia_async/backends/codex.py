"""Codex CLI backend (``codex exec --json``).

Errors keep the reference's ``chia.models.codex`` classes and signatures; each also
inherits the shared class of :mod:`chia_async.errors`.
"""

from __future__ import annotations

from datetime import datetime

from chia_async import errors
from chia_async.ratelimit import parse_rate_limit_reset
from chia_async.results import CodexQueryResult

__all__ = [
    "AuthenticationError",
    "BillingError",
    "CodexError",
    "CodexQueryResult",
    "ContextLengthExceededError",
    "InvalidRequestError",
    "MaxOutputTokensError",
    "RateLimitError",
    "ServerError",
    "UnknownCodexError",
    "parse_rate_limit_reset",
]


class CodexError(errors.BackendError):
    """Base for Codex CLI errors. Every subclass pickles with all its fields (for Ray).

    Also a :class:`chia_async.errors.ChiaError`."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class RateLimitError(CodexError, errors.RateLimitError):
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


class AuthenticationError(CodexError, errors.AuthenticationError):
    """The credentials are missing, invalid or expired."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class BillingError(CodexError, errors.BillingError):
    """The account has a billing, credit or quota problem."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class InvalidRequestError(CodexError, errors.InvalidRequestError):
    """The request is malformed or names something that does not exist."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class ServerError(CodexError, errors.ServerError):
    """A transient service-side failure (5xx, overloaded, connection)."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class MaxOutputTokensError(CodexError, errors.MaxOutputTokensError):
    """The response was truncated at the output token limit."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class UnknownCodexError(CodexError, errors.UnknownError):
    """"""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class ContextLengthExceededError(InvalidRequestError, errors.ContextLengthExceededError):
    """The prompt exceeded the model's context window. Not in the reference: a subclass of
    this backend's InvalidRequestError, so code written against the reference still catches it."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)
