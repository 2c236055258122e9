"""Signed objects and end-to-end payloads.

Signatures always cover *bytes*, never a re-encoding of a structure: a signed object travels
as ``Signed(body, signature)`` where ``body`` is the MessagePack encoding of a tagged struct
and the signature covers ``signing_input(domain, body)``.  The verifier checks the signature
on the exact bytes it received and only then decodes them, so canonicalisation bugs cannot
turn one signed meaning into another.  Each kind of object has its own domain string, so a
signature made for one purpose can never be replayed as another.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, TypeVar

import msgspec

from strongroom.errors import RemoteProtocolError

from ._codes import DECODE_ERRORS, MAX_BODY_BYTES

__all__ = [
    "DOMAIN_CERTIFICATE",
    "DOMAIN_HELLO",
    "DOMAIN_HTTP",
    "DOMAIN_ONE_TIME_KEY",
    "DOMAIN_REGISTRATION",
    "DOMAIN_REVOCATION",
    "DeviceCertificate",
    "OlmEnvelope",
    "OneTimeKey",
    "Revocation",
    "Signed",
    "decode_certificate",
    "decode_msgpack",
    "decode_olm_envelope",
    "decode_revocation",
    "encode",
    "hello_signing_input",
    "http_signing_input",
    "one_time_key_signing_input",
    "signing_input",
]

DOMAIN_CERTIFICATE = b"strongroom/v1/device-certificate"
DOMAIN_REVOCATION = b"strongroom/v1/device-revocation"
DOMAIN_HELLO = b"strongroom/v1/stream-hello"
DOMAIN_HTTP = b"strongroom/v1/http-request"
DOMAIN_ONE_TIME_KEY = b"strongroom/v1/one-time-key"
DOMAIN_REGISTRATION = b"strongroom/v1/activation-registration"

EnvelopeId = Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
DeviceId = Annotated[str, msgspec.Meta(pattern=r"^[a-z2-7]{16}$")]
UserId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
Key = Annotated[str, msgspec.Meta(min_length=43, max_length=44)]


def signing_input(domain: bytes, body: bytes) -> bytes:
    """The bytes a signature covers: domain, a zero byte, then the body."""
    return domain + b"\x00" + body


def hello_signing_input(nonce: bytes, device_id: str, server: str) -> bytes:
    """What a device signs to answer a stream ``Challenge``."""
    return signing_input(
        DOMAIN_HELLO,
        b"\x00".join((nonce, device_id.encode(), server.encode())),
    )


def one_time_key_signing_input(
    device_id: str, key_id: str, key: str, fallback: bool
) -> bytes:
    """What a device signs over each one-time key it publishes, so the server cannot swap it."""
    return signing_input(
        DOMAIN_ONE_TIME_KEY,
        b"\x00".join(
            (
                device_id.encode(),
                key_id.encode(),
                key.encode(),
                b"F" if fallback else b"O",
            )
        ),
    )


def http_signing_input(
    method: str, target: str, device_id: str, stamp: str, nonce: str, body: bytes
) -> bytes:
    """What a device signs for an HTTP request (see docs/protocol.md)."""

    return signing_input(
        DOMAIN_HTTP,
        "\n".join(
            (
                method.upper(),
                target,
                device_id,
                stamp,
                nonce,
                hashlib.sha256(body).hexdigest(),
            )
        ).encode(),
    )


class Signed(msgspec.Struct, frozen=True):
    """A body and a signature over ``signing_input(domain, body)``."""

    body: bytes
    signature: Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]


class DeviceCertificate(msgspec.Struct, frozen=True, tag="device-certificate"):
    """The authority vouches: this user's device has these keys."""

    org: str
    user: UserId
    device_id: DeviceId
    ed25519: Key
    curve25519: Key
    name: str
    issued_at: int


class Revocation(msgspec.Struct, frozen=True, tag="device-revocation"):
    """The authority withdraws a device: nobody may encrypt to it or believe it again."""

    org: str
    device_id: DeviceId
    revoked_at: int
    reason: str = ""


class OneTimeKey(msgspec.Struct, frozen=True):
    """A Curve25519 one-time (or fallback) key, signed by its device's Ed25519 key."""

    key_id: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    key: Key
    signature: Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]
    fallback: bool = False


class OlmEnvelope(msgspec.Struct, frozen=True, array_like=True):
    """The body of a ``Copy``: an Olm message and the sender's Curve25519 identity key."""

    sender_key: Key
    type: Annotated[int, msgspec.Meta(ge=0, le=1)]
    ciphertext: Annotated[bytes, msgspec.Meta(min_length=1, max_length=MAX_BODY_BYTES)]


T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()


def encode(obj: msgspec.Struct) -> bytes:
    """MessagePack bytes of a struct (fields in declaration order, so stable)."""
    return _encoder.encode(obj)


def _decoder_for(kind: type[T]) -> msgspec.msgpack.Decoder[T]:
    return msgspec.msgpack.Decoder(kind)


_cert_decoder = _decoder_for(DeviceCertificate)
_revocation_decoder = _decoder_for(Revocation)
_olm_decoder = _decoder_for(OlmEnvelope)


def _decode(decoder: msgspec.msgpack.Decoder[T], data: bytes, what: str) -> T:
    try:
        return decoder.decode(data)
    except DECODE_ERRORS as exc:
        raise RemoteProtocolError(f"malformed {what}: {exc}", "bad_request") from exc


def decode_msgpack(data: bytes, kind: type[T], what: str = "message") -> T:
    """Decode MessagePack into ``kind`` strictly.  Raises ``RemoteProtocolError`` only."""
    return _decode(msgspec.msgpack.Decoder(kind), data, what)


def decode_certificate(data: bytes) -> DeviceCertificate:
    return _decode(_cert_decoder, data, "device certificate")


def decode_revocation(data: bytes) -> Revocation:
    return _decode(_revocation_decoder, data, "revocation")


def decode_olm_envelope(data: bytes) -> OlmEnvelope:
    return _decode(_olm_decoder, data, "Olm envelope")
