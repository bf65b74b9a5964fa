"""Submitting ``chia_remote`` calls to Ray, and waiting for them.

Every submission checks first that some live node advertises the resources the call asks for
(a Ray task asking for a resource no node has stays pending forever, without an error), then
starts one Ray task with ``max_retries=0`` (a CLI run changes files: re-running is for our
retry policy to decide, inside the call). Every wait has a deadline. Errors raised on the
worker arrive as their own class with all their fields (not as Ray's ``RayTaskError``
wrapper); failures of Ray itself become :class:`WorkerLostError`. Cancelling the caller
cancels the task, whose worker then tears the call down (see :mod:`.worker`); the caller
waits, bounded, for that teardown before its cancellation completes.

Ray is imported on the first call here, never by ``import chia_async``.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Mapping
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import anyio

from chia_async.distributed.errors import (
    RemoteCancelledError,
    ResourceUnavailableError,
    WorkerLostError,
)
from chia_async.distributed.function import RemoteSpec, bound_arguments
from chia_async.errors import TimeoutError as CallTimeoutError
from chia_async.errors import UnknownError
from chia_async.extras import require
from chia_async.redaction import redact

__all__ = ["RemoteCall", "RemoteStream", "cluster_nodes", "submit", "submit_stream"]

R = TypeVar("R")

#: How long the node table used for the resource check is trusted before asking Ray again
#: (a missing resource is always confirmed against a fresh table).
NODE_TABLE_TTL = 5.0
#: How long a cancelled or timed-out caller waits for the worker to tear the call down.
CANCEL_GRACE = 30.0
#: How much of the remote traceback is kept on an error that crossed back.
_NOTE_LIMIT = 4000
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: The slice in which a blocking ``RemoteCall.get()`` waits, so Ctrl-C gets in.
_SYNC_POLL = 0.2

After = Callable[[Any], None]


def _ray() -> Any:
    return require("ray", "ray", feature="chia_remote")


# -- submission -------------------------------------------------------------------------------


def submit(
    fn: Callable[..., Any], spec: RemoteSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> RemoteCall[Any]:
    """Start ``fn(*args, **kwargs)`` (or ``spec.body``) as a Ray task; see :class:`RemoteCall`."""
    ray, options, timeout, name = _prepare(fn, spec, args, kwargs)
    target = spec.body or fn
    ref = _task(ray, streaming=False).options(**options).remote(target, args, kwargs)
    return RemoteCall(ref, name=name, timeout=timeout, after=_after(spec, args, kwargs))


def submit_stream(
    fn: Callable[..., Any], spec: RemoteSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> RemoteStream:
    """Start ``fn`` (or ``spec.events``) as a streaming Ray task; see :class:`RemoteStream`."""
    ray, options, timeout, name = _prepare(fn, spec, args, kwargs)
    target = spec.events or fn
    generator = _task(ray, streaming=True).options(**options).remote(target, args, kwargs)
    return RemoteStream(generator, name=name, timeout=timeout, after=_after(spec, args, kwargs))


def _prepare(
    fn: Callable[..., Any], spec: RemoteSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, dict[str, Any], float | None, str]:
    bound_arguments(fn, args, kwargs)
    if spec.check is not None:
        spec.check(*args, **kwargs)
    resources = spec.resources_for(args, kwargs)
    timeout = spec.timeout_for(args, kwargs)
    name = f"chia_remote:{getattr(fn, '__qualname__', type(fn).__name__)}"
    ray = _ray()
    if not ray.is_initialized():
        ray.init()  # what Ray itself does on the first .remote(): RAY_ADDRESS, else local
    _NODES.require(ray, resources, spec.num_cpus)
    options = {
        **spec.ray_options,
        "name": name,
        "num_cpus": spec.num_cpus,
        "resources": resources,
        "max_retries": 0,
        "retry_exceptions": False,
    }
    return ray, options, timeout, name


def _after(spec: RemoteSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> After | None:
    hook = spec.after
    if hook is None:
        return None
    return lambda value: hook(args, kwargs, value)


_task_lock = threading.Lock()
_tasks: dict[bool, Any] = {}


def _task(ray: Any, *, streaming: bool) -> Any:
    with _task_lock:
        task = _tasks.get(streaming)
        if task is None:
            from chia_async.distributed import worker

            if streaming:
                task = ray.remote(num_returns="streaming", max_retries=0)(worker.execute_stream)
            else:
                task = ray.remote(max_retries=0)(worker.execute)
            _tasks[streaming] = task
        return task


# -- the resource check -----------------------------------------------------------------------


class _NodeTable:
    """Total resources of each live node, refreshed at most every :data:`NODE_TABLE_TTL`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: list[dict[str, float]] = []
        self._fetched = -float("inf")
        self._cluster: tuple[str, str] | None = None

    def nodes(self, ray: Any, *, fresh: bool = False) -> list[dict[str, float]]:
        context = ray.get_runtime_context()  # after a new ray.init(): another cluster, maybe
        cluster = (context.gcs_address, context.get_job_id())
        with self._lock:
            if fresh or cluster != self._cluster or self._age() > NODE_TABLE_TTL:
                self._cluster = cluster
                self._nodes = [
                    {str(k): float(v) for k, v in node.get("Resources", {}).items()}
                    for node in ray.nodes()
                    if node.get("Alive")
                ]
                self._fetched = time.monotonic()
            return list(self._nodes)

    def _age(self) -> float:
        return time.monotonic() - self._fetched

    def require(self, ray: Any, resources: Mapping[str, float], num_cpus: float) -> None:
        def fits(node: Mapping[str, float]) -> bool:
            if node.get("CPU", 0.0) < num_cpus:
                return False
            return all(node.get(name, 0.0) >= amount for name, amount in resources.items())

        if any(fits(n) for n in self.nodes(ray)):
            return
        nodes = self.nodes(ray, fresh=True)  # a node may have joined since
        if any(fits(n) for n in nodes):
            return
        raise ResourceUnavailableError.for_request(dict(resources), num_cpus, nodes)


