"""Errors of remote dispatch. Like every :class:`~chia_async.errors.ChiaError` they hold plain
data and pickle with all their fields::

    ChiaError
     ├── ResourceUnavailableError   no live node advertises what the call needs   never retried
     ├── WorkerLostError            the worker or node running the call died        never retried
     └── RemoteCancelledError       the remote call was cancelled (ray.cancel)       never retried

A deadline passing while waiting for a remote call is :class:`chia_async.errors.TimeoutError`.
None is retried by the retry policy: a remote call that may have run part-way (a CLI run
changes files) is for the caller to resubmit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from chia_async.errors import ChiaError

__all__ = ["RemoteCancelledError", "ResourceUnavailableError", "WorkerLostError"]

#: Ray's own per-node resources, left out when listing what a cluster advertises.
_BUILTIN_PREFIXES = ("node:", "accelerator_type:")
_BUILTIN = frozenset({"CPU", "GPU", "memory", "object_store_memory"})


class ResourceUnavailableError(ChiaError):
    """No live node of the cluster advertises the resources a remote call asks for.

    ``resources`` is what the call asked for, ``missing`` the names no single node could
    satisfy, ``advertised`` the custom resources the live nodes do offer. Raised before
    anything is sent: Ray would keep such a task pending forever, without an error.
    """

    kind = "resource_unavailable"

    def __init__(
        self,
        node_id: str = "",
        raw_message: str = "",
        resources: Mapping[str, float] | None = None,
        missing: Sequence[str] = (),
        advertised: Sequence[str] = (),
    ) -> None:
        self._init(
            node_id=node_id,
            raw_message=raw_message,
            resources=dict(resources or {}),
            missing=list(missing),
            advertised=list(advertised),
        )

    @classmethod
    def for_request(
        cls,
        resources: Mapping[str, float],
        num_cpus: float,
        nodes: Sequence[Mapping[str, float]],
    ) -> ResourceUnavailableError:
        """The error for a request that none of ``nodes`` (total resources) can run."""
        wanted: dict[str, float] = dict(resources)
        if num_cpus:
            wanted["CPU"] = num_cpus
        best = {name: max((n.get(name, 0.0) for n in nodes), default=0.0) for name in wanted}
        missing = [name for name, amount in wanted.items() if best[name] < amount]
        apart = not missing  # each fits on some node, but no node has all of them
        if apart:
            missing = sorted(wanted)
        advertised = sorted(
            {
                name
                for node in nodes
                for name in node
                if name not in _BUILTIN and not name.startswith(_BUILTIN_PREFIXES)
            }
        )
        asked = ", ".join(f"{name}={amount:g}" for name, amount in wanted.items())
        if not nodes:
            detail = "the cluster has no live node"
        elif apart:
            detail = "no single node has all of them"
        else:
            detail = "; ".join(
                f"{name!r} is at most {best[name]:g} on any live node"
                if best[name]
                else f"no live node advertises {name!r}"
                for name in missing
            )
        offered = ", ".join(advertised) if advertised else "none"
        message = (
            f"the call needs {asked}, but {detail}; custom resources advertised: {offered}. "
            "Start a node with e.g. `ray start --resources '{\"NAME\": 8}'`"
        )
        return cls("chia_remote", message, wanted, missing, advertised)


class WorkerLostError(ChiaError):
    """The Ray worker or node running the call died, or its result was lost."""

    kind = "worker_lost"

    def __init__(self, node_id: str = "", raw_message: str = "") -> None:
        self._init(node_id=node_id, raw_message=raw_message)


class RemoteCancelledError(ChiaError):
    """The remote call was cancelled by someone else than the waiting caller."""

    kind = "remote_cancelled"

    def __init__(self, node_id: str = "", raw_message: str = "") -> None:
        self._init(node_id=node_id, raw_message=raw_message)
