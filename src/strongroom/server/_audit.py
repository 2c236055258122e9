"""The audit log: what IT and the organisation's devices did, hash-chained and signed.

Rules:

1. An entry is made only by ``seal``: it links to the entry before (``prev``) and is
   signed by the authority key.  The store appends it by compare-and-set on the head, so
   two server nodes never write two entries at one position.
2. ``verify`` checks a whole log from its first entry and names every entry that is not
   what it should be: a signature that does not verify (an edited row), a position out of
   turn (a deleted, inserted or reordered row), a broken link.  It never stops at the
   first problem, so an auditor sees the extent of the damage.
3. Entries carry no secrets: no codes, tokens, keys or message content; device ids, user
   ids and outcomes only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from strongroom import proto
from strongroom.crypto import AuthorityKey, AuthorityPublicKey
from strongroom.errors import CryptoError, RemoteProtocolError

__all__ = ["AuditRecord", "seal", "verify"]


class AuditRecord(msgspec.Struct, frozen=True):
    """One stored entry: its position, the signed bytes and their hash."""

    seq: int
    entry: bytes  # msgpack of proto.Signed
    hash: bytes
    at: int


_signed = msgspec.msgpack.Decoder(proto.Signed)


def seal(
    authority: AuthorityKey,
    seq: int,
    prev: bytes,
    *,
    at: int,
    actor: str,
    action: str,
    subject: str,
    details: Mapping[str, str] | None = None,
) -> AuditRecord:
    """The entry at ``seq`` after the entry whose hash is ``prev``, signed."""
    entry = proto.AuditEntry(
        seq=seq,
        prev=prev,
        at=at,
        actor=actor[:200],
        action=action,
        subject=subject[:200],
        details={k: v[:200] for k, v in (details or {}).items()},
    )
    signed = authority.sign_audit(entry)
    return AuditRecord(seq, proto.encode(signed), proto.audit_hash(signed), at)


def verify(
    records: Iterable[AuditRecord], authority: AuthorityPublicKey
) -> tuple[int, list[str]]:
    """Check a log from its start; (entries checked, problems naming the entries)."""
    problems: list[str] = []
    expected_prev = proto.AUDIT_GENESIS
    count = 0
    for position, record in enumerate(records):
        count += 1
        where = f"entry {record.seq}"
        try:
            signed = _signed.decode(record.entry)
            entry = authority.verify_audit(signed)
        except (msgspec.DecodeError, CryptoError, RemoteProtocolError):
            problems.append(
                f"{where}: its signature does not verify (the row was edited)"
            )
            expected_prev = record.hash  # carry on from what the row claims
            continue
        digest = proto.audit_hash(signed)
        if entry.seq != record.seq or digest != record.hash:
            problems.append(f"{where}: the row does not match the signed entry in it")
        if entry.seq != position:
            problems.append(
                f"{where}: found at position {position}; an entry before it is missing, "
                "or entries were reordered"
            )
        if entry.prev != expected_prev:
            problems.append(
                f"{where}: it does not follow the entry before it (an entry was deleted, "
                "inserted or reordered)"
            )
        expected_prev = digest
    return count, problems
