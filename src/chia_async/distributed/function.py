"""``@ChiaFunction(resources=...)``: mark what a call needs, and give it a ``.chia_remote``.

The decorator changes nothing about calling the function locally: it returns the function
itself, with three attributes added::

    @ChiaFunction(resources={"gpu_box": 1})
    async def embed(texts: list[str]) -> list[list[float]]:
        return [[float(len(text))] for text in texts]

    vectors = await embed.chia_remote(texts)           # runs on a node advertising gpu_box
    async for item in embed.chia_remote_stream(texts):  # (for iterators: items as they come)
        print(item)
    embed.chia_function                                  # the RemoteSpec

``chia_remote`` is an attribute of the *function*, so a method reached through an instance
takes the instance explicitly, as in the API reference: ``llm.prompt.chia_remote(llm,
message, tools)``. The typed spelling :func:`~chia_async.distributed.chia_remote` takes the
bound method instead (``chia_remote(llm.prompt, message, tools)``).

Every backend's ``prompt``/``aprompt``/``stream`` carries :data:`llm_call`: the call needs
the backend's ``ray_resource`` (a class attribute: ``"openai"``, ``"claude_code"``...; an
instance may override it), ``chia_remote`` returns the call's ``QueryResult`` (``aprompt``
semantics), ``chia_remote_stream`` yields its ``TurnEvent``\\ s (``stream`` semantics), and a
``resume_session=True`` backend picks up the session state the result carries, so its next
call continues the conversation on whichever worker it lands.

Nothing here imports Ray: :mod:`chia_async.distributed.dispatch` does, on the first remote
call.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from types import EllipsisType
from typing import TYPE_CHECKING, Any, ParamSpec, Self, TypeVar

if TYPE_CHECKING:
    from chia_async.distributed.dispatch import RemoteCall, RemoteStream

__all__ = [
    "DISPATCH_MARGIN",
    "ChiaFunction",
    "RemoteEntry",
    "RemoteSpec",
    "RemoteStreamEntry",
    "chia_remote",
    "chia_remote_stream",
    "llm_call",
    "llm_resources",
]

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")

#: Seconds a remote LLM call may take beyond its own ``timeout_seconds``: scheduling, a
#: worker process starting, the result travelling back, and teardown after a cancel.
DISPATCH_MARGIN = 60.0

#: Ray options a ChiaFunction may not set: a remote call is never re-run by Ray (a CLI run
#: changes files; our retry policy decides), and its result is one object or a stream.
_RESERVED_OPTIONS = frozenset({"max_retries", "retry_exceptions", "num_returns", "max_calls"})

Resources = Mapping[str, float]
ResourcesFor = Callable[..., Resources]
TimeoutFor = Callable[..., float | None]


@dataclass(frozen=True, slots=True)
class RemoteSpec:
    """What a remote call of a function needs and how it runs.

    ``resources`` is a mapping (custom Ray resource -> amount) or a callable receiving the
    call's arguments and returning one. ``timeout_seconds`` (or a callable of the arguments)
    is the deadline of the caller's wait, scheduling included; ``None`` waits forever.
    ``body`` / ``events`` replace the function on the worker for the result / streaming
    forms; ``after`` sees ``(args, kwargs, value)`` in the caller once a value arrived;
    ``check`` validates the arguments in the caller before anything is sent.
    """

    resources: Resources | ResourcesFor = field(default_factory=dict)
    num_cpus: float = 0.0
    timeout_seconds: float | TimeoutFor | None = 600.0
    ray_options: Mapping[str, Any] = field(default_factory=dict)
    body: Callable[..., Any] | None = None
    events: Callable[..., Any] | None = None
    after: Callable[[tuple[Any, ...], dict[str, Any], Any], None] | None = None
    check: Callable[..., None] | None = None

    def resources_for(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, float]:
        """The custom resources one call with these arguments needs."""
        wanted = self.resources(*args, **kwargs) if callable(self.resources) else self.resources
        return _check_resources(wanted)

    def timeout_for(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> float | None:
        """The deadline of the caller's wait for one call with these arguments."""
        timeout = self.timeout_seconds
        if callable(timeout):
            timeout = timeout(*args, **kwargs)
        return _check_timeout(timeout)


class ChiaFunction:
    """Decorator: the function (sync or async, plain or a method) gains ``.chia_remote``
    and ``.chia_remote_stream``, which run it as a Ray task on a node that advertises
    ``resources``.

    ``resources`` maps custom Ray resources to the amount one call holds while it runs
    (``{"openai": 1}``: a node started with ``--resources '{"openai": 8}'`` runs at most 8
    such calls at once); it may also be a callable that receives the call's arguments and
    returns that mapping (how every backend asks for its own ``ray_resource``).
    ``num_cpus`` defaults to 0: a model call waits on the network, not on a core.
    ``timeout_seconds`` bounds the caller's wait, scheduling included (None: no bound).
    Other keyword arguments are Ray task options (``memory``, ``runtime_env``,
    ``scheduling_strategy``, ``label_selector``...); ``max_retries`` and
    ``retry_exceptions`` are refused: Ray never re-runs a call.
    """

    def __init__(
        self,
        resources: Resources | ResourcesFor | None = None,
        *,
        num_cpus: float = 0.0,
        timeout_seconds: float | TimeoutFor | None = 600.0,
        **ray_options: Any,
    ) -> None:
        self.spec = _make_spec(
            resources=resources if resources is not None else {},
            num_cpus=num_cpus,
            timeout_seconds=timeout_seconds,
            ray_options=ray_options,
        )

    def __call__(self, fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"ChiaFunction decorates a function, got {type(fn).__name__}")
        return attach(fn, self.spec)


