"""OpenCode CLI backend (``opencode run --format json`` + ``opencode export``).

Errors keep the reference's ``chia.models.opencode`` classes and signatures; each also
inherits the shared class of :mod:`chia_async.errors`.
"""

from __future__ import annotations

from datetime import datetime

from chia_async import errors

__all__ = [
    "AuthenticationError",
    "BillingError",
    "ContextLengthExceededError",
    "InvalidRequestError",
    "MaxOutputTokensError",
    "OpenCodeError",
    "RateLimitError",
    "ServerError",
    "UnknownOpenCodeError",
]


class OpenCodeError(errors.BackendError):
    """Base for all opencode CLI errors.

    Also a :class:`chia_async.errors.ChiaError`."""

    def __init__(
        self, node_id: str, error_type: str, exit_code: int = -1, raw_message: str = ""
    ) -> None:
        self._init(
            node_id=node_id, error_type=error_type, exit_code=exit_code, raw_message=raw_message
        )


class RateLimitError(OpenCodeError, errors.RateLimitError):
    """The provider behind opencode reported a usage/rate limit."""

    def __init__(
        self, node_id: str, reset_time: datetime, raw_message: str = "", exit_code: int = -1
    ) -> None:
        self._init(
            node_id=node_id, reset_time=reset_time, raw_message=raw_message, exit_code=exit_code
        )


class AuthenticationError(OpenCodeError, errors.AuthenticationError):
    """opencode has no/invalid credentials for the selected provider."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class BillingError(OpenCodeError, errors.BillingError):
    """The provider account has a billing/payment problem."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class InvalidRequestError(OpenCodeError, errors.InvalidRequestError):
    """Malformed request - bad model string, invalid config, unknown agent, etc."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class ServerError(OpenCodeError, errors.ServerError):
    """Transient provider/server-side failure (5xx, overloaded, connection)."""

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


class MaxOutputTokensError(OpenCodeError, errors.MaxOutputTokensError):
    """The response was truncated at the output token limit."""

    def __init__(
        self, node_id: str, exit_code: int = -1, raw_message: str = "", partial_text: str = ""
    ) -> None:
        self._init(
            node_id=node_id, exit_code=exit_code, raw_message=raw_message, partial_text=partial_text
        )


class UnknownOpenCodeError(OpenCodeError, errors.UnknownError):
    """Unclassified opencode CLI error."""

    def __init__(
        self, node_id: str, exit_code: int = -1, raw_message: str = "", stderr: str = ""
    ) -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message, stderr=stderr)


class ContextLengthExceededError(InvalidRequestError, errors.ContextLengthExceededError):
    """The prompt exceeded the model's context window. Not in the reference: a subclass of
    this backend's InvalidRequestError, so code written against the reference still catches it."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)
