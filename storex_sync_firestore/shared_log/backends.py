"""The registry of shared-log backends: which code opens a log URL, by its scheme.

A backend is a function ``open(url, **options) -> SharedSyncLog`` registered under a URL scheme. The
options are keyword arguments a caller chose (today ``retry``: a :class:`~..retry.RetryPolicy`, or None
for one attempt; it is passed only when the caller set it), so an opener should accept ``**options`` and
ignore what it does not know.

Where openers come from, first match wins:

1. :func:`register_backend` calls made in this process (an application's own backend, tests);
2. this package's built-ins: ``memory``, ``file`` (and a plain folder path) and ``firestore``;
3. the entry-point group ``storex_sync_firestore.shared_logs`` of every installed distribution: the entry
   point's name is the scheme and its value the opener (``package.module:open_log``). This package
   registers its PostgreSQL log so, and a third-party package does the same in its ``pyproject.toml``::

       [project.entry-points."storex_sync_firestore.shared_logs"]
       myscheme = "my_package.log:open_log"

   after which ``storex-sync init --log myscheme://...`` works without touching this package.

A scheme with a driver suffix (``postgresql+psycopg``) is looked up as written, then without the suffix.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import ConfigurationError
from .base import SharedSyncLog
from .filesystem import FilesystemSharedLog
from .memory import MemorySharedLog

ENTRY_POINT_GROUP = "storex_sync_firestore.shared_logs"
Opener = Callable[..., SharedSyncLog]

_registered: dict[str, Opener] = {}
_memory_logs: dict[str, MemorySharedLog] = {}
_memory_lock = threading.Lock()


def register_backend(scheme: str, opener: Opener) -> None:
    """Open ``scheme://...`` URLs with ``opener(url, **options)`` in this process (before entry points)."""
    _registered[scheme.lower()] = opener


def scheme_of(url: str) -> str:
    """The URL's scheme, lower case; ``""`` for a plain path (a folder log)."""
    return urlsplit(url).scheme.lower() if "://" in url else ""


def find_opener(scheme: str) -> Opener | None:
    """The opener for ``scheme``: registered, built in, or from an installed entry point; None if none."""
    names = [scheme] if "+" not in scheme else [scheme, scheme.split("+", 1)[0]]
    for name in names:
        opener = _registered.get(name) or _BUILT_IN.get(name) or _from_entry_points(name)
        if opener is not None:
            return opener
    return None


def known_schemes() -> list[str]:
    """Every scheme some backend opens here, for error messages and ``--help``."""
    installed = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(({*_registered, *_BUILT_IN, *installed}) - {""})


def _from_entry_points(scheme: str) -> Opener | None:
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=scheme):
        try:
            opener = ep.load()
        except ImportError as exc:
            raise ConfigurationError(
                f"the shared-log backend for {scheme}:// ({ep.value}) cannot be imported: {exc}",
                hint=f"install what it needs (for postgresql: pip install 'storex-sync-firestore[postgres]'; "
                f"otherwise the package that provides {ep.value.split(':')[0]})",
            ) from exc
        if not callable(opener):
            raise ConfigurationError(
                f"the entry point {ep.name} = {ep.value!r} in group {ENTRY_POINT_GROUP} is not callable",
                hint="point it at a function open(url, **options) returning a shared log",
            )
        return opener  # type: ignore[no-any-return]
    return None


# ---- built-ins ----


def _open_memory(url: str, **_options: Any) -> SharedSyncLog:
    """``memory://`` or ``memory://NAME``: one log per URL in this process."""
    with _memory_lock:
        log = _memory_logs.get(url)
        if log is None:
            log = _memory_logs[url] = MemorySharedLog()
            log.url = url
        return log


def _open_file(url: str, **_options: Any) -> SharedSyncLog:
    return FilesystemSharedLog(unquote(urlsplit(url).path))


def _open_path(url: str, **_options: Any) -> SharedSyncLog:
    return FilesystemSharedLog(os.path.expanduser(url))


def _open_firestore(url: str, **options: Any) -> SharedSyncLog:
    """``firestore://PROJECT[/ROOT]``; ``google.cloud`` is imported only here."""
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
    kwargs: dict[str, Any] = {k: v for k, v in options.items() if k == "retry"}
    if root:
        kwargs["root"] = root
    return FirestoreSharedLog(client, **kwargs)


_BUILT_IN: dict[str, Opener] = {
    "memory": _open_memory,
    "file": _open_file,
    "": _open_path,
    "firestore": _open_firestore,
}