def attach(fn: F, spec: RemoteSpec) -> F:
    """Give ``fn`` its remote forms for ``spec`` and return it unchanged otherwise."""
    fn.chia_function = spec  # type: ignore[attr-defined]
    fn.chia_remote = RemoteEntry(fn, spec)  # type: ignore[attr-defined]
    fn.chia_remote_stream = RemoteStreamEntry(fn, spec)  # type: ignore[attr-defined]
    return fn


class _Entry:
    __slots__ = ("_fn", "_spec")

    def __init__(self, fn: Callable[..., Any], spec: RemoteSpec) -> None:
        self._fn = fn
        self._spec = spec

    @property
    def spec(self) -> RemoteSpec:
        """The remote spec this entry dispatches with."""
        return self._spec

    def options(
        self,
        *,
        resources: Resources | None = None,
        num_cpus: float | None = None,
        timeout_seconds: float | EllipsisType | None = ...,
        **ray_options: Any,
    ) -> Self:
        """A copy of this entry with per-call changes: ``resources`` (merged into the
        function's), ``num_cpus``, ``timeout_seconds``, and Ray task options."""
        spec = self._spec
        if resources is not None:
            extra = _check_resources(resources)
            base = spec.resources
            if callable(base):
                resolve = base

                def merged(*args: Any, **kwargs: Any) -> Resources:
                    return {**resolve(*args, **kwargs), **extra}

                spec = replace(spec, resources=merged)
            else:
                spec = replace(spec, resources={**base, **extra})
        if num_cpus is not None:
            spec = replace(spec, num_cpus=_check_cpus(num_cpus))
        if not isinstance(timeout_seconds, EllipsisType):
            spec = replace(spec, timeout_seconds=_check_timeout(timeout_seconds))
        if ray_options:
            spec = replace(spec, ray_options={**spec.ray_options, **_check_options(ray_options)})
        return type(self)(self._fn, spec)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {getattr(self._fn, '__qualname__', self._fn)!r}>"


class RemoteEntry(_Entry):
    """``fn.chia_remote``: call it with ``fn``'s arguments to run ``fn`` on a Ray worker;
    returns a :class:`~chia_async.distributed.RemoteCall` (await it for the value)."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> RemoteCall[Any]:
        from chia_async.distributed import dispatch  # Ray is imported there, on first use

        return dispatch.submit(self._fn, self._spec, args, kwargs)


class RemoteStreamEntry(_Entry):
    """``fn.chia_remote_stream``: like :class:`RemoteEntry`, but returns a
    :class:`~chia_async.distributed.RemoteStream` of what the call produces as it runs."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> RemoteStream:
        from chia_async.distributed import dispatch

        return dispatch.submit_stream(self._fn, self._spec, args, kwargs)


# -- the binding every backend's prompt / aprompt / stream carries ---------------------------


def llm_resources(llm: Any, *args: Any, **kwargs: Any) -> Resources:
    """``{llm.ray_resource: 1}``, or nothing when the backend names no resource.

    ``ray_resource`` is a class attribute of each backend (``"openai"``, ``"claude_code"``,
    ``"codex"``...) that an instance may override: ``llm.ray_resource = "openai_team_b"``.
    """
    name = getattr(llm, "ray_resource", None)
    if name is None or name == "":
        return {}
    if not isinstance(name, str):
        raise TypeError(f"ray_resource must be a str or None, got {type(name).__name__}")
    return {name: 1.0}


def _llm_timeout(llm: Any, *args: Any, **kwargs: Any) -> float:
    return float(getattr(llm, "timeout_seconds", 600.0)) + DISPATCH_MARGIN


def _llm_check(llm: Any, user_message: Any = None, tools: Any = None, *rest: Any) -> None:
    check_call = getattr(llm, "_check_call", None)
    if check_call is None:
        return
    _, checked = check_call(user_message, tools)
    for tool in checked:
        if tool.transport == "in_process":
            raise ValueError(
                f"tool {tool.name!r} is an in-process MCP server, which cannot travel to a Ray "
                "worker; serve it over HTTP and pass ChiaTool.http(url)"
            )


def _llm_result(llm: Any, user_message: str, tools: Any = None) -> Any:
    return llm.aprompt(user_message, tools)


def _llm_events(llm: Any, user_message: str, tools: Any = None) -> AsyncIterator[Any]:
    stream: AsyncIterator[Any] = llm.stream(user_message, tools)
    return stream


