"""The scripted model server: real wire protocols on loopback, scripted turns behind them.

:class:`ScriptedModelServer` runs uvicorn with a small raw ASGI app in a background thread
with its own event loop, so the same server serves sync tests, async tests and external CLI
processes alike::

    with ScriptedModelServer() as srv:
        srv.script("default", [Turn(text="hello")])
        client = openai.OpenAI(base_url=srv.base_url(), api_key="sk-test")

A path prefix ``/s/<name>/`` selects the script named ``name`` (``srv.base_url(name)``);
requests without it use the script named ``default``. The rest of the path picks the wire
protocol (OpenAI Chat Completions, OpenAI Responses, Anthropic Messages, Gemini, Bedrock),
which reads the request and renders each :class:`~chia_async.testing.script.Turn` in the
provider's own shape. The core here plays the rendered reply: latency, a slow drip between
chunks, and the faults (HTTP errors, in-stream errors, stalls, dropped connections, malformed
and truncated streams).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping, Sequence
from types import TracebackType
from typing import Any, Literal, cast

import anyio.to_thread
import orjson

from chia_async.extras import missing_extra

try:
    import uvicorn
except ImportError as _exc:  # the testing extra is not installed
    raise missing_extra("uvicorn", "testing", feature="ScriptedModelServer") from _exc

from chia_async.testing.protocols.anthropic import AnthropicProtocol
from chia_async.testing.protocols.base import BodyReply, Protocol, StreamReply
from chia_async.testing.protocols.bedrock import BedrockProtocol
from chia_async.testing.protocols.gemini import GeminiProtocol
from chia_async.testing.protocols.openai_chat import OpenAIChatProtocol
from chia_async.testing.protocols.openai_responses import OpenAIResponsesProtocol
from chia_async.testing.script import (
    Fault,
    ParsedRequest,
    RecordedRequest,
    Script,
    Turn,
    TurnFunction,
)

__all__ = ["ScriptedModelServer", "default_protocols"]

logger = logging.getLogger("chia_async.testing.server")

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]

#: How long close() lets in-flight handlers finish before cancelling them. Stalls and slow
#: drips are woken at once, so this only bounds a turn function that misbehaves.
_SHUTDOWN_GRACE = 2.0
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 15.0

# Set in a request's task when the app ends a response on purpose without completing it
# (the drop fault, or close() interrupting a stream). uvicorn then closes the connection,
# which is the point, and logs an error about it, which is noise: the filter below drops it.
_DELIBERATE_ABORT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "chia_async_scripted_abort", default=False
)


class _DeliberateAbortFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _DELIBERATE_ABORT.get()


_filter_lock = threading.Lock()
_filter_installed = False


def _install_log_filter() -> None:
    global _filter_installed
    with _filter_lock:
        if not _filter_installed:
            logging.getLogger("uvicorn.error").addFilter(_DeliberateAbortFilter())
            _filter_installed = True


def default_protocols() -> list[Protocol]:
    """The protocol table, in matching order: the first protocol whose ``match`` accepts a
    request serves it."""
    return [
        OpenAIChatProtocol(),
        OpenAIResponsesProtocol(),
        AnthropicProtocol(),
        GeminiProtocol(),
        BedrockProtocol(),
    ]


class _CoalescingTransport:
    """An asyncio transport proxy whose writes of one loop iteration leave as one send().

    uvicorn writes the status line and headers on ``http.response.start`` and the body on
    ``http.response.body``: two send() calls per response. On loopback each send costs about
    as much CPU as the rest of the request, so writes are gathered and flushed once at the
    end of the iteration (a complete non-streaming reply is written in a single iteration).
    """

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._pending is None:
            self._pending = [bytes(data)]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(bytes(data))

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _http_protocol_class() -> type[asyncio.Protocol]:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # httptools is optional; h11 is always there
        from uvicorn.protocols.http.h11_impl import H11Protocol as base  # type: ignore[assignment]

    class _Protocol(base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # uvicorn writes an access-log record per request whenever the root logger has
            # a handler; keep per-request work minimal without touching the process-wide
            # "uvicorn.access" logger
            self.access_log = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            proxy = _CoalescingTransport(cast(asyncio.Transport, transport), self.loop)
            super().connection_made(proxy)  # type: ignore[arg-type]

    return _Protocol


class _Uvicorn(uvicorn.Server):
    """uvicorn's server with a prompt start/stop handshake for a background thread."""

    def __init__(self, config: uvicorn.Config, owner: ScriptedModelServer) -> None:
        super().__init__(config)
        self._owner = owner

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self._owner._started.set()

    async def main_loop(self) -> None:
        # uvicorn polls should_exit every 100 ms; close() resolves `closing` to wake it at once
        closing = self._owner._closing_future()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            await asyncio.wait([closing], timeout=0.1)
            if closing.done():
                self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's own shutdown sleeps in 100 ms steps and leaves stalled streams to a grace
        # timeout; here handlers are already woken by `closing`, so wait for them directly
        for server in self.servers:
            server.close()
        for sock in sockets or ():
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        tasks = set(self.server_state.tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_SHUTDOWN_GRACE)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=_SHUTDOWN_GRACE)
        # A transport whose peer stopped reading cannot flush, so close() never finishes:
        # abort what is left, then let connection_lost run so no socket outlives close().
        await asyncio.sleep(0)
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        for _ in range(1000):  # connection_lost runs on the next loop iterations
            if not self.server_state.connections:
                break
            await asyncio.sleep(0.001)
        for server in self.servers:
            await server.wait_closed()
        await self.lifespan.shutdown()


