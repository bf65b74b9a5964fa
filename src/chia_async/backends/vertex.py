"""Google Vertex AI backends: Gemini through google-genai, other models through the
OpenAI-compatible Model-as-a-Service endpoint.

Errors keep the reference's ``chia.models.vertex`` classes and signatures; each also
inherits the shared class of :mod:`chia_async.errors`.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any, ClassVar

from chia_async import errors
from chia_async.backends.openai_compat import OpenAICompatLLM
from chia_async.extras import require

__all__ = [
    "VertexGenericLLM",
    "maas_base_url",
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


# -- Vertex Model-as-a-Service (OpenAI-compatible) ----------------------------------------------


def maas_base_url(project: str, location: str) -> str:
    """The OpenAI-compatible endpoint of Vertex MaaS for a project and location."""
    host = (
        "aiplatform.googleapis.com"
        if location == "global"
        else f"{location}-aiplatform.googleapis.com"
    )
    return f"https://{host}/v1/projects/{project}/locations/{location}/endpoints/openapi"


class _AdcTokenProvider:
    """A GCP access token from Application Default Credentials, refreshed when stale.

    The credentials are looked up on the first call, not at construction: building a
    backend must not read credential files or reach a metadata server.
    """

    def __init__(self) -> None:
        self._credentials: Any = None

    def __call__(self) -> str:
        if self._credentials is None:
            google_auth = require("google.auth", "vertex", feature="VertexGenericLLM")
            self._credentials, _ = google_auth.default(
                scopes=["https://www.googleapis.com/auth/cloud-platform"]
            )
        if not self._credentials.valid:
            requests_transport = require(
                "google.auth.transport.requests", "vertex", feature="VertexGenericLLM"
            )
            self._credentials.refresh(requests_transport.Request())
        return str(self._credentials.token)

    def __getstate__(self) -> dict[str, Any]:
        return {}  # credentials are looked up again in the process that unpickles

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._credentials = None


class VertexGenericLLM(OpenAICompatLLM):
    """Non-Gemini Vertex models (Llama, Mistral, ...) through the Model-as-a-Service
    OpenAI-compatible endpoint; ``model`` is the MaaS id, e.g.
    ``"meta/llama-3.1-8b-instruct-maas"``.

    The endpoint comes from ``project``/``location`` (or ``GOOGLE_CLOUD_PROJECT`` /
    ``GOOGLE_CLOUD_LOCATION``); auth is a GCP access token from Application Default
    Credentials, supplied through ``token_provider`` and refreshed before it goes stale.
    Everything else — the tool loop, errors, retries — is OpenAICompatLLM's.
    """

    backend_name: ClassVar[str] = "vertex_maas"
    ray_resource: ClassVar[str] = "vertex"

    def __init__(
        self,
        model: str,
        project: str | None = None,
        location: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.project = project or os.environ.get("GOOGLE_CLOUD_PROJECT")
        self.location = location or os.environ.get("GOOGLE_CLOUD_LOCATION")
        if kwargs.get("base_url") is None:
            if not (self.project and self.location):
                raise ValueError(
                    "VertexGenericLLM needs project and location (or GOOGLE_CLOUD_PROJECT "
                    "and GOOGLE_CLOUD_LOCATION)"
                )
            kwargs["base_url"] = maas_base_url(self.project, self.location)
        if kwargs.get("api_key") is None and kwargs.get("token_provider") is None:
            kwargs["token_provider"] = _AdcTokenProvider()
        kwargs.setdefault("logging_name", "vertex_generic")
        super().__init__(model, **kwargs)
