"""The public surface is explicit and importable, as httpx checks its own."""

from __future__ import annotations

import subprocess
import sys

import storex_sync_firestore


def test_every_exported_name_exists_once() -> None:
    names = storex_sync_firestore.__all__  # ruff's RUF022 keeps it sorted
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(storex_sync_firestore, name) is not None, name


def test_importing_the_package_does_not_load_the_google_client() -> None:
    probe = "import sys, storex_sync_firestore; print('google.cloud.firestore' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
