"""Megolm group sessions: a thin wrapper around vodozemac.

A sending device keeps one ``OutboundGroupSession`` per group; every member device that
received its session key (over Olm, see ``strongroom.proto.RoomKey``) keeps an
``InboundGroupSession``.  One ciphertext serves every member, so the server stores it once.

What Megolm gives, and what it does not (the rest is the client's job):

- a session key taken at ratchet index *n* opens messages *n* and later, never earlier
  ones: a device that joins late cannot read what was sent before it got the key;
- every message is signed by the session's own Ed25519 key, so only a holder of the
  outbound session can produce messages in it; *who* holds it is known only from the
  certified device that shared the key over Olm;
- messages are accepted only in vodozemac's canonical encoding (``_message``), so one
  message has one ciphertext;
- no forward secrecy inside a session (anyone with the key at index *n* reads all later
  messages) and no replay protection (a message decrypts as often as it is presented):
  hence rotation, and the client's check of (session, index) and message ids.

vodozemac exceptions enter Strongroom here and leave as ``CryptoError`` subclasses.
Ciphertexts cross this module as raw bytes, keys as vodozemac's base64 strings.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec
import vodozemac

from strongroom.errors import CryptoError, DecryptionError

__all__ = [
    "GroupDecrypted",
    "InboundGroupSession",
    "OutboundGroupSession",
    "megolm_message_index",
]


class GroupDecrypted(NamedTuple):
    """A decrypted Megolm message and its index in the session's ratchet."""

    plaintext: bytes
    message_index: int


class _StoredOutbound(msgspec.Struct, frozen=True):
    # vodozemac's pickle has no room for the creation time, which the rotation policy
    # needs; it rides beside the pickle (the local store is encrypted as a whole).
    created_at: int
    pickle: str


_stored_decoder = msgspec.json.Decoder(_StoredOutbound)


def _message(ciphertext: bytes) -> vodozemac.MegolmMessage:
    try:
        message = vodozemac.MegolmMessage.from_bytes(ciphertext)
    except vodozemac.DecodeException as exc:
        raise DecryptionError("not a Megolm message") from exc
    # vodozemac checks the MAC and signature over its own re-encoding of the parsed
    # message, so other encodings of the same message (an unknown protobuf field where a
    # default-valued index was) would decrypt too.  The meaning is unchanged, but the
    # server could then vary the bytes of one message at will; only canonical bytes pass.
    if message.to_bytes() != ciphertext:
        raise DecryptionError("not a canonically encoded Megolm message")
    return message


def megolm_message_index(ciphertext: bytes) -> int:
    """The ratchet index a Megolm message claims, without decrypting it.

    Only a claim until ``InboundGroupSession.decrypt`` verifies the message.  Raises
    ``DecryptionError`` if the bytes are not a Megolm message.
    """
    return _message(ciphertext).message_index()


class OutboundGroupSession:
    """The sending half: this device's session for one group."""

    def __init__(self, session: vodozemac.GroupSession, created_at: int) -> None:
        self._session = session
        self.created_at = created_at

    @classmethod
    def create(cls, now: int) -> OutboundGroupSession:
        """A fresh session; ``now`` (ms) is kept for the rotation policy."""
        return cls(vodozemac.GroupSession(), now)

    @property
    def session_id(self) -> str:
        return self._session.session_id

    @property
    def message_index(self) -> int:
        """The index the next message will have (how many messages were encrypted)."""
        return self._session.message_index

    @property
    def session_key(self) -> str:
        """The key at the *current* index: whoever gets it reads from here on, not before."""
        return self._session.session_key.to_base64()

    def encrypt(self, plaintext: bytes) -> bytes:
        """Encrypt one message for every holder of the session key; advances the ratchet."""
        return self._session.encrypt(plaintext).to_bytes()

    def pickle(self, key: bytes) -> str:
        """The session, encrypted under ``key`` (32 bytes), with its creation time.

        Raises ``CryptoError`` if ``key`` is not 32 bytes.
        """
        try:
            pickled = self._session.pickle(key)
        except vodozemac.PickleException as exc:
            raise CryptoError("a pickle key is 32 bytes") from exc
        return msgspec.json.encode(_StoredOutbound(self.created_at, pickled)).decode()

    @classmethod
    def from_pickle(cls, pickle: str, key: bytes) -> OutboundGroupSession:
        """Raises ``DecryptionError`` if ``pickle`` is malformed or ``key`` is not its key."""
        try:
            stored = _stored_decoder.decode(pickle)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise DecryptionError("stored Megolm session is malformed") from exc
        try:
            session = vodozemac.GroupSession.from_pickle(stored.pickle, key)
        except vodozemac.PickleException as exc:
            raise DecryptionError(
                "stored Megolm session does not open with this key"
            ) from exc
        return cls(session, stored.created_at)


