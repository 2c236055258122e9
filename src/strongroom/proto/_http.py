"""HTTP request and response bodies (JSON; bytes travel as base64).

Every body that crosses the HTTP boundary is one of these structs, decoded strictly with
``decode_json``; handlers never see a ``dict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, TypeVar

import msgspec

from strongroom.errors import RemoteProtocolError

from ._codes import DECODE_ERRORS
from ._objects import DeviceId, OneTimeKey, Signed, UserId

__all__ = [
    "ActivationFinish",
    "ActivationFinished",
    "ActivationGrant",
    "ActivationRegistration",
    "ActivationStart",
    "ActivationStarted",
    "AuthorityInfo",
    "ClaimRequest",
    "ClaimResponse",
    "CodeIssued",
    "CodeRequest",
    "DeviceEntry",
    "DeviceInfo",
    "ErrorBody",
    "GroupChanges",
    "GroupPost",
    "KeyCount",
    "UploadKeys",
    "UserAdd",
    "UserDevices",
    "UserInfo",
    "decode_json",
    "encode_json",
]

T = TypeVar("T")

PakeMessage = Annotated[bytes, msgspec.Meta(min_length=33, max_length=33)]
SessionId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{22,64}$")]


class ErrorBody(msgspec.Struct, frozen=True):
    code: str
    detail: str
    tries_left: int | None = None


# --- activation --------------------------------------------------------------------


class ActivationStart(msgspec.Struct, frozen=True):
    """The device's first SPAKE2 message.  The code itself never travels."""

    user: UserId
    pake: PakeMessage


class ActivationStarted(msgspec.Struct, frozen=True):
    session: SessionId
    pake: PakeMessage


class ActivationFinish(msgspec.Struct, frozen=True):
    """Proof that the device derived the same key (``confirm``) and its sealed registration."""

    session: SessionId
    confirm: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    sealed: Annotated[bytes, msgspec.Meta(min_length=28, max_length=64 * 1024)]


class ActivationFinished(msgspec.Struct, frozen=True):
    """The sealed ``ActivationGrant``."""

    sealed: bytes


class ActivationRegistration(msgspec.Struct, frozen=True):
    """Sent sealed under the PAKE key: the device's identity keys and first one-time keys.

    ``proof`` is the device's Ed25519 signature over the transcript id (an HKDF output of the
    PAKE key) in the registration domain, so the server
    knows the device holds the private key it asks to have certified.
    """

    ed25519: str
    curve25519: str
    name: Annotated[str, msgspec.Meta(max_length=64)]
    one_time_keys: Annotated[list[OneTimeKey], msgspec.Meta(max_length=200)]
    fallback: OneTimeKey | None
    proof: Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]
    client_version: str = ""


class ActivationGrant(msgspec.Struct, frozen=True):
    """Sent sealed under the PAKE key: the authority key to pin and the device's certificate."""

    org: str
    authority_key: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    certificate: Signed


# --- key directory -------------------------------------------------------------------


class DeviceEntry(msgspec.Struct, frozen=True):
    certificate: Signed
    revocation: Signed | None = None


class UserDevices(msgspec.Struct, frozen=True):
    user: str
    devices: list[DeviceEntry]
    #: The authority's signed ``UserDisabled`` record, when IT disabled this user.
    disabled: Signed | None = None


class ClaimRequest(msgspec.Struct, frozen=True):
    devices: Annotated[list[DeviceId], msgspec.Meta(min_length=1, max_length=256)]


class ClaimResponse(msgspec.Struct, frozen=True):
    keys: dict[str, OneTimeKey]


class UploadKeys(msgspec.Struct, frozen=True):
    one_time_keys: Annotated[list[OneTimeKey], msgspec.Meta(max_length=200)]
    fallback: OneTimeKey | None = None


class KeyCount(msgspec.Struct, frozen=True):
    count: int


class AuthorityInfo(msgspec.Struct, frozen=True):
    org: str
    authority_key: bytes
    version: int


# --- admin ----------------------------------------------------------------------------


class UserAdd(msgspec.Struct, frozen=True):
    user: UserId
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""


class UserInfo(msgspec.Struct, frozen=True):
    user: str
    name: str
    created_at: str
    devices: int
    disabled_at: str | None = None


class CodeRequest(msgspec.Struct, frozen=True):
    #: None: the server's configured default (``limits.code_ttl_seconds``, 48 h).
    ttl_seconds: Annotated[int, msgspec.Meta(ge=1, le=30 * 24 * 3600)] | None = None


class CodeIssued(msgspec.Struct, frozen=True):
    user: str
    code: str
    expires_at: str


class DeviceInfo(msgspec.Struct, frozen=True):
    device_id: str
    user: str
    name: str
    created_at: str
    last_seen: str | None
    revoked_at: str | None
    ed25519: str


class GroupChanges(msgspec.Struct, frozen=True):
    """Entries of one group's chain, oldest first; ``more``: ask again after the last."""

    entries: list[Signed]
    more: bool = False


class GroupPost(msgspec.Struct, frozen=True):
    """One new chain entry, posted by the device that signed it."""

    entry: Signed


_json_encoder = msgspec.json.Encoder()


def encode_json(obj: msgspec.Struct | Sequence[msgspec.Struct]) -> bytes:
    return _json_encoder.encode(obj)


def decode_json(data: bytes, kind: type[T]) -> T:
    """Decode an HTTP body strictly.  Raises ``RemoteProtocolError`` (``bad_request``)."""
    try:
        return msgspec.json.decode(data, type=kind)
    except DECODE_ERRORS as exc:
        raise RemoteProtocolError(
            f"malformed request body: {exc}", "bad_request"
        ) from exc
