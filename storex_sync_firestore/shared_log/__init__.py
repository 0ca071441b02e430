"""Stage 3: the shared log, one protocol and several backends, chosen by a URL.

``open_shared_log(url)`` is what the CLI and applications use so that a log can be named in one string
that is stored in the database by ``init``. The backend is found by the URL's scheme in a registry
(:mod:`.backends`) that installed packages extend through the entry-point group
``storex_sync_firestore.shared_logs``. This package's own:

* ``memory://`` or ``memory://NAME``: process-local (the same URL in one process is the same log);
* ``/path/to/folder``, ``./folder`` or ``file:///path/to/folder``: :class:`FilesystemSharedLog`;
* ``firestore://PROJECT`` or ``firestore://PROJECT/ROOT``: :class:`FirestoreSharedLog`. With
  ``FIRESTORE_EMULATOR_HOST`` set it talks to the emulator with anonymous credentials; otherwise it uses
  Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS`` or ``gcloud auth
  application-default login``). ``google.cloud`` is imported only then, so other users never pay for it;
* ``postgresql://USER:PASSWORD@HOST/DB`` (registered by entry point, like any third-party backend):
  :class:`~.postgres.PostgresSharedLog`, a log in a PostgreSQL server that confines each user's data.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .backends import ENTRY_POINT_GROUP, find_opener, known_schemes, register_backend, scheme_of
from .base import SharedSyncLog
from .filesystem import FilesystemSharedLog
from .memory import MemorySharedLog

if TYPE_CHECKING:
    from ..retry import RetryPolicy


class _Default(enum.Enum):
    """``retry`` left out: the backend's own default policy (a named value, so ``help()`` says so)."""

    POLICY = "default"

    def __repr__(self) -> str:
        return "DEFAULT_POLICY"


DEFAULT = _Default.POLICY


def open_shared_log(url: str, *, retry: RetryPolicy | _Default | None = DEFAULT) -> SharedSyncLog:
    """The shared log that ``url`` names; raises ConfigurationError (with a hint) for a bad URL or missing
    credentials. ``retry`` goes to the backend (omitted: its default policy; None: one attempt)."""
    if not url:
        raise ConfigurationError("no shared log given", hint="pass --log, e.g. --log firestore://my-project")
    scheme = scheme_of(url)
    opener = find_opener(scheme)
    if opener is None:
        raise ConfigurationError(
            f"unknown shared log URL {url!r}: no backend for {scheme}://",
            hint=f"use one of {', '.join(s + '://' for s in known_schemes())} or a folder path; a "
            f"package adds a scheme through the entry-point group {ENTRY_POINT_GROUP}",
        )
    options: dict[str, Any] = {} if retry is DEFAULT else {"retry": retry}
    return opener(url, **options)


__all__ = [
    "FilesystemSharedLog",
    "MemorySharedLog",
    "SharedSyncLog",
    "open_shared_log",
    "register_backend",
]
