"""Lawful-access escrow on the wire (docs/lawful-access.md).

Devices upload sealed copies (``EscrowUpload``) beside their messages while policy asks;
the admin sets up the custodians (``EscrowSetup``) and opens requests; custodians fetch a
request's points (``CustodianTask``) and return proven partials (``PartialsPost``); the
export (``EscrowExport``) holds the released messages of the request's scopes only.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from ._objects import UserId

__all__ = [
    "DAY_RE",
    "CustodianTask",
    "EscrowCopy",
    "EscrowExport",
    "EscrowMessage",
    "EscrowRequestAsk",
    "EscrowRequestView",
    "EscrowScope",
    "EscrowSetup",
    "EscrowStatus",
    "EscrowUpload",
    "PartialItem",
    "PartialsPost",
    "SealedContent",
    "TaskItem",
]

DAY_RE = r"^\d{4}-\d{2}-\d{2}$"
Day = Annotated[str, msgspec.Meta(pattern=DAY_RE)]
Point = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Conversation = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class SealedContent(msgspec.Struct, frozen=True):
    """What a sealed copy holds: who sent what, when (never keys: a file is described by
    its name, size and hash, and its key is not escrowed)."""

    from_user: str
    from_device: str
    conversation: str
    message_id: bytes
    sent_at: int
    kind: str
    text: str = ""
    target: bytes | None = None
    file_name: str = ""
    file_size: int = 0
    file_sha256: bytes | None = None


class EscrowCopy(msgspec.Struct, frozen=True):
    """One message sealed for one scope (conversation, UTC day) under the device's E."""

    conversation: Conversation
    day: Day
    ephemeral: Point
    message_id: Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
    sealed: Annotated[bytes, msgspec.Meta(min_length=28, max_length=70_000)]
    members: Annotated[list[UserId], msgspec.Meta(min_length=1, max_length=4096)]


class EscrowUpload(msgspec.Struct, frozen=True):
    copies: Annotated[list[EscrowCopy], msgspec.Meta(min_length=1, max_length=64)]


class EscrowSetup(msgspec.Struct, frozen=True):
    """The public outcome of a ceremony: S, the Feldman commitments, and the SHA-256 of
    each custodian's access token (index i at position i-1)."""

    custodians: Annotated[int, msgspec.Meta(ge=1, le=32)]
    threshold: Annotated[int, msgspec.Meta(ge=1, le=32)]
    public: Point
    commitments: list[Point]
    token_hashes: list[str]


class EscrowStatus(msgspec.Struct, frozen=True):
    set_up: bool
    custodians: int = 0
    threshold: int = 0
    public: bytes | None = None
    commitments: list[bytes] = []
    at: str | None = None


class EscrowRequestAsk(msgspec.Struct, frozen=True):
    user: UserId
    start: Day
    end: Day
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    reference: Annotated[str, msgspec.Meta(max_length=200)] = ""


class EscrowScope(msgspec.Struct, frozen=True):
    conversation: str
    day: str
    copies: int


class EscrowRequestView(msgspec.Struct, frozen=True):
    id: str
    user: str
    start: str
    end: str
    reason: str
    reference: str
    created_at: str
    scopes: list[EscrowScope]
    approvals: list[int]
    threshold: int
    state: str  # waiting | released


class TaskItem(msgspec.Struct, frozen=True):
    """One scope's points for a custodian: h and every E devices used in it."""

    conversation: str
    day: str
    h: Point
    ephemerals: list[Point]


class CustodianTask(msgspec.Struct, frozen=True):
    request: EscrowRequestView
    org: str
    items: list[TaskItem]


class PartialItem(msgspec.Struct, frozen=True):
    conversation: str
    day: Day
    ephemeral: Point
    value: Point
    c: Point
    z: Point


class PartialsPost(msgspec.Struct, frozen=True):
    index: Annotated[int, msgspec.Meta(ge=1, le=32)]
    partials: Annotated[list[PartialItem], msgspec.Meta(max_length=100_000)]


class EscrowMessage(msgspec.Struct, frozen=True):
    conversation: str
    day: str
    from_user: str
    from_device: str
    message_id: str
    sent_at: str
    kind: str
    text: str = ""
    target: str | None = None
    file_name: str = ""
    file_size: int = 0


class EscrowExport(msgspec.Struct, frozen=True):
    request: EscrowRequestView
    messages: list[EscrowMessage]
    #: SHA-256 over the hashes of the audit entries that authorised the release
    audit_digest: str
    audit_entries: list[int]
    unopened: int = 0
