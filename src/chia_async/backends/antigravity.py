"""Google Antigravity CLI backend (``agy --print``).

Errors keep the reference's ``chia.models.antigravity`` classes and signatures; each also
inherits the shared class of :mod:`chia_async.errors`.
"""

from __future__ import annotations

from datetime import datetime

from chia_async import errors
from chia_async.ratelimit import parse_rate_limit_reset

__all__ = [
    "AntigravityError",
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
    """"""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)


class ContextLengthExceededError(InvalidRequestError, errors.ContextLengthExceededError):
    """The prompt exceeded the model's context window. Not in the reference: a subclass of
    this backend's InvalidRequestError, so code written against the reference still catches it."""

    def __init__(self, node_id: str, exit_code: int = -1, raw_message: str = "") -> None:
        self._init(node_id=node_id, exit_code=exit_code, raw_message=raw_message)
