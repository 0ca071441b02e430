"""pytest fixtures for the Firestore emulator; registered as the ``pytest11`` entry point of this package.

* ``firestore_emulator`` (session): one emulator per test session, or per xdist worker, started with the
  repository's ``firestore.rules`` when present; sets ``FIRESTORE_EMULATOR_HOST`` for the session.
* ``firestore_project`` (function): a fresh project id per test (projects are isolated on the emulator),
  wiped afterwards.
* ``firestore_client``: a ``google.cloud.firestore.Client`` on that project with anonymous credentials
  (which the emulator treats as the owner: rules do not apply).

If the emulator cannot start, the fixture raises: the tests fail loudly, they are never skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .emulator import FirestoreEmulator

RULES_ENV = "STOREX_FIRESTORE_RULES"


def _rules_file(config: pytest.Config) -> Path | None:
    """``$STOREX_FIRESTORE_RULES``, else ``firestore.rules`` in the pytest root directory, if it exists."""
    path = Path(os.environ.get(RULES_ENV) or Path(config.rootpath) / "firestore.rules")
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def firestore_emulator(request: pytest.FixtureRequest) -> Iterator[FirestoreEmulator]:
    """A running emulator for the whole session (per xdist worker), stopped at the end."""
    emulator = FirestoreEmulator(rules=_rules_file(request.config))
    emulator.start()
    previous = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host_port
    try:
        yield emulator
    finally:
        if previous is None:
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = previous
        emulator.stop()


@pytest.fixture
def firestore_project(firestore_emulator: FirestoreEmulator) -> Iterator[str]:
    """A unique project id for one test; its data is wiped after the test."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    project = f"demo-{worker}-{uuid.uuid4().hex[:12]}"
    yield project
    firestore_emulator.wipe(project)


@pytest.fixture
def firestore_client(firestore_emulator: FirestoreEmulator, firestore_project: str) -> Iterator[Any]:
    """An owner client (rules bypassed) on the test's project."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    client = firestore.Client(project=firestore_project, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    yield client
    client.close()  # type: ignore[no-untyped-call]
