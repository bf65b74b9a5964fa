"""Leak checks for the Antigravity tests: no child process, process group or descriptor
may outlive a test, whatever path the call took."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_leaks(no_process_leaks: None) -> None:
    """Every test: no child process, process group or descriptor left (tests/cli_support)."""
