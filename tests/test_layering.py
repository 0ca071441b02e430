"""The stages depend on each other in order: the client log (stage 2) never on the reconciler (stage 5)."""

from __future__ import annotations

import subprocess
import sys


def test_the_client_log_does_not_load_the_reconciler() -> None:
    probe = (
        "import sys, storex_sync_firestore.client_log; "
        "print(sorted(m for m in sys.modules if m.split('.')[-1] in ('reconcile', 'sync', 'constraints')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
