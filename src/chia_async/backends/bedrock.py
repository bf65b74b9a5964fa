"""Amazon Bedrock backend (Converse / ConverseStream through aioboto3).

Errors keep the reference's ``chia.models.bedrock`` classes and signatures; each also
inherits the shared class of :mod:`chia_async.errors`.
"""

from __future__ import annotations

from datetime import datetime

from chia_async import errors

__all__ = [
    "AuthenticationError",
    "BedrockError",
    "ContextLengthExceededError",
    "InvalidRequestError",
    "MaxOutputTokensError",
    "RateLimitError",
    "ServerError",
    "UnknownBedrockError",
]


class BedrockError(errors.BackendError):
    """Base for all Bedrock backend errors.

    Also a :class:`chia_async.errors.ChiaError`."""

    def __init__(
        self, node_id: str, error_type: str, status_code: str = "", raw_message: str = ""
    ) -> None:
        self._init(
            node_id=node_id, error_type=error_type, status_code=status_code, raw_message=raw_message
        )


class RateLimitError(BedrockError, errors.RateLimitError):
    """Throttling / quota exhaustion (ThrottlingException etc.)."""

    def __init__(
        self, node_id: str, reset_time: datetime, raw_message: str = "", status_code: str = ""
    ) -> None:
        self._init(
            node_id=node_id, reset_time=reset_time, raw_message=raw_message, status_code=status_code
        )


class AuthenticationError(BedrockError, errors.AuthenticationError):
    """Invalid / expired / unauthorized AWS credentials."""

    def __init__(self, node_id: str, status_code: str = "", raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class InvalidRequestError(BedrockError, errors.InvalidRequestError):
    """Malformed request or unknown model (ValidationException etc.)."""

    def __init__(self, node_id: str, status_code: str = "", raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class ServerError(BedrockError, errors.ServerError):
    """Transient service-side failure (5xx, model timeout, connection)."""

    def __init__(self, node_id: str, status_code: str = "", raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class MaxOutputTokensError(BedrockError, errors.MaxOutputTokensError):
    """The response was truncated at maxTokens."""

    def __init__(
        self, node_id: str, status_code: str = "", raw_message: str = "", partial_text: str = ""
    ) -> None:
        self._init(
            node_id=node_id,
            status_code=status_code,
            raw_message=raw_message,
            partial_text=partial_text,
        )


class UnknownBedrockError(BedrockError, errors.UnknownError):
    """Unclassified Bedrock error."""

    def __init__(self, node_id: str, status_code: str = "", raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)


class ContextLengthExceededError(InvalidRequestError, errors.ContextLengthExceededError):
    """The prompt exceeded the model's context window. Not in the reference: a subclass of
    this backend's InvalidRequestError, so code written against the reference still catches it."""

    def __init__(self, node_id: str, status_code: str = "", raw_message: str = "") -> None:
        self._init(node_id=node_id, status_code=status_code, raw_message=raw_message)
