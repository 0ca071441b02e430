"""pytest fixtures for the Firestore emulator; registered as the ``pytest11`` entry point of this package.

* ``firestore_emulator`` (session): one emulator per test session, or per xdist worker, started with the
  repository's ``firestore.rules`` when present; sets ``FIRESTORE_EMULATOR_HOST`` for the session. When
  ``FIRESTORE_EMULATOR_HOST`` is already set (``firebase emulators:exec``, ``storex-sync emulator``), that
  emulator is used instead, and left running.
* ``firestore_project`` (function): a fresh project id per test (projects are isolated on the emulator),
  wiped afterwards.
* ``firestore_client``: a ``google.cloud.firestore.Client`` on that project with anonymous credentials
  (which the emulator treats as the owner: rules do not apply).
* ``firestore_user_client``: a factory, ``firestore_user_client("alice", storexDeviceId=...)``, of clients
  on that project acting as an end user with that uid and those custom claims, so that the security
  rules apply to them as to a signed-in user of your app (the emulator reads the unsigned token's claims).

If the emulator cannot start, or the rules file does not compile, the fixture raises: the tests fail
loudly, they are never skipped. Nothing heavy is imported until a fixture is used (this module is loaded
into every pytest session of an environment that has the package).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
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
    external = os.environ.get("FIRESTORE_EMULATOR_HOST")
    if external:
        yield FirestoreEmulator.attach(external, rules=_rules_file(request.config))
        return
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


@pytest.fixture
def firestore_user_client(
    request: pytest.FixtureRequest, firestore_emulator: FirestoreEmulator, firestore_project: str
) -> Iterator[Callable[..., Any]]:
    """``firestore_user_client(uid, **claims)``: a client on the test's project acting as that user.

    Claims become ``request.auth.token.<name>`` in the rules (``storexDeviceId`` ties a token to one
    device of the user). The rules, ``$STOREX_FIRESTORE_RULES`` or ``firestore.rules`` in the pytest root
    directory, are loaded into the test's project, whichever emulator runs.
    """
    rules = _rules_file(request.config)
    if rules is None:
        raise RuntimeError(
            "firestore_user_client needs security rules to apply: put firestore.rules in the pytest root "
            f"directory, or set ${RULES_ENV} to its path"
        )
    firestore_emulator.set_rules(firestore_project, rules.read_text())
    from ..shared_log.firestore_clients import emulator_id_token, end_user_client

    clients: list[Any] = []

    def make(uid: str, **claims: Any) -> Any:
        client = end_user_client(project=firestore_project, token=emulator_id_token(uid, **claims))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
