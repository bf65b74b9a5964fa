"""Optional dependencies: import them lazily, and say which extra to install when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "missing_extra", "require"]


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the ``pip install``."""


def missing_extra(module: str, extra: str, *, feature: str) -> MissingExtraError:
    """The error for a missing optional ``module``; for import sites that keep a static
    ``import`` (so type checkers see the module) inside ``try/except ImportError``."""
    return MissingExtraError(
        f"{feature} needs the {module.split('.')[0]!r} package, which is not installed; "
        f"install it with: pip install 'chia-async[{extra}]'"
    )


def require(module: str, extra: str, *, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``chia-async[extra]``.

    ``feature`` says what needed it, e.g. ``"OpenAICompatLLM"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_extra(module, extra, feature=feature) from exc