def _encode_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class _Exchange:
    """One request being answered: sending, and waiting that a disconnect or close() cuts short."""

    __slots__ = ("_closing", "_receive", "_watch", "send")

    def __init__(self, send: _Send, receive: _Receive, closing: asyncio.Future[None]) -> None:
        self.send = send
        self._receive = receive
        self._closing = closing
        self._watch: asyncio.Task[None] | None = None

    async def _watch_disconnect(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                return

    async def pause(self, seconds: float | None) -> bool:
        """Wait ``seconds`` (``None``: until interrupted).

        Returns False, early, when the client disconnected or the server is closing.
        """
        if self._closing.done():
            return False
        if self._watch is None:
            self._watch = asyncio.ensure_future(self._watch_disconnect())
        if self._watch.done():
            return False
        loop = asyncio.get_running_loop()
        waiters: set[asyncio.Future[Any]] = {self._closing, self._watch}
        timer: asyncio.Future[None] | None = None
        handle: asyncio.TimerHandle | None = None
        if seconds is not None:
            timer = loop.create_future()
            handle = loop.call_later(max(0.0, seconds), _resolve, timer)
            waiters.add(timer)
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if handle is not None:
                handle.cancel()
        return not self._closing.done() and not self._watch.done()

    @property
    def closing(self) -> bool:
        """True once the server is shutting down."""
        return self._closing.done()

    def finish(self) -> None:
        """Stop watching for a disconnect."""
        if self._watch is not None and not self._watch.done():
            self._watch.cancel()

    async def start(self, status: int, headers: Mapping[str, str]) -> None:
        """Send the status line and headers."""
        await self.send(
            {"type": "http.response.start", "status": status, "headers": _encode_headers(headers)}
        )

    async def body(self, data: bytes, *, more: bool) -> None:
        """Send body bytes; ``more=False`` completes the response."""
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def reply(self, reply: BodyReply) -> None:
        """Send a complete response."""
        headers = dict(reply.headers)
        headers["content-length"] = str(len(reply.body))
        await self.start(reply.status, headers)
        await self.body(reply.body, more=False)


class _Headers(Mapping[str, str]):
    """Request headers by lower-cased name, decoded on first use: most recorded requests are
    never inspected, and decoding a client's dozen or two headers is a real share of the
    per-request CPU."""

    __slots__ = ("_decoded", "_raw")

    def __init__(self, raw: Sequence[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        self._decoded: dict[str, str] | None = None

    def _dict(self) -> dict[str, str]:
        decoded = self._decoded
        if decoded is None:
            # uvicorn hands names over lower-cased already
            decoded = {k.decode("latin-1"): v.decode("latin-1") for k, v in self._raw}
            self._decoded = decoded
        return decoded

    def __getitem__(self, key: str) -> str:
        return self._dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __repr__(self) -> str:
        return repr(self._dict())


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _abort() -> None:
    """End the current response without completing it: uvicorn closes the connection."""
    _DELIBERATE_ABORT.set(True)


class _App:
    """The raw ASGI app: routing, recording, and playing each reply."""

    def __init__(self, owner: ScriptedModelServer) -> None:
        self._owner = owner

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            return
        owner = self._owner
        method: str = scope["method"]
        full_path: str = scope["path"]
        if full_path.startswith("/s/"):
            name, _, rest = full_path[3:].partition("/")
            path = "/" + rest
        else:
            name, path = "default", full_path
        raw = await _read_body(receive)
        if raw is None:  # the client left before sending the whole request
            return
        query = scope["query_string"].decode("latin-1")
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        headers = _Headers(raw_headers)
        encoding = None
        for key, value in raw_headers:
            if key == b"content-encoding":
                encoding = value.decode("latin-1").strip().lower()
        body = _decode_body(raw, encoding)
        exchange = _Exchange(send, receive, owner._closing_future())
        try:
            protocol = owner._route(method, path) if name else None
            if protocol is None:
                owner._record(name, method, path, query, headers, body, None, None)
                await exchange.reply(_not_found(method, full_path))
                return
            await self._serve(exchange, protocol, name, method, path, query, headers, body)
        finally:
            exchange.finish()

    async def _serve(
        self,
        exchange: _Exchange,
        protocol: Protocol,
        name: str,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: Any,
    ) -> None:
        owner = self._owner
        try:
            parsed = protocol.parse(method, path, query, body)
        except Exception as exc:
            owner._record(name, method, path, query, headers, body, None, None)
            fault = Fault(
                kind="http_error",
                error="invalid_request",
                status=400,
                message=f"the scripted server could not read this request: {exc}",
            )
            await exchange.reply(protocol.render_error(fault, None))
            return
        if parsed is None:
            owner._record(name, method, path, query, headers, body, None, None)
            await exchange.reply(protocol.auxiliary(method, path, query, body, headers))
            return
        script = owner._get_script(name)
        if script is None:
            owner._record(name, method, path, query, headers, body, parsed, None)
            message = (
                f"no script named '{name}' on this scripted server; "
                "define it with ScriptedModelServer.script()"
            )
            await self._fail(exchange, protocol, parsed, 404, "not_found", message)
            return
        try:
            index, turn = script.next_turn(parsed)
        except Exception as exc:
            logger.exception("turn function of script %r raised", name)
            owner._record(name, method, path, query, headers, body, parsed, None)
            message = f"the turn function of script '{name}' raised {exc!r}"
            await self._fail(exchange, protocol, parsed, 500, "server", message)
            return
        owner._record(name, method, path, query, headers, body, parsed, index)
        if turn is None:
            message = f"script '{name}' is exhausted: request #{index + 1} has no turn left"
            await self._fail(exchange, protocol, parsed, 500, "server", message)
            return
        await _play(exchange, protocol, parsed, turn)

    @staticmethod
    async def _fail(
        exchange: _Exchange,
        protocol: Protocol,
        parsed: ParsedRequest,
        status: int,
        error: Literal["not_found", "server"],
        message: str,
    ) -> None:
        # x-should-retry: false keeps SDK clients from retrying a mistake in the test itself
        fault = Fault(
            kind="http_error",
            error=error,
            status=status,
            message=message,
            headers={"x-should-retry": "false"},
        )
        await exchange.reply(protocol.render_error(fault, parsed))


async def _read_body(receive: _Receive) -> bytes | None:
    message = await receive()
    if message["type"] != "http.request":
        return None
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    parts = [body]
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


def _decode_body(raw: bytes, encoding: str | None) -> Any:
    """The request body as parsed JSON, else the raw bytes (decompressed when possible)."""
    if not raw:
        return raw
    if encoding in ("gzip", "deflate"):
        # some clients compress large request bodies; wbits 32+15 accepts a gzip or a zlib
        # header, which covers both encodings as clients send them
        try:
            raw = zlib.decompress(raw, 32 + zlib.MAX_WBITS)
        except zlib.error:
            return raw
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def _not_found(method: str, path: str) -> BodyReply:
    body = {
        "error": {
            "message": f"the scripted server has no endpoint for {method} {path}",
            "type": "not_found_error",
            "path": path,
        }
    }
    return BodyReply(
        status=404, headers={"content-type": "application/json"}, body=orjson.dumps(body)
    )


async def _play(
    exchange: _Exchange, protocol: Protocol, request: ParsedRequest, turn: Turn
) -> None:
    """Play one turn: latency, then the reply, a fault, or both."""
    fault = turn.fault
    if turn.latency > 0 and not await exchange.pause(turn.latency):
        if exchange.closing:
            await exchange.reply(_closing_reply())
        return
    if fault is not None and fault.kind == "http_error":
        await exchange.reply(protocol.render_error(fault, request))
        return
    try:
        reply = protocol.render(turn, request)
    except Exception as exc:
        # a turn the protocol cannot express (or a bug in it): say so instead of a bare 500
        logger.exception("the %s protocol could not render a turn", protocol.name)
        message = f"the {protocol.name} protocol could not render this turn: {exc!r}"
        error = Fault(
            kind="http_error",
            error="server",
            status=500,
            message=message,
            headers={"x-should-retry": "false"},
        )
        await exchange.reply(protocol.render_error(error, request))
        return
    if isinstance(reply, StreamReply):
        await _play_stream(exchange, protocol, request, reply, turn)
    else:
        await _play_body(exchange, protocol, request, reply, fault)


async def _play_body(
    exchange: _Exchange,
    protocol: Protocol,
    request: ParsedRequest,
    reply: BodyReply,
    fault: Fault | None,
) -> None:
    """A non-streaming reply. Faults made for streams get their nearest whole-body meaning."""
    if fault is None:
        await exchange.reply(reply)
        return
    if fault.kind == "midstream":
        # there is no "middle" to a JSON body: the service fails the request instead
        await exchange.reply(protocol.render_error(fault, request))
        return
    if fault.kind == "stall":
        # hang before answering, until the client gives up or the server closes
        await exchange.pause(None)
        if not exchange.closing:
            return
        # close() ended the stall: hang up as a drop does
    headers = dict(reply.headers)
    half = reply.body[: len(reply.body) // 2]
    if fault.kind in ("malformed", "truncate"):
        # a well-framed response whose JSON is cut short
        headers["content-length"] = str(len(half))
        await exchange.start(reply.status, headers)
        await exchange.body(half, more=False)
        return
    # drop (or close() during a stall): promise the whole body, send half, hang up
    headers["content-length"] = str(len(reply.body))
    await exchange.start(reply.status, headers)
    await exchange.body(half, more=True)
    _abort()


async def _play_stream(
    exchange: _Exchange,
    protocol: Protocol,
    request: ParsedRequest,
    reply: StreamReply,
    turn: Turn,
) -> None:
    """A streaming reply: chunks ``chunk_delay`` apart, cut short or spoiled by a fault."""
    fault = turn.fault
    kind = fault.kind if fault is not None else None
    chunks = list(reply.chunks)
    shown = chunks[: max(0, fault.after_chunks)] if fault is not None else chunks
    if fault is None:
        frames = [*chunks, b"".join(reply.end)] if reply.end else chunks
    elif kind == "midstream":
        error = reply.error_chunk
        if error is None:
            error = protocol.render_midstream_error(fault, request)
        frames = [*shown, error]
    elif kind == "malformed":
        frames = [*shown, reply.malformed_chunk]
    elif kind == "truncate":
        frames = chunks  # every chunk, no end marker, and a cleanly finished HTTP body
    else:  # drop, stall: the stream stops after `after_chunks` chunks, unfinished
        frames = shown
    complete = kind not in ("drop", "stall")
    await exchange.start(reply.status, reply.headers)
    if not await _drip(exchange, frames, turn.chunk_delay, complete=complete):
        _abort()  # the client left or close() interrupted the drip
        return
    if kind == "stall":
        # silence until the client gives up or the server closes
        await exchange.pause(None)
        _abort()
    elif kind == "drop":
        _abort()


async def _drip(
    exchange: _Exchange, frames: Sequence[bytes], delay: float, *, complete: bool
) -> bool:
    """Send ``frames``, ``delay`` apart; complete the response when asked.

    Returns False when a disconnect or close() cut the drip short.
    """
    if delay <= 0 or len(frames) <= 1:
        await exchange.body(b"".join(frames), more=not complete)
        return True
    for i, frame in enumerate(frames):
        if i and not await exchange.pause(delay):
            return False
        last = i == len(frames) - 1
        await exchange.body(frame, more=not (complete and last))
    return True


def _closing_reply() -> BodyReply:
    return BodyReply(
        status=503,
        headers={"content-type": "application/json", "connection": "close"},
        body=b'{"error":{"message":"the scripted server is closing","type":"server_error"}}',
    )


class ScriptedModelServer:
    """A loopback model server that plays scripted turns over the real provider protocols.

    Start it with ``with``/``async with`` (or :meth:`start`/:meth:`close`); the async form
    starts and stops the server in a worker thread so the caller's event loop keeps running.
    The server itself runs in its own thread and event loop, so it also serves SDK clients
    used synchronously and external processes (coding-agent CLIs).

    All methods are thread-safe. Turn functions run on the server's thread and should return
    quickly: the server answers one request at a time while a turn function runs.

    Args:
        host: the address to listen on.
        port: the port; 0 picks a free one (read it back from :attr:`port`).
        protocols: the protocol table, in matching order; defaults to
            :func:`default_protocols`.
        max_recorded: keep at most this many recorded requests (oldest dropped first);
            None keeps them all.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        protocols: Sequence[Protocol] | None = None,
        max_recorded: int | None = None,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._protocols = list(protocols) if protocols is not None else default_protocols()
        self._lock = threading.Lock()
        self._scripts: dict[str, Script] = {}
        self._records: deque[RecordedRequest] = deque(maxlen=max_recorded)
        self._state: Literal["new", "starting", "running", "closed"] = "new"
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Future[None] | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    # ----------------------------------------------------------------------------- lifecycle

    def start(self) -> ScriptedModelServer:
        """Bind the socket and start serving; returns once the server accepts connections."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"a scripted server can be started once (it is {self._state})")
            self._state = "starting"
        try:
            sock = _bind(self._host, self._requested_port)
        except BaseException:
            with self._lock:
                self._state = "closed"
            raise
        self._port = sock.getsockname()[1]
        _install_log_filter()
        config = uvicorn.Config(
            _App(self),
            log_config=None,
            lifespan="off",
            ws="none",
            http=_http_protocol_class(),
            interface="asgi3",
            proxy_headers=False,
            server_header=False,
        )
        server = _Uvicorn(config, self)
        thread = threading.Thread(
            target=self._run,
            args=(server, sock),
            name=f"chia-async-scripted-server:{self._port}",
            daemon=True,
        )
        self._thread = thread
        thread.start()
        if not self._started.wait(_START_TIMEOUT) or self._error is not None:
            self.close()
            error = self._error
            raise RuntimeError(f"the scripted model server did not start: {error!r}") from error
        with self._lock:
            if self._state == "starting":
                self._state = "running"
        return self

    def _run(self, server: _Uvicorn, sock: socket.socket) -> None:
        try:
            with asyncio.Runner() as runner:
                runner.run(self._serve(server, sock))
        except BaseException as exc:  # surfaced by start() or close()
            self._error = exc
            logger.error("the scripted model server stopped with an error", exc_info=exc)
        finally:
            sock.close()
            # start() may still be waiting
            self._started.set()

    async def _serve(self, server: _Uvicorn, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self._closing = self._loop.create_future()
        await server.serve(sockets=[sock])

    def _closing_future(self) -> asyncio.Future[None]:
        assert self._closing is not None
        return self._closing

    def close(self) -> None:
        """Stop serving: wake stalled and slow streams, close every connection and the
        listening socket, and join the server thread. Idempotent."""
        with self._lock:
            if self._state == "closed":
                return
            self._state = "closed"
        thread, loop, closing = self._thread, self._loop, self._closing
        if thread is None:
            return
        if loop is not None and closing is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(_resolve, closing)
        if thread is threading.current_thread():
            return  # called from a turn function: the thread winds down on its own
        thread.join(_STOP_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError("the scripted model server thread did not stop")

    def __enter__(self) -> ScriptedModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> ScriptedModelServer:
        return await anyio.to_thread.run_sync(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await anyio.to_thread.run_sync(self.close)

    # ----------------------------------------------------------------------------- addresses

    @property
    def port(self) -> int:
        """The bound port."""
        if self._port is None:
            raise RuntimeError("the scripted server is not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, without a script prefix."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def base_url(self, name: str = "default") -> str:
        """The base URL that selects script ``name``: ``http://HOST:PORT/s/<name>``.

        The ``default`` script needs no prefix, so its base URL is :attr:`url`. Point SDKs
        at it as is: ``/v1/...`` paths and the OpenAI paths without ``/v1`` are both served.
        """
        _check_name(name)
        return self.url if name == "default" else f"{self.url}/s/{name}"

    # ----------------------------------------------------------------------------- scripts

    def script(
        self, name: str, turns: Sequence[Turn] | TurnFunction, *, repeat: bool = False
    ) -> Script:
        """Define (or replace) the script ``name``: a list of turns, or a function
        ``ParsedRequest -> Turn`` called for every generation request."""
        return self.add(Script(name, turns, repeat=repeat))

    def add(self, script: Script) -> Script:
        """Install a ready-made :class:`Script` (e.g. from ``load_scripts``), replacing any
        script of the same name."""
        with self._lock:
            self._scripts[script.name] = script
        return script

    def scripts(self) -> dict[str, Script]:
        """The installed scripts by name."""
        with self._lock:
            return dict(self._scripts)

    def _get_script(self, name: str) -> Script | None:
        with self._lock:
            return self._scripts.get(name)

    # ----------------------------------------------------------------------------- records

    def requests(self, name: str | None = None) -> list[RecordedRequest]:
        """Every request received (of script ``name`` only, when given), oldest first."""
        with self._lock:
            if name is None:
                return list(self._records)
            return [r for r in self._records if r.script == name]

    def clear(self, *, scripts: bool = True) -> None:
        """Forget the recorded requests and, unless ``scripts=False``, the scripts."""
        with self._lock:
            self._records.clear()
            if scripts:
                self._scripts.clear()

    def _record(
        self,
        name: str,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: Any,
        parsed: ParsedRequest | None,
        turn_index: int | None,
    ) -> None:
        record = RecordedRequest(
            script=name,
            method=method,
            path=path,
            query=query,
            headers=headers,
            body=body,
            parsed=parsed,
            received_at=time.monotonic(),
            turn_index=turn_index,
        )
        with self._lock:
            self._records.append(record)

    def _route(self, method: str, path: str) -> Protocol | None:
        for protocol in self._protocols:
            if protocol.match(method, path):
                return protocol
        return None

    def __repr__(self) -> str:
        where = f" {self.url}" if self._port is not None else ""
        return f"<ScriptedModelServer{where} {self._state}>"


def _check_name(name: str) -> None:
    if not name or "/" in name:
        raise ValueError(f"script name must be a non-empty path segment, got {name!r}")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto is
    # IPPROTO_TCP, and without it headers and body (two writes) meet delayed ACKs: +40 ms
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock
