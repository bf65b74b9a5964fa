"""Lazy public names for a package: ``__getattr__``/``__dir__`` built from a name table.

A package lists ``{public name: defining module}``; a name's module is imported on first
access and the value cached in the package's namespace, so importing the package itself
stays cheap (no SDK, no anyio) however many names it offers.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], public: list[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``(__getattr__, __dir__)`` pair for ``package`` (pass ``__name__``)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # the next access skips __getattr__
        return value

    def __dir__() -> list[str]:
        return list(public)

    return __getattr__, __dir__