class InboundGroupSession:
    """The receiving half: another device's session for one group, from its session key."""

    def __init__(self, session: vodozemac.InboundGroupSession) -> None:
        self._session = session

    @classmethod
    def from_session_key(cls, session_key: str) -> InboundGroupSession:
        """From the key a ``RoomKey`` carries.  Raises ``CryptoError`` if it is malformed."""
        try:
            key = vodozemac.SessionKey(session_key)
            return cls(vodozemac.InboundGroupSession(key))
        except (vodozemac.SessionKeyDecodeException, vodozemac.KeyException) as exc:
            raise CryptoError("malformed Megolm session key") from exc

    @classmethod
    def from_export(cls, exported: str) -> InboundGroupSession:
        """From ``export_at`` output (history shared by one of the user's own devices).

        Raises ``CryptoError`` if it is malformed.
        """
        try:
            key = vodozemac.ExportedSessionKey(exported)
            return cls(vodozemac.InboundGroupSession.import_session(key))
        except (vodozemac.SessionKeyDecodeException, vodozemac.KeyException) as exc:
            raise CryptoError("malformed exported Megolm session key") from exc

    @property
    def session_id(self) -> str:
        return self._session.session_id

    @property
    def first_known_index(self) -> int:
        """The earliest message index this session can open."""
        return self._session.first_known_index

    def decrypt(self, ciphertext: bytes) -> GroupDecrypted:
        """Verify and decrypt one message of this session.

        Raises ``DecryptionError`` if the message is corrupt, signed by another session,
        or older than ``first_known_index``.  A replayed message decrypts again: callers
        check ``(session_id, message_index)`` themselves.
        """
        message = _message(ciphertext)
        try:
            decrypted = self._session.decrypt(message)
        except vodozemac.MegolmDecryptionException as exc:
            raise DecryptionError(
                "Megolm message does not decrypt in this session"
            ) from exc
        return GroupDecrypted(decrypted.plaintext, decrypted.message_index)

    def export_at(self, index: int) -> str | None:
        """The session from ``index`` on, or ``None`` if ``index`` is before what we know."""
        if not 0 <= index < 2**32:  # Megolm indices are 32-bit
            return None
        exported = self._session.export_at(index)
        return None if exported is None else exported.to_base64()

    def pickle(self, key: bytes) -> str:
        """Raises ``CryptoError`` if ``key`` is not 32 bytes."""
        try:
            return self._session.pickle(key)
        except vodozemac.PickleException as exc:
            raise CryptoError("a pickle key is 32 bytes") from exc

    @classmethod
    def from_pickle(cls, pickle: str, key: bytes) -> InboundGroupSession:
        """Raises ``DecryptionError`` if ``pickle`` does not open with ``key``."""
        try:
            return cls(vodozemac.InboundGroupSession.from_pickle(pickle, key))
        except vodozemac.PickleException as exc:
            raise DecryptionError(
                "stored Megolm session does not open with this key"
            ) from exc
