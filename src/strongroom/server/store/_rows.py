"""Typed rows: everything the store hands back is one of these, never a tuple or a dict."""

from __future__ import annotations

import msgspec

__all__ = [
    "AcceptResult",
    "ActivationRow",
    "CodeRow",
    "DeviceRow",
    "GroupChangeRow",
    "InboxRow",
    "StoredKey",
    "UserRow",
]


class UserRow(msgspec.Struct, frozen=True):
    user: str
    name: str
    created_at: int
    disabled: bool = False


class CodeRow(msgspec.Struct, frozen=True):
    """An activation code.  ``password`` is the SPAKE2 password derived from the code."""

    code_id: str
    user: str
    password: bytes
    created_at: int
    expires_at: int
    failures: int
    state: str  # live | used | burned | replaced


class ActivationRow(msgspec.Struct, frozen=True):
    """A PAKE run between its two requests.  ``reason`` is set when it can never succeed."""

    session_id: str
    user: str
    code_id: str | None
    shared: bytes
    expires_at: int
    reason: str | None


class DeviceRow(msgspec.Struct, frozen=True):
    device_id: str
    user: str
    name: str
    ed25519: str
    curve25519: str
    certificate: bytes  # msgpack of proto.Signed
    created_at: int
    last_seen: int | None = None
    revoked_at: int | None = None
    revocation: bytes | None = None  # msgpack of proto.Signed
    client_version: str = ""


class StoredKey(msgspec.Struct, frozen=True):
    key_id: str
    key: str
    signature: bytes
    fallback: bool


class InboxRow(msgspec.Struct, frozen=True):
    """``shared``: the body is the one stored for every recipient (``accept_shared``)."""

    seq: int
    envelope_id: bytes
    sender: str
    at: int
    body: bytes
    shared: bool = False


class AcceptResult(msgspec.Struct, frozen=True):
    """``duplicate``: this sender used this envelope id before; nothing new was stored."""

    delivered_to: list[str]
    skipped: list[str]
    duplicate: bool = False


class GroupChangeRow(msgspec.Struct, frozen=True):
    """One signed entry of a group's membership chain, as the server keeps it."""

    seq: int
    entry: bytes
    hash: bytes
    at: int
