"""The base class of every turn event, kept apart so that :mod:`chia_async.results` (whose
:class:`~chia_async.results.Usage` is also an event) and :mod:`chia_async.events` can both
build on it without importing each other in a cycle."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chia_async._codec import Tagged, tagged_from_dict

__all__ = ["TurnEvent"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnEvent(Tagged):
    """Base of all turn events; ``TurnEvent.from_dict(data)`` rebuilds any of them."""

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> TurnEvent:
        """Rebuild any event from its ``to_dict()`` output."""
        event: TurnEvent = tagged_from_dict(TurnEvent, data)
        return event
