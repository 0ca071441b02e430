"""Ways to get a ``google.cloud.firestore.Client`` for :class:`FirestoreSharedLog`.

* A server (or a test) passes its own client, or builds one from firebase-admin with
  :func:`client_from_firebase_admin` / :func:`client_from_service_account`: such clients bypass security
  rules, so they suit trusted back-ends only.
* A user's device acts as that user with :func:`end_user_client`, holding a Firebase Auth ID token; the
  rules in ``firestore.rules`` then decide what it may do.

Private API lives here and nowhere else: with ``FIRESTORE_EMULATOR_HOST`` set, the client ignores its
credentials and hard-codes ``authorization: Bearer owner`` in its ``_rpc_metadata`` property, which makes
the emulator skip rules. :class:`EndUserClient` overrides that property to send the user's token instead.
``tests/test_firestore_rules.py`` checks that this still works with the installed client version.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import google.auth.credentials
from google.cloud import firestore

TokenSource = str | Callable[[], str]


def _source(token: TokenSource) -> Callable[[], str]:
    return token if callable(token) else (lambda: token)


def _jwt_claims(token: str) -> dict[str, Any]:
    """The (unverified) claims of a JWT; only used to learn when a token expires."""
    try:
        payload = token.split(".")[1]
        return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
    except (IndexError, ValueError):
        return {}


class IdTokenCredentials(google.auth.credentials.Credentials):
    """google-auth credentials that send a Firebase ID token as the bearer token.

    ``token`` is the ID token or a callable returning a fresh one (Firebase ID tokens last an hour; the
    callable is asked again when the current one expires).
    """

    def __init__(self, token: TokenSource) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._token_source = _source(token)

    def refresh(self, request: Any) -> None:
        self.token = self._token_source()
        exp = _jwt_claims(self.token).get("exp")
        self.expiry = datetime.fromtimestamp(exp, UTC).replace(tzinfo=None) if exp else None


class EndUserClient(firestore.Client):
    """A Firestore client acting as a Firebase Auth user, so that security rules apply to it.

    In production the token travels as the credentials' bearer token. On the emulator the base client
    replaces credentials with ``Bearer owner``; the ``_rpc_metadata`` override below (private API, kept to
    this one property) puts the user's token back.
    """

    def __init__(self, *, project: str, token: TokenSource, database: str | None = None) -> None:
        self._user_token = _source(token)
        super().__init__(project=project, credentials=IdTokenCredentials(token), database=database)

    @property
    def _rpc_metadata(self) -> list[tuple[str, str]]:
        metadata = [(k, v) for k, v in super()._rpc_metadata if k != "authorization"]
        if self._emulator_host is not None:
            metadata.append(("authorization", f"Bearer {self._user_token()}"))
        return metadata


def end_user_client(*, project: str, token: TokenSource, database: str | None = None) -> firestore.Client:
    """A client acting as the user whose Firebase ID token ``token`` is (a string or a callable)."""
    return EndUserClient(project=project, token=token, database=database)


def emulator_id_token(uid: str, **claims: Any) -> str:
    """An unsigned ID token for ``uid``: the emulator reads ``sub`` without checking signatures.

    Extra ``claims`` become custom claims (``request.auth.token.<name>`` in rules), e.g.
    ``storexDeviceId`` to act as one device.
    """

    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'sub': uid, 'user_id': uid, **claims})}."


def client_from_firebase_admin(
    app: Any = None, *, credential: Any = None, project: str | None = None, database: str | None = None
) -> firestore.Client:
    """A Firestore client from firebase-admin, for trusted back-ends (it bypasses security rules).

    Pass an initialised ``firebase_admin.App``, or a ``credential`` (e.g.
    ``firebase_admin.credentials.Certificate(path)``) and ``project`` to initialise a new, uniquely named
    app. With neither, on the emulator (``FIRESTORE_EMULATOR_HOST`` set) anonymous credentials are used.
    """
    import firebase_admin
    from firebase_admin import credentials
    from firebase_admin import firestore as admin_firestore

    class AnonymousAdminCredential(credentials.Base):  # type: ignore[misc]
        """The emulator has no Application Default Credentials; firebase-admin insists on a credential."""

        def get_credential(self) -> google.auth.credentials.Credentials:
            return google.auth.credentials.AnonymousCredentials()  # type: ignore[no-untyped-call]

    if app is None:
        if credential is None and os.environ.get("FIRESTORE_EMULATOR_HOST"):
            credential = AnonymousAdminCredential()
        options = {"projectId": project} if project else None
        app = firebase_admin.initialize_app(credential, options, name=f"storex-sync-{uuid.uuid4().hex}")
    client: firestore.Client = admin_firestore.client(app, database)
    return client


def client_from_service_account(path: str, *, project: str | None = None) -> firestore.Client:
    """A Firestore client authenticated with a service-account key file (bypasses security rules)."""
    from firebase_admin import credentials

    return client_from_firebase_admin(credential=credentials.Certificate(path), project=project)
