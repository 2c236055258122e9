"""Stream frames: what travels on a device's WebSocket, as MessagePack.

Every frame is a frozen, tagged msgspec ``Struct``; the tag is the ``t`` field.  Schema
evolution rules, from version 1 on: new fields get defaults; a released field's type never
changes; a tag is never reused.  Decoding is strict: unknown tags, wrong types and
oversized frames raise ``RemoteProtocolError`` with a wire code, and nothing else escapes.
"""

from __future__ import annotations

from typing import Annotated, Literal, cast

import msgspec

from strongroom.errors import LocalProtocolError, RemoteProtocolError

from ._codes import (
    DECODE_ERRORS,
    MAX_BLOBS,
    MAX_BODY_BYTES,
    MAX_COPIES,
    MAX_FANOUT,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
)
from ._objects import Signed

__all__ = [
    "Accepted",
    "Ack",
    "Challenge",
    "ClientFrame",
    "Control",
    "Copy",
    "Deliver",
    "Enforcing",
    "Error",
    "Hello",
    "Ping",
    "Pong",
    "Send",
    "SendShared",
    "ServerFrame",
    "Welcome",
    "Wiped",
    "decode_client_frame",
    "decode_server_frame",
    "encode_frame",
]

EnvelopeId = Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
DeviceId = Annotated[str, msgspec.Meta(pattern=r"^[a-z2-7]{16}$")]
Seq = Annotated[int, msgspec.Meta(ge=1)]
Body = Annotated[bytes, msgspec.Meta(min_length=1, max_length=MAX_BODY_BYTES)]
BlobId = Annotated[str, msgspec.Meta(pattern=r"^[a-z2-7]{26}$")]
Blobs = Annotated[list[BlobId], msgspec.Meta(max_length=MAX_BLOBS)]


class _Frame(msgspec.Struct, frozen=True, tag_field="t", forbid_unknown_fields=False):
    pass


# --- server -> client -------------------------------------------------------------


class Challenge(_Frame, tag="challenge", frozen=True):
    """First frame on every connection: sign ``nonce`` to prove you hold the device key."""

    nonce: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    server: str
    version: int = PROTOCOL_VERSION


class Welcome(_Frame, tag="welcome", frozen=True):
    """The device is authenticated; deliveries follow."""

    device_id: DeviceId
    user: str
    otk_count: int
    server_time: int
    pending: int = 0


class Deliver(_Frame, tag="deliver", frozen=True):
    """One envelope for this device; ``seq`` increases by one per envelope for the device."""

    seq: Seq
    id: EnvelopeId
    sender: DeviceId
    at: int
    body: Body
    #: The body is the one ciphertext every member got (``SendShared``): Megolm, not Olm.
    shared: bool = False


class Accepted(_Frame, tag="accepted", frozen=True):
    """The send ``id`` is committed; ``skipped`` names copies for unknown or revoked devices."""

    id: EnvelopeId
    at: int
    skipped: list[str] = []


class Error(_Frame, tag="error", frozen=True):
    """A refusal.  ``ref`` is the send id it concerns; without ``ref`` the connection ends."""

    code: str
    detail: str
    ref: bytes | None = None


class Control(_Frame, tag="control", frozen=True):
    """An order from IT, signed by the authority: ``kind`` is ``policy`` or ``wipe``.

    The server sends the policy in force right after ``Welcome`` and again whenever it
    changes, and a pending wipe order right after ``Welcome``.
    """

    kind: Literal["policy", "wipe"]
    item: Signed


class Pong(_Frame, tag="pong", frozen=True):
    n: int


# --- client -> server -------------------------------------------------------------


class Hello(_Frame, tag="hello", frozen=True):
    """Answer to ``Challenge``: ``signature`` by the device's Ed25519 key (see crypto)."""

    device_id: DeviceId
    signature: Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]
    client_version: str = ""
    version: int = PROTOCOL_VERSION


class Copy(msgspec.Struct, frozen=True):
    """The ciphertext for one recipient device."""

    device: DeviceId
    body: Body


class Send(_Frame, tag="send", frozen=True):
    """One message, encrypted separately for each recipient device; ``id`` is client-chosen.

    ``expires_at`` (ms): the server drops copies not fetched by then.  ``blobs``: the
    attachments the message refers to, kept while any copy waits.
    """

    id: EnvelopeId
    copies: Annotated[list[Copy], msgspec.Meta(min_length=1, max_length=MAX_COPIES)]
    expires_at: int | None = None
    blobs: Blobs = []


class SendShared(_Frame, tag="send-shared", frozen=True):
    """One ciphertext for many devices (a group message): stored once, fanned out."""

    id: EnvelopeId
    devices: Annotated[
        list[DeviceId], msgspec.Meta(min_length=1, max_length=MAX_FANOUT)
    ]
    body: Body
    expires_at: int | None = None
    blobs: Blobs = []


class Ack(_Frame, tag="ack", frozen=True):
    """Cumulative: every delivery up to and including ``upto`` is safely stored."""

    upto: Seq


class Ping(_Frame, tag="ping", frozen=True):
    n: int


class Enforcing(_Frame, tag="enforcing", frozen=True):
    """The device now enforces the policy of this version (its answer to ``Control``)."""

    policy_version: Annotated[int, msgspec.Meta(ge=1)]


class Wiped(_Frame, tag="wiped", frozen=True):
    """The device verified the wipe order of ``ordered_at`` and is deleting everything."""

    ordered_at: int


ServerFrame = Challenge | Welcome | Deliver | Accepted | Error | Pong | Control
ClientFrame = Hello | Send | SendShared | Ack | Ping | Enforcing | Wiped

_encoder = msgspec.msgpack.Encoder()
_client_decoder = msgspec.msgpack.Decoder(ClientFrame)
_server_decoder = msgspec.msgpack.Decoder(ServerFrame)


def encode_frame(frame: ServerFrame | ClientFrame) -> bytes:
    """Encode a frame.  Raises ``LocalProtocolError`` if it would exceed the frame limit."""
    data = _encoder.encode(frame)
    if len(data) > MAX_FRAME_BYTES:
        raise LocalProtocolError(
            f"frame of {len(data)} bytes exceeds the {MAX_FRAME_BYTES} byte limit",
            "frame_too_large",
        )
    return data


def _check_size(data: bytes) -> None:
    if len(data) > MAX_FRAME_BYTES:
        raise RemoteProtocolError(
            f"frame of {len(data)} bytes exceeds the {MAX_FRAME_BYTES} byte limit",
            "frame_too_large",
        )


def decode_client_frame(data: bytes) -> ClientFrame:
    """Decode a frame a client sent.  Raises ``RemoteProtocolError`` and nothing else."""
    _check_size(data)
    try:
        return cast(ClientFrame, _client_decoder.decode(data))
    except DECODE_ERRORS as exc:
        raise RemoteProtocolError(f"malformed frame: {exc}", "bad_frame") from exc


def decode_server_frame(data: bytes) -> ServerFrame:
    """Decode a frame the server sent.  Raises ``RemoteProtocolError`` and nothing else."""
    _check_size(data)
    try:
        return cast(ServerFrame, _server_decoder.decode(data))
    except DECODE_ERRORS as exc:
        raise RemoteProtocolError(f"malformed frame: {exc}", "bad_frame") from exc
