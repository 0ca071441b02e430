"""End-to-end encryption: the log's data key, wrapped by a passphrase, and the sealing of payloads.

With encryption on, Firestore (and whoever can read it: the operator, a leaked service account, the
console) holds only ciphertext of table names, column names, keys and values; what routing needs stays
readable (device id, clock range, entry count, sizes, format version). One random 256-bit data key per
log encrypts every payload; it is stored in the log only wrapped by a key derived from the passphrase
(Argon2id, parameters and salt beside it), so changing the passphrase rewraps one document and
re-encrypts nothing.

Why XChaCha20-Poly1305 (PyNaCl) and not AES-256-GCM: many devices encrypt with one key and cannot
coordinate nonces, and XChaCha's 192-bit random nonces make collisions negligible where GCM's 96-bit ones
bound the number of messages per key; it is fast and constant-time in software on devices without AES
instructions; and PyNaCl already provides the package's Ed25519 signatures and Argon2id. A retried upload
stays a no-op without deterministic nonces: a planned batch is kept sealed in the outbox and resent as is.

A device keeps the unwrapped data key in its database's ``_sync_state`` (as it keeps its signing key), so
it syncs without asking for the passphrase again: the database file must be protected like the data it
holds (the rows are in it in clear anyway).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nacl.bindings as sodium
import nacl.exceptions
import nacl.pwhash.argon2id as argon2id

from .errors import ConfigurationError

CIPHER = "xchacha20poly1305"
KDF = "argon2id"
KEY_BYTES = 32
NONCE_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#: Argon2id cost (RFC 9106's second recommendation: 3 passes over 64 MiB; about half a second here).
OPSLIMIT = 3
MEMLIMIT = 64 * 1024 * 1024
RECORD_VERSION = 1

# Key record fields (the one document per log that holds the wrapped data key).
R_VERSION, R_KEY_ID, R_CIPHER, R_KDF = "v", "kid", "alg", "kdf"
R_OPS, R_MEM, R_SALT, R_WRAPPED = "ops", "mem", "salt", "wrapped"
RECORD_FIELDS = (R_VERSION, R_KEY_ID, R_CIPHER, R_KDF, R_OPS, R_MEM, R_SALT, R_WRAPPED)


class WrongPassphraseError(ConfigurationError):
    """The passphrase does not unwrap the log's data key."""


class AuthenticationError(ValueError):
    """Ciphertext that does not authenticate: tampered, truncated, or sealed for another place."""


@dataclass(frozen=True, slots=True)
class DataKey:
    """The log's data key: seals payloads, and keys the digests in document ids."""

    key: bytes

    @classmethod
    def generate(cls) -> DataKey:
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def from_hex(cls, text: str) -> DataKey:
        return cls(bytes.fromhex(text))

    @property
    def key_id(self) -> str:
        """A short public name of the key (not a secret): tells "sealed with another key" apart."""
        return hashlib.blake2b(self.key, digest_size=8, person=b"storex-key-id").hexdigest()

    def digest(self, message: bytes) -> str:
        """A keyed digest (for document ids): reveals nothing about the content without the key."""
        return hashlib.blake2b(message, key=self.key, digest_size=16, person=b"storex-doc-id").hexdigest()

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """``nonce || ciphertext``, authenticated together with ``aad`` (where the payload belongs)."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, self.key)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        """Inverse of :meth:`seal`; raises :class:`AuthenticationError` for anything that does not verify."""
        if len(sealed) < NONCE_BYTES + 16:
            raise AuthenticationError("the ciphertext is truncated")
        try:
            return bytes(
                sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                    sealed[NONCE_BYTES:], aad, sealed[:NONCE_BYTES], self.key
                )
            )
        except nacl.exceptions.CryptoError as exc:
            raise AuthenticationError("the ciphertext does not authenticate (tampered or misplaced)") from exc


def _kek(passphrase: str, salt: bytes, ops: int, mem: int) -> bytes:
    return bytes(argon2id.kdf(KEY_BYTES, passphrase.encode("utf-8"), salt, opslimit=ops, memlimit=mem))


def _wrap_aad(user_id: str, key_id: str) -> bytes:
    return b"storex-sync data key\x00" + user_id.encode("utf-8") + b"\x00" + key_id.encode()


def wrap(
    key: DataKey, passphrase: str, *, user_id: str, ops: int | None = None, mem: int | None = None
) -> dict[str, Any]:
    """The key record storing ``key`` wrapped by ``passphrase`` (fresh salt), for ``user_id``'s log.

    ``ops``/``mem`` default to :data:`OPSLIMIT`/:data:`MEMLIMIT`, read at call time (tests lower them).
    """
    ops = OPSLIMIT if ops is None else ops
    mem = MEMLIMIT if mem is None else mem
    if not passphrase:
        raise ConfigurationError("an empty passphrase cannot protect the log", hint="choose a passphrase")
    salt = os.urandom(argon2id.SALTBYTES)
    kek = DataKey(_kek(passphrase, salt, ops, mem))
    return {
        R_VERSION: RECORD_VERSION,
        R_KEY_ID: key.key_id,
        R_CIPHER: CIPHER,
        R_KDF: KDF,
        R_OPS: ops,
        R_MEM: mem,
        R_SALT: salt,
        R_WRAPPED: kek.seal(key.key, _wrap_aad(user_id, key.key_id)),
    }


def unwrap(record: Mapping[str, Any], passphrase: str, *, user_id: str) -> DataKey:
    """The data key in ``record``; raises :class:`WrongPassphraseError` when the passphrase is not it."""
    try:
        ops, mem, salt, wrapped = record[R_OPS], record[R_MEM], record[R_SALT], record[R_WRAPPED]
        key_id = record[R_KEY_ID]
        if record.get(R_CIPHER) != CIPHER or record.get(R_KDF) != KDF:
            raise ValueError("unknown cipher or key derivation")
        if type(ops) is not int or type(mem) is not int or not 1 <= ops <= 16 or not 8192 <= mem <= 2**32:
            raise ValueError("key derivation parameters out of range")
        kek = DataKey(_kek(passphrase, bytes(salt), ops, mem))
    except (KeyError, TypeError, ValueError, nacl.exceptions.CryptoError) as exc:
        raise ConfigurationError(
            f"the shared log's key record is damaged: {exc}",
            hint="restore it from a device that still syncs (its database holds the data key)",
        ) from exc
    try:
        key = DataKey(kek.open(bytes(wrapped), _wrap_aad(user_id, str(key_id))))
    except AuthenticationError:
        raise WrongPassphraseError(
            "the passphrase does not unlock this shared log",
            hint="use the passphrase the log was encrypted with (STOREX_SYNC_PASSPHRASE, or the prompt)",
        ) from None
    if key.key_id != key_id:
        raise ConfigurationError("the shared log's key record does not match its key id")
    return key


__all__ = ["CIPHER", "AuthenticationError", "DataKey", "WrongPassphraseError", "unwrap", "wrap"]