_NODES = _NodeTable()


def cluster_nodes(*, fresh: bool = True) -> list[dict[str, float]]:
    """The total resources of every live node of the connected cluster."""
    ray = _ray()
    return _NODES.nodes(ray, fresh=fresh)


# -- errors crossing back -----------------------------------------------------------------------


def _unwrap(exc: BaseException, name: str) -> BaseException:
    """What the caller sees for an exception Ray raised while waiting on a call."""
    ray = _ray()
    exceptions = ray.exceptions
    if isinstance(exc, exceptions.RayTaskError):
        cause = exc.cause
        if isinstance(cause, exceptions.TaskCancelledError):
            return RemoteCancelledError(name, "the remote call was cancelled")
        if isinstance(cause, exceptions.RayError):
            # Ray replaces a cause it could not pickle with a RayError carrying its text
            return UnknownError(name, redact(str(cause)))
        if isinstance(cause, BaseException):
            # str() of Ray's wrapper is the remote traceback, headed by the worker's pid/ip
            remote = _ANSI.sub("", redact(str(exc))).strip()
            with contextlib.suppress(Exception):
                cause.add_note(f"raised on a Ray worker by {name}:\n{remote[-_NOTE_LIMIT:]}")
            return cause
    if isinstance(exc, exceptions.TaskCancelledError):
        return RemoteCancelledError(name, "the remote call was cancelled")
    if isinstance(exc, exceptions.RayError):
        return WorkerLostError(name, f"{type(exc).__name__}: {redact(str(exc))}")
    return exc


async def _settle(awaitable: Any) -> None:
    with contextlib.suppress(Exception):
        await awaitable


# -- the caller's side of one call ----------------------------------------------------------


