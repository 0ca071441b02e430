"""Device signing keys: every batch a device uploads carries its Ed25519 signature.

Why: all devices of a user authenticate to Firestore as the same user, so the service cannot tell them
apart, and anyone holding the user's credentials (or the project's admin keys) can write any document.
A signature made with a key that never leaves the device's database ties a batch's content and identity
to that device: a batch claiming another device, or altered after it was written, fails verification on
every reader, the same way. The public key is published once, in the device's registry document, which
the security rules make create-only.

The private key is kept in the database's ``_sync_state`` (as the device id is): whoever can read the
database file can sign as the device. That is the boundary the README states.
"""

from __future__ import annotations

from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


@dataclass(frozen=True, slots=True)
class DeviceKey:
    """A device's Ed25519 signing key (the 32-byte seed) and its public key."""

    seed: bytes

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls(bytes(SigningKey.generate()))

    @classmethod
    def from_hex(cls, text: str) -> DeviceKey:
        return cls(bytes.fromhex(text))

    def to_hex(self) -> str:
        return self.seed.hex()

    @property
    def public_key(self) -> bytes:
        return bytes(SigningKey(self.seed).verify_key)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte signature of ``message`` (deterministic: the same message, the same signature)."""
        return bytes(SigningKey(self.seed).sign(message).signature)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is the holder of ``public_key``'s signature over ``message``."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


__all__ = ["PUBLIC_KEY_BYTES", "SIGNATURE_BYTES", "DeviceKey", "verify"]
