"""OpenAI-compatible Chat Completions backend and the base of its presets.

Errors keep the reference's ``chia.models.openai_compat`` classes and signatures; each also
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
    "OpenAICompatError",
    "RateLimitError",
    "ServerError",
    "UnknownOpenAIError",
]


class OpenAICompatError(errors.BackendError):
    """Base for all OpenAI-compatible backend errors.

    Also a :class:`chia_async.errors.ChiaError`."""

    def __init__(
        self, node_id: str, error_type: str, status_code: int | None = None, raw_message: str = ""
    ) -> None:
        self._init(
            node_id=node_id, error_type=error_type, status_code=status_code, raw_message=raw_message
        )


class RateLimitError(OpenAICompatError, errors.RateLimitError):
    """HTTP 429."""

    def __init__(
        self,
        node_id: str,
        reset_time: datetime,
        raw_message: str = "",
        status_code: int | None = None,
    ) -> None:
        self._init(
            node_id=node_id, reset_time=reset_time, raw_message=raw_message, status_code=status_code
        )


class AuthenticationError(OpenAICompatError, errors.AuthenticationError):
    """HTTP 401 / 403."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class InvalidRequestError(OpenAICompatError, errors.InvalidRequestError):
    """HTTP 400 / 404."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class ServerError(OpenAICompatError, errors.ServerError):
    """HTTP 5xx, connection, or timeout."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class MaxOutputTokensError(OpenAICompatError, errors.MaxOutputTokensError):
    """The response was truncated at max_tokens (finish_reason='length')."""

    def __init__(
        self,
        node_id: str,
        status_code: int | None = None,
        raw_message: str = "",
        partial_text: str = "",
    ) -> None:
        self._init(
            node_id=node_id,
            status_code=status_code,
            raw_message=raw_message,
            partial_text=partial_text,
        )


class ContextLengthExceededError(InvalidRequestError, errors.ContextLengthExceededError):
    """HTTP 400 (or 413) whose body shows the prompt exceeded the context window.

    Subclasses InvalidRequestError so it inherits never-retry semantics (re-sending the same
    oversized prompt cannot help) while letting callers detect the context-overflow case
    specifically. Distinct from MaxOutputTokensError, which is about output truncation."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class BillingError(OpenAICompatError, errors.BillingError):
    """Payment / quota problem (HTTP 402, or a 429 carrying insufficient_quota).

    Never retried: spending more requests cannot restore quota or credit."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class UnknownOpenAIError(OpenAICompatError, errors.UnknownError):
    """Unclassified OpenAI-compatible error."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)
