"""Device identity and Olm sessions: a thin wrapper around vodozemac.

vodozemac exceptions enter Strongroom here and nowhere else; they leave as ``CryptoError``
subclasses.  Keys cross this module as vodozemac's unpadded base64 strings, signatures as
64 raw bytes.

Device ids are derived from the Ed25519 key (base32 of SHA-256, first 80 bits), so the
server cannot give two different keys the same id, and an id names exactly one key.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import vodozemac
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from strongroom import proto
from strongroom.errors import CryptoError, DecryptionError, SignatureError

from ._encoding import b64decode

__all__ = [
    "DeviceAccount",
    "OlmSession",
    "device_id_for",
    "verify_ed25519",
    "verify_one_time_key",
]

PICKLE_KEY_BYTES = 32


def device_id_for(ed25519: str) -> str:
    """The device id that belongs to an Ed25519 public key (vodozemac base64)."""
    digest = hashlib.sha256(b64decode(ed25519)).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:16]


def verify_ed25519(ed25519: str, data: bytes, signature: bytes) -> None:
    """Raises ``SignatureError`` unless ``signature`` is ``ed25519``'s over ``data``."""
    try:
        raw = b64decode(ed25519)
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, data)
    except (InvalidSignature, ValueError, CryptoError) as exc:
        raise SignatureError("device signature does not verify") from exc


def verify_one_time_key(device_id: str, ed25519: str, otk: proto.OneTimeKey) -> None:
    """Raises ``SignatureError`` unless the device signed this one-time key."""
    verify_ed25519(
        ed25519,
        proto.one_time_key_signing_input(device_id, otk.key_id, otk.key, otk.fallback),
        otk.signature,
    )


def _curve(key: str) -> vodozemac.Curve25519PublicKey:
    try:
        return vodozemac.Curve25519PublicKey.from_base64(key)
    except vodozemac.KeyException as exc:
        raise CryptoError("malformed Curve25519 key") from exc


def _message(message_type: int, ciphertext: bytes) -> vodozemac.AnyOlmMessage:
    """Parse an Olm message, accepting only vodozemac's canonical encoding of it.

    vodozemac checks the MAC over its own re-encoding of what it parsed, so other
    encodings of one message would decrypt too; the server could then vary the bytes of a
    message at will.  Raises ``DecodeException`` or ``DecryptionError``.
    """
    message = vodozemac.AnyOlmMessage.from_parts(message_type, ciphertext)
    if message.to_parts() != (message_type, ciphertext):
        raise DecryptionError("not a canonically encoded Olm message")
    return message


class OlmSession:
    """One Olm session with one other device."""

    def __init__(self, session: vodozemac.Session) -> None:
        self._session = session

    @property
    def session_id(self) -> str:
        return self._session.session_id

    def encrypt(self, plaintext: bytes) -> tuple[int, bytes]:
        """Returns (message type, ciphertext); type 0 is a pre-key message."""
        return self._session.encrypt(plaintext).to_parts()

    def matches(self, message_type: int, ciphertext: bytes) -> bool:
        """True if a pre-key message was made for this session."""
        if message_type != 0:
            return False
        try:
            pre_key = _message(0, ciphertext).to_pre_key()
        except (vodozemac.DecodeException, DecryptionError):
            return False
        return pre_key is not None and self._session.session_matches(pre_key)

    def decrypt(self, message_type: int, ciphertext: bytes) -> bytes:
        """Raises ``DecryptionError`` if the message is corrupt, replayed or not for us."""
        try:
            message = _message(message_type, ciphertext)
            return self._session.decrypt(message)
        except (vodozemac.DecodeException, vodozemac.OlmDecryptionException) as exc:
            raise DecryptionError(
                "Olm message does not decrypt in this session"
            ) from exc

    def pickle(self, key: bytes) -> str:
        return self._session.pickle(key)

    @classmethod
    def from_pickle(cls, pickle: str, key: bytes) -> OlmSession:
        try:
            return cls(vodozemac.Session.from_pickle(pickle, key))
        except vodozemac.PickleException as exc:
            raise DecryptionError(
                "stored Olm session does not open with this key"
            ) from exc


class DeviceAccount:
    """A device's long-term identity: Ed25519 (signing) and Curve25519 (Olm) keys."""

    def __init__(self, account: vodozemac.Account) -> None:
        self._account = account

    @classmethod
    def generate(cls) -> DeviceAccount:
        return cls(vodozemac.Account())

    @classmethod
    def from_pickle(cls, pickle: str, key: bytes) -> DeviceAccount:
        try:
            return cls(vodozemac.Account.from_pickle(pickle, key))
        except vodozemac.PickleException as exc:
            raise DecryptionError(
                "stored device account does not open with this key"
            ) from exc

    def pickle(self, key: bytes) -> str:
        return self._account.pickle(key)

    @property
    def ed25519(self) -> str:
        return self._account.ed25519_key.to_base64()

    @property
    def curve25519(self) -> str:
        return self._account.curve25519_key.to_base64()

    @property
    def device_id(self) -> str:
        return device_id_for(self.ed25519)

    def sign(self, data: bytes) -> bytes:
        return b64decode(self._account.sign(data).to_base64())

    def new_one_time_keys(self, count: int) -> list[proto.OneTimeKey]:
        """Generate ``count`` one-time keys, signed, and mark them published."""
        # vodozemac lists only unpublished keys, and we publish every batch we make.
        self._account.generate_one_time_keys(count)
        fresh = dict(self._account.one_time_keys)
        self._account.mark_keys_as_published()
        return [
            self._signed_key(key_id, key.to_base64(), False)
            for key_id, key in fresh.items()
        ]

    def new_fallback_key(self) -> proto.OneTimeKey:
        """A fresh fallback key, used by senders when the one-time keys run out."""
        # The fallback-key API is missing from vodozemac's type stubs, not from the binding.
        account: Any = self._account
        account.generate_fallback_key()
        fallback: dict[str, vodozemac.Curve25519PublicKey] = account.fallback_key
        ((key_id, key),) = fallback.items()
        self._account.mark_keys_as_published()
        return self._signed_key(key_id, key.to_base64(), True)

    def _signed_key(self, key_id: str, key: str, fallback: bool) -> proto.OneTimeKey:
        signature = self.sign(
            proto.one_time_key_signing_input(self.device_id, key_id, key, fallback)
        )
        return proto.OneTimeKey(
            key_id=key_id, key=key, signature=signature, fallback=fallback
        )

    def create_outbound(self, their_curve: str, their_one_time_key: str) -> OlmSession:
        try:
            session = self._account.create_outbound_session(
                _curve(their_curve), _curve(their_one_time_key)
            )
        except vodozemac.SessionCreationException as exc:
            raise CryptoError("could not create an Olm session") from exc
        return OlmSession(session)

    def create_inbound(
        self, their_curve: str, ciphertext: bytes
    ) -> tuple[OlmSession, bytes]:
        """Open a pre-key message from a device we have no session with.

        Raises ``DecryptionError`` if it is not a valid pre-key message for our keys (for
        example because its one-time key was already used: a replay).
        """
        try:
            message = _message(0, ciphertext).to_pre_key()
            if message is None:
                raise DecryptionError("not a pre-key message")
            session, plaintext = self._account.create_inbound_session(
                _curve(their_curve), message
            )
        except (
            vodozemac.DecodeException,
            vodozemac.SessionCreationException,
            vodozemac.OlmDecryptionException,
            vodozemac.KeyException,
        ) as exc:
            raise DecryptionError("pre-key message does not open") from exc
        return OlmSession(session), plaintext
