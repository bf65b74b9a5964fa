"""JSON round trip for the event and result dataclasses, driven by their type hints.

Kept apart from pydantic on purpose: importing pydantic costs more than all of chia_async's
import budget, and the shapes here are few and fixed.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import sys
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = ["Tagged", "decode", "encode", "tagged_from_dict", "tagged_to_dict"]


class Tagged:
    """Mixin for dataclasses with a ``kind`` discriminator that round-trip through JSON.

    ``tagged_from_dict(Base, data)`` finds the subclass of ``Base`` whose ``kind`` field
    defaults to ``data["kind"]``.
    """

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict with ``kind`` first."""
        return tagged_to_dict(self)


def tagged_to_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        out[f.name] = encode(getattr(obj, f.name))
    return out


def tagged_from_dict(base: type[Any], data: Mapping[str, Any]) -> Any:
    if not isinstance(data, Mapping):
        raise TypeError(f"expected a mapping, got {type(data).__name__}")
    kind = data.get("kind")
    cls = _subclass_for_kind(base, kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown {base.__name__} kind: {kind!r}")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.name not in data:
            continue
        kwargs[f.name] = decode(hints[f.name], data[f.name])
    return cls(**kwargs)


_kinds: dict[tuple[type[Any], str], type[Any]] = {}

# Kinds defined in modules that may not be imported yet in the process that decodes (a fresh
# process reading `chia-async run --json` output, a Ray driver): imported on a miss.
_DEFINED_IN = {
    "gemini_cli_query_result": "chia_async.backends.gemini_cli",
    "opencode_query_result": "chia_async.backends.opencode",
}


def _subclass_for_kind(base: type[Any], kind: str) -> type[Any] | None:
    found = _kinds.get((base, kind))
    if found is None and kind in _DEFINED_IN and _DEFINED_IN[kind] not in sys.modules:
        importlib.import_module(_DEFINED_IN[kind])
    if found is None:
        stack = [base]
        while stack:  # walk the whole subclass tree; new subclasses are found on a miss
            cls = stack.pop()
            stack.extend(cls.__subclasses__())
            f = getattr(cls, "__dataclass_fields__", {}).get("kind")
            # slots=True dataclasses replace the class the `class` statement made; the
            # original lingers in __subclasses__(), so take only the one the module exports
            module = sys.modules.get(cls.__module__)
            if (
                f is not None
                and isinstance(f.default, str)
                and getattr(module, cls.__qualname__, None) is cls
            ):
                _kinds[(base, f.default)] = cls
        found = _kinds.get((base, kind))
    return found


_hint_cache: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    hints = _hint_cache.get(cls)
    if hints is None:
        hints = _hint_cache[cls] = typing.get_type_hints(cls)
    return hints


def encode(value: Any) -> Any:
    """Turn a field value into JSON-compatible data."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [encode(v) for v in value]
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def decode(hint: Any, value: Any) -> Any:
    """Turn JSON data back into a value of the type ``hint``."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(options) == 1:
            return decode(options[0], value)
        for arg in options:  # first alternative that accepts the value
            try:
                return decode(arg, value)
            except (TypeError, ValueError):
                continue
        return value
    if hint is Any:
        return value
    if origin is typing.Literal:
        return value
    if hint is datetime:
        if not isinstance(value, str):
            raise TypeError("datetime must be an ISO string")
        return datetime.fromisoformat(value)
    if hint is bytes:
        if not isinstance(value, str):
            raise TypeError("bytes must be base64 text")
        return base64.b64decode(value)
    if hint in (str, int, float, bool):
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, hint):
            raise TypeError(f"expected {hint.__name__}, got {type(value).__name__}")
        return value
    if origin in (dict, Mapping) or hint is dict:
        pair = typing.get_args(hint)
        value_hint = pair[1] if len(pair) == 2 else Any
        return {k: decode(value_hint, v) for k, v in value.items()}
    if origin in (tuple, list) or hint in (tuple, list):
        item_args = typing.get_args(hint)
        item_hint = item_args[0] if item_args else Any
        items = [decode(item_hint, v) for v in value]
        return tuple(items) if (origin or hint) is tuple else items
    if isinstance(hint, type):
        from chia_async.errors import ChiaError

        if issubclass(hint, ChiaError):
            return ChiaError.from_dict(value)
        if issubclass(hint, Tagged):
            return tagged_from_dict(hint, value)
    return value
