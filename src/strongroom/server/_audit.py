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

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping

import msgspec

from strongroom import proto
from strongroom.crypto import AuthorityKey, AuthorityPublicKey
from strongroom.errors import (
    ConflictError,
    CryptoError,
    RemoteProtocolError,
    StoreError,
)

from .store import AuditRecord, Store

__all__ = ["AuditLog", "AuditRecord", "seal", "verify"]

log = logging.getLogger("strongroom.server.audit")
_CAS_TRIES = 20


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


class AuditLog:
    """Appends to the store's log: reads the head, seals the next entry, and appends by
    compare-and-set, reading the head again when another node wrote first."""

    def __init__(
        self, store: Store, authority: AuthorityKey, clock: Callable[[], int]
    ) -> None:
        self._store = store
        self._authority = authority
        self._clock = clock
        self._lock = (
            asyncio.Lock()
        )  # this node's writers queue; other nodes race by CAS

    async def record(
        self,
        actor: str,
        action: str,
        subject: str,
        details: Mapping[str, str] | None = None,
    ) -> AuditRecord:
        async with self._lock:
            for _ in range(_CAS_TRIES):
                head = await self._store.audit_head()
                seq, prev = (
                    (0, proto.AUDIT_GENESIS)
                    if head is None
                    else (
                        head[0] + 1,
                        head[1],
                    )
                )
                record = seal(
                    self._authority,
                    seq,
                    prev,
                    at=self._clock(),
                    actor=actor,
                    action=action,
                    subject=subject,
                    details=details,
                )
                try:
                    await self._store.append_audit(record)
                except ConflictError:
                    continue
                log.info("audit %s %s %s", actor, action, subject)
                return record
        raise StoreError("the audit log is too busy to append to; try again")

    async def verify(self) -> tuple[int, list[str]]:
        """Check the whole log as stored (see ``verify``)."""
        records: list[AuditRecord] = []
        after = -1
        while True:
            page = await self._store.audit_records(after, 5000)
            records += page
            if len(page) < 5000:
                break
            after = page[-1].seq
        return verify(records, self._authority.public)
