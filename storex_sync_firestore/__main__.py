"""``python -m storex_sync_firestore``: the same as the ``storex-sync`` command."""

from .cli import main

main()
