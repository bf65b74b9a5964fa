"""``python -m chia_async``: the ``chia-async`` command."""

from chia_async.cli import main

raise SystemExit(main())
