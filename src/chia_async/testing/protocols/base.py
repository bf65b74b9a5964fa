"""The seam between the scripted server's HTTP core and one wire protocol.

A protocol knows three things: which requests are its own (``match``), how to read a request
into a :class:`~chia_async.testing.script.ParsedRequest`, and how to render a
:class:`~chia_async.testing.script.Turn` or a :class:`~chia_async.testing.script.Fault` into
the bytes the real service would send. It never touches sockets or timing: the server core
plays the :class:`Reply` it returns (latency, slow drip, stall, dropped connection), so every
protocol gets every fault for free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chia_async.testing.script import Fault, ParsedRequest, Turn

__all__ = ["BodyReply", "Protocol", "Reply", "StreamReply"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BodyReply:
    """A complete (non-streaming) response."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamReply:
    """A streaming response: ``chunks`` are already framed (SSE events, event-stream frames).

    ``end`` is the protocol's end marker (``data: [DONE]``, ``message_stop``, the final
    event-stream frame...), kept apart so the ``truncate`` fault can drop it. ``error_chunk``
    is the in-stream error the protocol sends for a ``midstream`` fault; ``malformed_chunk``
    is a chunk that breaks the protocol's framing or JSON, for the ``malformed`` fault.
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    chunks: Sequence[bytes] = ()
    end: Sequence[bytes] = ()
    error_chunk: bytes | None = None
    malformed_chunk: bytes = b"data: {not json\n\n"


Reply = BodyReply | StreamReply


class Protocol(ABC):
    """One wire protocol of the scripted model server.

    Implementations are stateless; one instance serves every request of its protocol.
    """

    #: short name used in ParsedRequest.protocol and in logs
    name: str

    @abstractmethod
    def match(self, method: str, path: str) -> bool:
        """Return True if ``method path`` (below the script prefix) is a request of this protocol.

        Must also claim the protocol's auxiliary endpoints (``HEAD /``, ``count_tokens``,
        ``GET /v1/models``...), which :meth:`auxiliary` answers without consuming a turn.
        """

    @abstractmethod
    def parse(self, method: str, path: str, query: str, body: Any) -> ParsedRequest | None:
        """Read a generation request; return None for an auxiliary request."""

    @abstractmethod
    def auxiliary(
        self, method: str, path: str, query: str, body: Any, headers: Mapping[str, str]
    ) -> BodyReply:
        """Answer a request for which :meth:`parse` returned None."""

    @abstractmethod
    def render(self, turn: Turn, request: ParsedRequest) -> Reply:
        """Render a normal turn; streaming when ``request.stream`` is true."""

    @abstractmethod
    def render_error(self, fault: Fault, request: ParsedRequest | None) -> BodyReply:
        """Render an HTTP error response for ``fault`` in the provider's own shape.

        Honour ``fault.status``/``message``/``headers``/``body`` overrides; add ``retry-after``
        (and ``retry-after-ms``) when ``fault.retry_after`` is set.
        """

    @abstractmethod
    def render_midstream_error(self, fault: Fault, request: ParsedRequest) -> bytes:
        """The in-stream error chunk for a ``midstream`` fault, framed for this protocol."""
