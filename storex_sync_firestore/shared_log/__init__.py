"""Stage 3: the shared log, one protocol and several backends, chosen by a URL.

``open_shared_log(url)`` is what the CLI and applications use so that a log can be named in one string
that is stored in the database by ``init``:

* ``memory://`` or ``memory://NAME``: process-local (the same URL in one process is the same log);
* ``/path/to/folder``, ``./folder`` or ``file:///path/to/folder``: :class:`FilesystemSharedLog`;
* ``firestore://PROJECT`` or ``firestore://PROJECT/ROOT``: :class:`FirestoreSharedLog`. With
  ``FIRESTORE_EMULATOR_HOST`` set it talks to the emulator with anonymous credentials; otherwise it uses
  Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS`` or ``gcloud auth
  application-default login``). ``google.cloud`` is imported only here, so memory and folder users never
  pay for it.
"""

from __future__ import annotations

import enum
import os
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ..errors import ConfigurationError
from .base import SharedSyncLog
from .filesystem import FilesystemSharedLog
from .memory import MemorySharedLog

if TYPE_CHECKING:
    from ..retry import RetryPolicy

_memory_logs: dict[str, MemorySharedLog] = {}
_memory_lock = threading.Lock()


class _Default(enum.Enum):
    """``retry`` left out: the backend's own default policy (a named value, so ``help()`` says so)."""

    POLICY = "default"

    def __repr__(self) -> str:
        return "DEFAULT_POLICY"


DEFAULT = _Default.POLICY


def open_shared_log(url: str, *, retry: RetryPolicy | _Default | None = DEFAULT) -> SharedSyncLog:
    """The shared log that ``url`` names; raises ConfigurationError (with a hint) for a bad URL or missing
    credentials. ``retry`` applies to Firestore only (omitted: its default policy; None: one attempt)."""
    if not url:
        raise ConfigurationError("no shared log given", hint="pass --log, e.g. --log firestore://my-project")
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme == "memory":
        with _memory_lock:
            log = _memory_logs.get(url)
            if log is None:
                log = _memory_logs[url] = MemorySharedLog()
                log.url = url
            return log
    if scheme == "file":
        return FilesystemSharedLog(unquote(urlsplit(url).path))
    if scheme == "":
        return FilesystemSharedLog(os.path.expanduser(url))
    if scheme == "firestore":
        return _open_firestore(url, retry)
    raise ConfigurationError(
        f"unknown shared log URL {url!r}",
        hint="use firestore://PROJECT[/ROOT], file:///path/to/folder, a folder path or memory://",
    )


def _open_firestore(url: str, retry: RetryPolicy | _Default | None) -> SharedSyncLog:
    parts = urlsplit(url)
    project = parts.netloc
    root = parts.path.strip("/")
    if not project:
        raise ConfigurationError(f"{url!r} names no project", hint="use firestore://PROJECT[/ROOT]")
    from google.auth import exceptions as auth_exceptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    from .firestore import FirestoreSharedLog

    try:
        if os.environ.get("FIRESTORE_EMULATOR_HOST"):
            client = firestore.Client(project=project, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
        else:
            client = firestore.Client(project=project)
    except auth_exceptions.DefaultCredentialsError as exc:
        raise ConfigurationError(
            f"no Google credentials to reach Firestore project {project!r}",
            hint="set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, run 'gcloud auth "
            "application-default login', or set FIRESTORE_EMULATOR_HOST for the emulator",
        ) from exc
    kwargs: dict[str, Any] = {} if retry is DEFAULT else {"retry": retry}
    if root:
        kwargs["root"] = root
    return FirestoreSharedLog(client, **kwargs)


__all__ = ["FilesystemSharedLog", "MemorySharedLog", "SharedSyncLog", "open_shared_log"]
