"""Test kit (being built)."""
