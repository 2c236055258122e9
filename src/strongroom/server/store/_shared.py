"""Rules both backends apply the same way, kept in one place."""

from __future__ import annotations

from typing import Any

from strongroom.errors import ConflictError, NotFoundError

__all__ = [
    "BLOB_GRACE_MS",
    "SEND_ID_RETENTION_MS",
    "SHARED_GRACE_MS",
    "UPLOAD_TTL_MS",
    "blob_refused",
    "check_blob_progress",
    "check_group_head",
]

# How long a (sender, envelope id) pair is remembered, so a resend is a duplicate.
SEND_ID_RETENTION_MS = 7 * 24 * 3600 * 1000

# A shared body is collected only once no inbox row refers to it and it is this old, so
# that a body being stored right now is never taken for an orphan.
SHARED_GRACE_MS = 60_000

# A complete blob that no waiting inbox row refers to is collected once it has been so
# for this long (counted from the prune that first saw it so) and nothing touched it
# (completed it, or named it in a send) for as long: long enough for its uploader to
# send the message that names it, and for a recipient that acknowledged the message to
# fetch the file.  Configurable: ``[limits] blob_grace_seconds``.
BLOB_GRACE_MS = 24 * 3600 * 1000

# An upload that has made no progress for this long is abandoned and collected.
# Configurable: ``[limits] upload_ttl_seconds``.
UPLOAD_TTL_MS = 24 * 3600 * 1000


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


def blob_refused(blob_id: str) -> ConflictError:
    """Why a send naming this attachment is refused (it is gone, unfinished or not the
    sender's): the whole send fails, since a message whose attachment is gone is useless."""
    return ConflictError(
        f"attachment {blob_id} is not a finished upload of this device "
        "(it may have expired): upload it again"
    )


def check_blob_progress(
    blob_id: str, offset: int, length: int, row: tuple[Any, Any, Any] | None
) -> None:
    """Raise unless ``length`` bytes at ``offset`` extend a blob at (size, received,
    complete): ``NotFoundError`` for no blob, ``ConflictError`` otherwise."""
    if row is None:
        raise NotFoundError(f"no attachment {blob_id}")
    size, received, complete = int(row[0]), int(row[1]), bool(row[2])
    if complete:
        raise ConflictError(f"attachment {blob_id} is complete already")
    if offset != received:
        raise ConflictError(
            f"attachment {blob_id} has {received} bytes: continue at offset {received}"
        )
    if length < 1 or offset + length > size:
        raise ConflictError(f"attachment {blob_id} is {size} bytes: that runs past it")
