"""Scale-out on Ray: run any backend's call on the workers that hold its credentials.

``@ChiaFunction(resources={...})`` marks what a call needs; the function gains
``.chia_remote(*args)`` (an awaitable :class:`RemoteCall` of its value) and
``.chia_remote_stream(*args)`` (a :class:`RemoteStream` of what it produces, as it is
produced). Every backend's ``prompt`` / ``aprompt`` / ``stream`` already carries its
provider's resource (the backend's ``ray_resource``, overridable per instance)::

    import ray
    ray.init(address="head:6379")
    llm = OpenAILLM("gpt-5")    # lands on nodes started with --resources '{"openai": 8}'
    result = await llm.prompt.chia_remote(llm, "fix the failing test", tools)
    async for event in llm.stream.chia_remote_stream(llm, "fix the failing test", tools):
        print(event.kind)                  # the worker's events, in order, as they happen

Errors raised on the worker arrive as the same class with the same fields; a call asking for
a resource no live node advertises fails at once with :class:`ResourceUnavailableError`;
cancelling the caller cancels the remote call and tears it down on the worker; Ray never
re-runs a call (the call's own retry policy decides). ``resume_session=True`` backends carry
their conversation in the result, so the next call may land on any worker.

Ray is an optional extra (``pip install 'chia-async[ray]'``), imported on the first remote
call only. :class:`LocalCluster` starts a throwaway multi-node cluster on this machine, for
tests and benchmarks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chia_async._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "ChiaFunction": "chia_async.distributed.function",
    "RemoteSpec": "chia_async.distributed.function",
    "RemoteEntry": "chia_async.distributed.function",
    "RemoteStreamEntry": "chia_async.distributed.function",
    "chia_remote": "chia_async.distributed.function",
    "chia_remote_stream": "chia_async.distributed.function",
    "llm_resources": "chia_async.distributed.function",
    "DISPATCH_MARGIN": "chia_async.distributed.function",
    "RemoteCall": "chia_async.distributed.dispatch",
    "RemoteStream": "chia_async.distributed.dispatch",
    "cluster_nodes": "chia_async.distributed.dispatch",
    "ResourceUnavailableError": "chia_async.distributed.errors",
    "WorkerLostError": "chia_async.distributed.errors",
    "RemoteCancelledError": "chia_async.distributed.errors",
    "LocalCluster": "chia_async.distributed.local_cluster",
    "NodeSpec": "chia_async.distributed.local_cluster",
}

__all__ = [
    "DISPATCH_MARGIN",
    "ChiaFunction",
    "LocalCluster",
    "NodeSpec",
    "RemoteCall",
    "RemoteCancelledError",
    "RemoteEntry",
    "RemoteSpec",
    "RemoteStream",
    "RemoteStreamEntry",
    "ResourceUnavailableError",
    "WorkerLostError",
    "chia_remote",
    "chia_remote_stream",
    "cluster_nodes",
    "llm_resources",
]

if TYPE_CHECKING:
    from chia_async.distributed.dispatch import RemoteCall, RemoteStream, cluster_nodes
    from chia_async.distributed.errors import (
        RemoteCancelledError,
        ResourceUnavailableError,
        WorkerLostError,
    )
    from chia_async.distributed.function import (
        DISPATCH_MARGIN,
        ChiaFunction,
        RemoteEntry,
        RemoteSpec,
        RemoteStreamEntry,
        chia_remote,
        chia_remote_stream,
        llm_resources,
    )
    from chia_async.distributed.local_cluster import LocalCluster, NodeSpec


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