class RemoteCall(Generic[R]):
    """A call running on a Ray worker: ``await`` it for its value.

    The wait has a deadline (the call's ``timeout_seconds`` plus
    :data:`~chia_async.distributed.function.DISPATCH_MARGIN` for LLM calls): past it the
    remote call is cancelled and :class:`chia_async.errors.TimeoutError` raised. An error
    raised on the worker is raised here as the same class with the same fields. Cancelling
    the awaiting task cancels the remote call and waits (bounded by :data:`CANCEL_GRACE`)
    for the worker to tear it down. Sync code uses :meth:`get`; ``object_ref`` is the raw
    Ray ``ObjectRef`` (``ray.get``/``ray.wait`` it directly; errors then arrive in Ray's
    wrapper).
    """

    def __init__(
        self, ref: Any, *, name: str, timeout: float | None, after: After | None = None
    ) -> None:
        self._ref = ref
        self.name = name
        self.timeout = timeout
        self._after = after
        self._started = time.monotonic()

    @property
    def object_ref(self) -> Any:
        """The Ray ``ObjectRef`` of the call's value."""
        return self._ref

    def __repr__(self) -> str:
        return f"<RemoteCall {self.name} {self._ref!r}>"

    def _remaining(self) -> float | None:
        if self.timeout is None:
            return None
        return max(0.0, self.timeout - (time.monotonic() - self._started))

    def cancel(self) -> None:
        """Ask Ray to cancel the call (its worker tears it down); does not wait."""
        _ray().cancel(self._ref)

    def __await__(self) -> Generator[Any, None, R]:
        return self._wait().__await__()

    async def _wait(self) -> R:
        ray = _ray()
        remaining = self._remaining()
        try:
            with anyio.move_on_after(remaining) as scope:  # None: no deadline
                try:
                    value = await self._ref
                except ray.exceptions.RayError as exc:
                    raise _unwrap(exc, self.name) from None
        except BaseException:
            if not _ready(ray, self._ref):
                await self._stop(ray)
            raise
        if scope.cancelled_caught:
            await self._stop(ray)
            raise self._timeout_error()
        return self._deliver(value)

    def get(self, timeout: float | None = None) -> R:
        """Block until the value arrives (for sync callers); ``timeout`` shortens the wait.

        Ctrl-C (KeyboardInterrupt) cancels the remote call and waits for its teardown.
        """
        ray = _ray()
        limit = self._remaining()
        if timeout is not None:
            limit = timeout if limit is None else min(limit, timeout)
        deadline = None if limit is None else time.monotonic() + limit
        try:
            while True:
                step = _SYNC_POLL
                if deadline is not None:
                    step = min(step, deadline - time.monotonic())
                if step <= 0:
                    break
                ready, _ = ray.wait([self._ref], timeout=step)
                if ready:
                    try:
                        value = ray.get(self._ref)
                    except ray.exceptions.RayError as exc:
                        raise _unwrap(exc, self.name) from None
                    return self._deliver(value)
        except KeyboardInterrupt:
            ray.cancel(self._ref)
            ray.wait([self._ref], timeout=CANCEL_GRACE)
            raise
        ray.cancel(self._ref)
        ray.wait([self._ref], timeout=CANCEL_GRACE)
        raise self._timeout_error()

    def _deliver(self, value: Any) -> R:
        if self._after is not None:
            self._after(value)
        result: R = value
        return result

    async def _stop(self, ray: Any) -> None:
        ray.cancel(self._ref)
        with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_GRACE):
            await _settle(self._ref)

    def _timeout_error(self) -> CallTimeoutError:
        return CallTimeoutError(
            self.name,
            f"the remote call did not finish within {self.timeout:g} s (scheduling included); "
            "it was cancelled",
            timeout=self.timeout,
        )


def _ready(ray: Any, ref: Any) -> bool:
    ready, _ = ray.wait([ref], timeout=0)
    return bool(ready)


class RemoteStream(AsyncIterator[Any]):
    """The items of a call streaming from a Ray worker as they are produced there (for an
    LLM call: its ``TurnEvent``\\ s, ending with ``Completed``).

    An error raised on the worker is raised from the iterator, after the items before it, as
    the same class with the same fields. The whole stream has the call's deadline. Use
    ``async with`` (or :meth:`aclose`) to stop early: the remote call is cancelled and its
    teardown awaited; a stream dropped unclosed is cancelled when garbage collected.
    """

    def __init__(
        self, generator: Any, *, name: str, timeout: float | None, after: After | None = None
    ) -> None:
        self._generator = generator
        self.name = name
        self.timeout = timeout
        self._after = after
        self._started = time.monotonic()
        self._done = False

    def __repr__(self) -> str:
        return f"<RemoteStream {self.name}>"

    @property
    def object_ref_generator(self) -> Any:
        """The Ray ``ObjectRefGenerator`` behind this stream."""
        return self._generator

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        if self._done:
            raise StopAsyncIteration
        ray = _ray()
        remaining: float | None = None
        if self.timeout is not None:
            remaining = max(0.0, self.timeout - (time.monotonic() - self._started))
        try:
            with anyio.move_on_after(remaining) as scope:
                try:
                    ref = await self._generator.__anext__()
                    value = await ref
                except StopAsyncIteration:
                    self._done = True
                    raise
                except ray.exceptions.RayError as exc:
                    self._done = True
                    raise _unwrap(exc, self.name) from None
        except BaseException as exc:
            if not isinstance(exc, StopAsyncIteration | Exception):  # cancelled
                await self.aclose()
            raise
        if scope.cancelled_caught:
            await self.aclose()
            raise CallTimeoutError(
                self.name,
                f"the remote stream did not finish within {self.timeout:g} s; it was cancelled",
                timeout=self.timeout,
            )
        if self._after is not None:
            self._after(value)
        return value

    async def aclose(self) -> None:
        """Cancel the remote call if it is still running and wait (bounded) for its end."""
        self._done = True
        ray = _ray()
        completed = self._generator.completed()
        if _ready(ray, completed):
            return
        ray.cancel(self._generator)
        with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_GRACE):
            await _settle(completed)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if self._done:
            return
        with contextlib.suppress(Exception):  # interpreter shutdown, Ray already gone
            ray = _ray()
            if ray.is_initialized() and not _ready(ray, self._generator.completed()):
                ray.cancel(self._generator)
