"""chia_async: an async-first agent runtime (placeholder: the public surface is being built)."""
__version__ = "0.1.0"
