"""Optional dependencies: import them lazily, and say which extra to install when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the ``pip install``."""


def require(module: str, extra: str, *, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``chia-async[extra]``.

    ``feature`` says what needed it, e.g. ``"OpenAICompatLLM"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{feature} needs the {module.split('.')[0]!r} package, which is not installed; "
            f"install it with: pip install 'chia-async[{extra}]'"
        ) from exc
