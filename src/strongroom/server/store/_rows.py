"""Typed rows: everything the store hands back is one of these, never a tuple or a dict."""

from __future__ import annotations

import msgspec

__all__ = [
    "AcceptResult",
    "ActivationRow",
    "AuditRecord",
    "BlobRow",
    "CodeRow",
    "DeviceRow",
    "FleetRow",
    "GroupChangeRow",
    "InboxRow",
    "PolicyChangeRow",
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
    """``duplicate``: this sender used this envelope id before; nothing new was stored.

    ``seqs``: the seq each copy in ``delivered_to`` got, in the same order, so that the
    server can hand the committed rows to connected devices without reading them back.
    """

    delivered_to: list[str]
    skipped: list[str]
    duplicate: bool = False
    seqs: list[int] = []


class GroupChangeRow(msgspec.Struct, frozen=True):
    """One signed entry of a group's membership chain, as the server keeps it."""

    seq: int
    entry: bytes
    hash: bytes
    at: int


class BlobRow(msgspec.Struct, frozen=True):
    """An attachment's ciphertext as the server tracks it; the bytes live in files.

    ``size`` is what the owner declared; ``received`` how much has been stored so far;
    ``complete`` once the two are equal (then it never changes again).  ``touched_at``:
    the last progress, completion or send naming it; ``orphaned_at``: since when no
    inbox row waits for a message naming it, as pruning found (None: something waits,
    or pruning has not looked yet).
    """

    blob_id: str
    owner: str
    size: int
    received: int
    complete: bool
    created_at: int
    completed_at: int | None
    touched_at: int
    orphaned_at: int | None = None


class AuditRecord(msgspec.Struct, frozen=True):
    """One stored audit entry: its position, the signed bytes and their hash."""

    seq: int
    entry: bytes  # msgpack of proto.Signed
    hash: bytes
    at: int


class PolicyChangeRow(msgspec.Struct, frozen=True):
    """One change of policy: ``user`` None for the organisation's rules, else that
    user's override; ``value`` is JSON (None with ``cleared``: the override removed)."""

    version: int
    user: str | None
    key: str
    value: str | None
    at: int
    actor: str
    cleared: bool = False


class FleetRow(msgspec.Struct, frozen=True):
    """What IT knows of a device beyond its keys: the policy it reported enforcing and
    its wipe order, if any."""

    device_id: str
    policy_version: int | None = None
    policy_at: int | None = None
    wipe_order: bytes | None = None  # msgpack of proto.Signed
    wipe_ordered_at: int | None = None
    wiped_at: int | None = None
