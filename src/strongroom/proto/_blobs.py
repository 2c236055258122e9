"""HTTP bodies and limits of the blob (attachment) endpoints.

A blob is the ciphertext of one attachment (``strongroom.crypto``'s sealed chunks).  The
server stores it as opaque bytes: what it learns is the size, the uploading device and
who fetches it.  The key and the digest travel only inside the E2E message
(``FileRef``).  The piece bodies of ``PUT /v1/blobs/{id}`` are raw bytes, not JSON.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

__all__ = [
    "BLOB_ID_RE",
    "MAX_BLOB_PIECE",
    "BlobCreate",
    "BlobInfo",
    "valid_blob_id",
]

#: One ``PUT`` body: larger pieces are refused with ``413``.
MAX_BLOB_PIECE = 4 << 20
#: 128 random bits, RFC 4648 base32, lowercase, unpadded: 26 characters.
BLOB_ID_RE = re.compile(r"^[a-z2-7]{26}$")
BlobId = Annotated[str, msgspec.Meta(pattern=r"^[a-z2-7]{26}$")]


class BlobCreate(msgspec.Struct, frozen=True):
    """Ask for a new blob of ``size`` ciphertext bytes (the server enforces its limit)."""

    size: Annotated[int, msgspec.Meta(ge=1)]


class BlobInfo(msgspec.Struct, frozen=True):
    """Where an upload stands: ``received`` bytes of ``size``; ``complete`` when equal."""

    blob: BlobId
    size: int
    received: int
    complete: bool


def valid_blob_id(blob: str) -> bool:
    return BLOB_ID_RE.fullmatch(blob) is not None
