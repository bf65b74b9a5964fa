"""Google Vertex AI backends: Gemini through google-genai, other models through the
OpenAI-compatible Model-as-a-Service endpoint.

Errors keep the reference's ``chia.models.vertex`` classes and signatures; each also
inherits the shared class of :mod:`chia_async.errors`.
"""

from __future__ import annotations

from datetime import datetime

from chia_async import errors

__all__ = [
    "AuthenticationError",
    "ContentBlockedError",
    "ContextLengthExceededError",
    "InvalidRequestError",
    "MaxOutputTokensError",
    "RateLimitError",
    "ServerError",
    "UnknownVertexError",
    "VertexError",
]


class VertexError(errors.BackendError):
    """Base for all Vertex backend errors.

    Also a :class:`chia_async.errors.ChiaError`."""

    def __init__(
        self, node_id: str, error_type: str, status_code: int | None = None, raw_message: str = ""
    ) -> None:
        self._init(
            node_id=node_id, error_type=error_type, status_code=status_code, raw_message=raw_message
        )


class RateLimitError(VertexError, errors.RateLimitError):
    """Quota / rate exhaustion (HTTP 429, RESOURCE_EXHAUSTED)."""

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


class AuthenticationError(VertexError, errors.AuthenticationError):
    """Invalid / missing credentials or permission (HTTP 401 / 403)."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class InvalidRequestError(VertexError, errors.InvalidRequestError):
    """Malformed request or unknown model (HTTP 400 / 404)."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class ServerError(VertexError, errors.ServerError):
    """Transient service-side failure (HTTP 5xx)."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class MaxOutputTokensError(VertexError, errors.MaxOutputTokensError):
    """The response was truncated at max_output_tokens."""

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


class UnknownVertexError(VertexError, errors.UnknownError):
    """Unclassified Vertex error."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class ContentBlockedError(VertexError, errors.ContentBlockedError):
    """The model returned no usable content because the prompt or the response was blocked (safety,
    recitation, blocklist, ...).

    This is NOT an HTTP/API error - Gemini reports it as a 200-OK response whose candidate
    carries a blocking finish_reason (or whose prompt_feedback carries a block_reason with no
    candidates). Surfacing it as a typed error keeps a block from masquerading as a successful
    empty answer. Never automatically retried: re-sending the same prompt will be blocked again."""

    def __init__(self, node_id: str, block_reason: str = "", raw_message: str = "") -> None:
        self._init(node_id=node_id, block_reason=block_reason, raw_message=raw_message)


class ContextLengthExceededError(InvalidRequestError, errors.ContextLengthExceededError):
    """The prompt exceeded the model's context window. Not in the reference: a subclass of
    this backend's InvalidRequestError, so code written against the reference still catches it."""

    def __init__(self, node_id: str, status_code: int | None = None, raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)
