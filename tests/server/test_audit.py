"""The audit chain: built, verified, and every kind of tampering named."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom import crypto, proto
from strongroom.errors import RemoteProtocolError
from strongroom.server._audit import AuditRecord, seal, verify

AUTHORITY = crypto.AuthorityKey.generate()
T0 = 1_767_225_600_000


def log(n: int, authority: crypto.AuthorityKey = AUTHORITY) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    prev = proto.AUDIT_GENESIS
    for seq in range(n):
        record = seal(
            authority,
            seq,
            prev,
            at=T0 + seq,
            actor="admin",
            action="device.revoke" if seq % 2 else "user.add",
            subject=f"subject-{seq}",
            details={"n": str(seq)},
        )
        records.append(record)
        prev = record.hash
    return records


def test_an_honest_log_verifies() -> None:
    assert verify(log(10), AUTHORITY.public) == (10, [])
    assert verify([], AUTHORITY.public) == (0, [])


def test_entries_round_trip_and_sign_their_bytes() -> None:
    (record,) = log(1)
    signed = msgspec.msgpack.decode(record.entry, type=proto.Signed)
    entry = AUTHORITY.public.verify_audit(signed)
    assert (entry.seq, entry.action, entry.subject, entry.details) == (
        0,
        "user.add",
        "subject-0",
        {"n": "0"},
    )
    assert entry.prev == proto.AUDIT_GENESIS
    assert record.hash == proto.audit_hash(signed)


def _edit(record: AuditRecord, **changes: object) -> AuditRecord:
    """Rewrite an entry's body but keep its old signature: what a database editor can do."""
    signed = msgspec.msgpack.decode(record.entry, type=proto.Signed)
    entry = proto.decode_audit_entry(signed.body)
    body = proto.encode(msgspec.structs.replace(entry, **changes))
    return msgspec.structs.replace(
        record, entry=proto.encode(proto.Signed(body, signed.signature))
    )


def test_an_edited_entry_is_named() -> None:
    records = log(6)
    records[3] = _edit(records[3], subject="someone else")
    _, problems = verify(records, AUTHORITY.public)
    assert problems and all(p.startswith("entry 3:") for p in problems)
    assert "signature does not verify" in problems[0]


def test_a_deleted_entry_is_named() -> None:
    records = log(6)
    del records[2]
    _, problems = verify(records, AUTHORITY.public)
    assert any(p.startswith("entry 3:") and "missing" in p for p in problems)


def test_reordered_entries_are_named() -> None:
    records = log(6)
    records[1], records[4] = records[4], records[1]
    _, problems = verify(records, AUTHORITY.public)
    named = {p.split(":")[0] for p in problems}
    assert {"entry 4", "entry 1"} <= named


def test_an_entry_signed_by_another_key_is_refused() -> None:
    records = log(4)
    records[2] = seal(
        crypto.AuthorityKey.generate(),
        2,
        records[1].hash,
        at=T0,
        actor="admin",
        action="user.add",
        subject="mallory",
    )
    _, problems = verify(records, AUTHORITY.public)
    assert problems[0].startswith("entry 2:") and "signature" in problems[0]
    # and the entry after it no longer links to what stands before it
    assert [p.split(":")[0] for p in problems] == ["entry 2", "entry 3"]


def test_a_whole_log_re_signed_by_another_key_is_refused() -> None:
    _, problems = verify(log(3, crypto.AuthorityKey.generate()), AUTHORITY.public)
    assert len(problems) == 3


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=0, max_value=4),
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=1, max_value=255),
)
def test_any_flipped_byte_is_named(index: int, offset: int, xor: int) -> None:
    records = log(5)
    raw = bytearray(records[index].entry)
    raw[offset % len(raw)] ^= xor
    records[index] = msgspec.structs.replace(records[index], entry=bytes(raw))
    _, problems = verify(records, AUTHORITY.public)
    assert any(p.startswith(f"entry {index}:") for p in problems)


def test_actions_are_dotted_names() -> None:
    entry = proto.AuditEntry(
        seq=0,
        prev=proto.AUDIT_GENESIS,
        at=T0,
        actor="admin",
        action="Not An Action!",
        subject="x",
    )
    with pytest.raises(RemoteProtocolError, match="malformed audit entry"):
        proto.decode_audit_entry(proto.encode(entry))
