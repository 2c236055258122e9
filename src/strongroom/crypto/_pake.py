"""Activation: SPAKE2 on the activation code, then an AEAD channel keyed by it.

Rules (the activation protocol, both ends; the server finishes SPAKE2 in the first HTTP
request and keeps only the derived key, briefly, until the second):

1. The code never travels.  Both sides feed SPAKE2 (python-spake2, Ed25519 group,
   asymmetric roles, identities ``strongroom-device:<user>`` and ``strongroom-server``)
   with ``code_password(code)``; the device sends ``start()``'s message, the server answers
   with its own, and both derive the same key only if they used the same code.
2. The device proves first.  It sends ``confirm`` (an HKDF output of the SPAKE2 key) with
   its sealed registration.  A wrong ``confirm`` is one wrong try, counted by the server;
   the server never sends anything derived from the key before the device's proof checks,
   so an impostor device learns nothing it could test guesses against offline.
3. Everything after the proof is sealed with ChaCha20-Poly1305 under direction-specific
   HKDF keys; a server that did not know the code cannot produce a grant that opens.
4. The device signs the transcript id with its Ed25519 key inside the registration, so the
   key the server certifies is the key of the device that knew the code.

Guarantees: an eavesdropper learns nothing about the code; an active attacker gets one
online guess per protocol run (three runs burn the code); the grant (authority key and
certificate) is authentic if it opens.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

import spake2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from strongroom.errors import ActivationError

__all__ = [
    "CODE_ALPHABET",
    "ActivationClient",
    "ActivationKeys",
    "ActivationServer",
    "code_password",
    "generate_code",
    "normalise_code",
]

# Crockford's base32: no I, L, O, U, so codes read aloud or off paper survive.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_GROUPS = 3
CODE_GROUP_LEN = 4  # 12 symbols x 5 bits = 60 bits
_ID_SERVER = b"strongroom-server"
_NONCE = 12


def generate_code() -> str:
    """A fresh activation code, like ``7K2M-QX9D-4HRT`` (60 bits)."""
    symbols = "".join(
        secrets.choice(CODE_ALPHABET) for _ in range(CODE_GROUPS * CODE_GROUP_LEN)
    )
    return "-".join(
        symbols[i : i + CODE_GROUP_LEN] for i in range(0, len(symbols), CODE_GROUP_LEN)
    )


def normalise_code(code: str) -> str:
    """Undo what people do to codes: case, dashes, spaces, O for 0, I and L for 1.

    Raises ``ActivationError`` if what is left cannot be a code.
    """
    if not code.isascii():  # "ß".upper() is "SS": only ASCII may become a code
        raise ActivationError(
            "that does not look like an activation code (XXXX-XXXX-XXXX)"
        )
    cleaned = code.upper().replace("-", "").replace(" ", "")
    cleaned = cleaned.replace("O", "0").replace("I", "1").replace("L", "1")
    if len(cleaned) != CODE_GROUPS * CODE_GROUP_LEN or any(
        c not in CODE_ALPHABET for c in cleaned
    ):
        raise ActivationError(
            "that does not look like an activation code (XXXX-XXXX-XXXX)"
        )
    return cleaned


def code_password(code: str) -> bytes:
    """The SPAKE2 password for a code.  The server stores this, never the code as typed."""
    return hashlib.sha256(
        b"strongroom/v1/activation-code\x00" + normalise_code(code).encode()
    ).digest()


def _hkdf(key: bytes, label: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"strongroom/v1/activation/" + label,
    ).derive(key)


class _Keys:
    def __init__(self, shared: bytes) -> None:
        self.confirm = _hkdf(shared, b"device-confirm")
        self.transcript = _hkdf(shared, b"transcript-id")
        self.device_to_server = ChaCha20Poly1305(_hkdf(shared, b"device-to-server"))
        self.server_to_device = ChaCha20Poly1305(_hkdf(shared, b"server-to-device"))


def _seal(aead: ChaCha20Poly1305, plaintext: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + aead.encrypt(nonce, plaintext, b"strongroom/v1/activation")


def _open(aead: ChaCha20Poly1305, sealed: bytes) -> bytes:
    try:
        return aead.decrypt(
            sealed[:_NONCE], sealed[_NONCE:], b"strongroom/v1/activation"
        )
    except (InvalidTag, ValueError) as exc:
        raise ActivationError("activation message failed authentication") from exc


def _device_id_bytes(user: str) -> bytes:
    return b"strongroom-device:" + user.encode()


class ActivationClient:
    """The device's side.  ``start`` -> send; ``finish(reply)``; then seal and open."""

    def __init__(self, user: str, code: str) -> None:
        self._spake = spake2.SPAKE2_A(
            code_password(code), idA=_device_id_bytes(user), idB=_ID_SERVER
        )
        self._keys: _Keys | None = None

    def start(self) -> bytes:
        message: bytes = self._spake.start()
        return message

    def finish(self, server_message: bytes) -> None:
        """Raises ``ActivationError`` if the server's message is malformed."""
        try:
            self._keys = _Keys(self._spake.finish(server_message))
        # spake2 raises its own errors, ValueError, AssertionError and point-decoding
        # errors (NotOnCurve) that share no base class: any failure here is bad input.
        except Exception as exc:
            raise ActivationError(
                "the server's activation message is malformed"
            ) from exc

    @property
    def _k(self) -> _Keys:
        if self._keys is None:
            raise ActivationError("activation used before the key exchange finished")
        return self._keys

    @property
    def confirm(self) -> bytes:
        return self._k.confirm

    @property
    def transcript_id(self) -> bytes:
        return self._k.transcript

    def seal(self, registration: bytes) -> bytes:
        return _seal(self._k.device_to_server, registration)

    def open_grant(self, sealed: bytes) -> bytes:
        """Raises ``ActivationError`` if the grant was not made with the same code."""
        return _open(self._k.server_to_device, sealed)


class ActivationServer:
    """The server's side: both SPAKE2 messages are handled in the first request.

    The derived key (``shared_key``) is kept by the server until the device's second request
    (at most a few minutes) and rebuilt into ``ActivationKeys`` then.
    """

    def __init__(self, user: str, password: bytes) -> None:
        self._spake = spake2.SPAKE2_B(
            password, idA=_device_id_bytes(user), idB=_ID_SERVER
        )
        self._shared: bytes | None = None

    def start(self) -> bytes:
        message: bytes = self._spake.start()
        return message

    def finish(self, device_message: bytes) -> None:
        """Raises ``ActivationError`` if the device's message is malformed."""
        try:
            self._shared = self._spake.finish(device_message)
        # spake2 raises its own errors, ValueError, AssertionError and point-decoding
        # errors (NotOnCurve) that share no base class: any failure here is bad input.
        except Exception as exc:
            raise ActivationError(
                "the device's activation message is malformed"
            ) from exc

    @property
    def shared_key(self) -> bytes:
        if self._shared is None:
            raise ActivationError("activation used before the key exchange finished")
        return self._shared


class ActivationKeys:
    """The server's keys for one activation, from the SPAKE2 shared key."""

    def __init__(self, shared: bytes) -> None:
        self._k = _Keys(shared)

    def check_confirm(self, confirm: bytes) -> bool:
        """True if the device derived the same key, that is, knew the code."""
        return hmac.compare_digest(confirm, self._k.confirm)

    @property
    def transcript_id(self) -> bytes:
        return self._k.transcript

    def open_registration(self, sealed: bytes) -> bytes:
        return _open(self._k.device_to_server, sealed)

    def seal_grant(self, grant: bytes) -> bytes:
        return _seal(self._k.server_to_device, grant)
