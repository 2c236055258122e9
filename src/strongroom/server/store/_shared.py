"""Rules both backends apply the same way, kept in one place."""

from __future__ import annotations

from typing import Any

from strongroom.errors import ConflictError

__all__ = ["SEND_ID_RETENTION_MS", "SHARED_GRACE_MS", "check_group_head"]

# How long a (sender, envelope id) pair is remembered, so a resend is a duplicate.
SEND_ID_RETENTION_MS = 7 * 24 * 3600 * 1000

# A shared body is collected only once no inbox row refers to it and it is this old, so
# that a body being stored right now is never taken for an orphan.
SHARED_GRACE_MS = 60_000


def check_group_head(
    group_id: str, seq: int, prev: bytes, head: tuple[Any, Any] | None
) -> None:
    """Raise ``ConflictError`` unless an entry (seq, prev) extends ``head`` (seq, hash)."""
    if head is None:
        if seq != 0:
            raise ConflictError(f"group {group_id} does not exist")
        return
    head_seq, head_hash = int(head[0]), bytes(head[1])
    if seq != head_seq + 1 or prev != head_hash:
        raise ConflictError(
            f"group {group_id} is at entry {head_seq}: this change does not extend it"
        )