def _carry_session(args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> None:
    # A remote call ran on an unpickled copy of the LLM: what a local call would have left in
    # the object (the session to resume) comes back inside the result.
    if not args:
        return
    llm = args[0]
    if not getattr(llm, "resume_session", False):
        return
    # a QueryResult, or a Completed event carrying one (other events carry neither)
    result = value if hasattr(value, "session") else getattr(value, "result", None)
    if getattr(result, "session", None) is None:
        return
    restore = getattr(llm, "restore_session", None)
    if restore is not None:
        restore(result)


#: The remote spec of ``LLMCallBase.prompt`` / ``aprompt`` / ``stream``.
LLM_SPEC = RemoteSpec(
    resources=llm_resources,
    timeout_seconds=_llm_timeout,
    body=_llm_result,
    events=_llm_events,
    after=_carry_session,
    check=_llm_check,
)


def llm_call(fn: F) -> F:
    """Mark a backend method as an LLM call (see the module docstring)."""
    return attach(fn, LLM_SPEC)


# -- validation -------------------------------------------------------------------------------


def _make_spec(
    *,
    resources: Resources | ResourcesFor,
    num_cpus: float,
    timeout_seconds: float | TimeoutFor | None,
    ray_options: Mapping[str, Any],
) -> RemoteSpec:
    if not callable(resources):
        resources = _check_resources(resources)
    if not callable(timeout_seconds):
        timeout_seconds = _check_timeout(timeout_seconds)
    return RemoteSpec(
        resources=resources,
        num_cpus=_check_cpus(num_cpus),
        timeout_seconds=timeout_seconds,
        ray_options=_check_options(ray_options),
    )


def _check_resources(resources: object) -> dict[str, float]:
    if not isinstance(resources, Mapping):
        raise TypeError(
            "resources must be a mapping of resource name to amount, "
            f"got {type(resources).__name__}"
        )
    checked: dict[str, float] = {}
    for name, amount in resources.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"resource names must be non-empty strings, got {name!r}")
        if name in ("CPU", "GPU", "memory", "object_store_memory"):
            raise ValueError(
                f"{name!r} is not a custom resource; pass num_cpus=, num_gpus= or memory= instead"
            )
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise TypeError(f"resource {name!r} needs a numeric amount, got {amount!r}")
        if not (math.isfinite(amount) and amount > 0):
            raise ValueError(f"resource {name!r} needs an amount > 0, got {amount!r}")
        checked[name] = float(amount)
    return checked


def _check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout_seconds must be a number or None, got {type(timeout).__name__}")
    if not timeout > 0:
        raise ValueError(f"timeout_seconds must be > 0, got {timeout!r}")
    return float(timeout)


def _check_cpus(num_cpus: object) -> float:
    if isinstance(num_cpus, bool) or not isinstance(num_cpus, int | float) or num_cpus < 0:
        raise ValueError(f"num_cpus must be a number >= 0, got {num_cpus!r}")
    return float(num_cpus)


def _check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    reserved = sorted(_RESERVED_OPTIONS & set(options))
    if reserved:
        raise ValueError(
            f"{reserved[0]!r} cannot be set: Ray never re-runs a chia_remote call (a CLI run "
            "changes files); the call's own retry policy decides"
        )
    if "resources" in options or "num_cpus" in options:
        raise ValueError("pass resources= and num_cpus= as their own arguments")
    return dict(options)


def bound_arguments(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> None:
    """Raise ``TypeError`` in the caller when ``args``/``kwargs`` do not fit ``fn``."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: let the worker say
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        name = getattr(fn, "__qualname__", repr(fn))
        raise TypeError(f"{name}.chia_remote: {exc}") from None


# -- the typed spelling -------------------------------------------------------------------------


def _entry(fn: Callable[..., Any], attribute: str) -> tuple[_Entry, tuple[Any, ...]]:
    owner: tuple[Any, ...] = ()
    target = fn
    if inspect.ismethod(fn):  # a bound method: its instance is the first argument
        owner, target = (fn.__self__,), fn.__func__
    entry = getattr(target, attribute, None)
    if not isinstance(entry, _Entry):
        name = getattr(fn, "__qualname__", repr(fn))
        raise TypeError(f"{name} is not a ChiaFunction; decorate it with @ChiaFunction(...)")
    return entry, owner


def chia_remote(fn: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> RemoteCall[Any]:
    """Run ``fn(*args, **kwargs)`` on a Ray worker: the typed spelling of ``.chia_remote``.

    ``chia_remote(llm.prompt, message, tools)`` is ``llm.prompt.chia_remote(llm, message,
    tools)``: a bound method brings its instance along.
    """
    entry, owner = _entry(fn, "chia_remote")
    assert isinstance(entry, RemoteEntry)
    return entry(*owner, *args, **kwargs)


def chia_remote_stream(fn: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> RemoteStream:
    """Stream ``fn(*args, **kwargs)`` from a Ray worker: the typed ``.chia_remote_stream``."""
    entry, owner = _entry(fn, "chia_remote_stream")
    assert isinstance(entry, RemoteStreamEntry)
    return entry(*owner, *args, **kwargs)
