"""The audit log on the wire: one entry, signed by the authority, linked to the one before.

An entry says who (``actor``) did what (``action``) to what (``subject``), when, with a few
details, at position ``seq``; ``prev`` is the hash of the entry before it (``AUDIT_GENESIS``
for the first).  The authority key signs ``signing_input(DOMAIN_AUDIT, body)``; the hash of
an entry is SHA-256 of those same bytes, so editing, deleting, inserting or reordering any
entry breaks either a signature or a link that a verifier names.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

import msgspec

from ._objects import Signed, _decode, _decoder_for, signing_input

__all__ = [
    "AUDIT_GENESIS",
    "DOMAIN_AUDIT",
    "AuditEntry",
    "audit_hash",
    "audit_signing_input",
    "decode_audit_entry",
]

DOMAIN_AUDIT = b"strongroom/v1/audit-entry"
AUDIT_GENESIS = bytes(32)

Short = Annotated[str, msgspec.Meta(max_length=200)]


class AuditEntry(msgspec.Struct, frozen=True):
    """One thing that happened.  ``actor`` is ``admin``, ``device:<id>``, ``system`` or
    ``custodian:<n>``; ``action`` a dotted name such as ``device.revoke``."""

    seq: Annotated[int, msgspec.Meta(ge=0)]
    prev: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    at: int
    actor: Short
    action: Annotated[str, msgspec.Meta(pattern=r"^[a-z]+(\.[a-z_]+)*$", max_length=64)]
    subject: Short
    details: Annotated[dict[str, Short], msgspec.Meta(max_length=32)] = {}
    v: int = 1


def audit_signing_input(body: bytes) -> bytes:
    return signing_input(DOMAIN_AUDIT, body)


def audit_hash(signed: Signed) -> bytes:
    """What the next entry's ``prev`` holds: SHA-256 of the bytes the signature covers."""
    return hashlib.sha256(audit_signing_input(signed.body)).digest()


_entry_decoder = _decoder_for(AuditEntry)


def decode_audit_entry(data: bytes) -> AuditEntry:
    """Raises ``RemoteProtocolError`` only."""
    return _decode(_entry_decoder, data, "audit entry")
