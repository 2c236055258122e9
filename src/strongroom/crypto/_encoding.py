"""Base64 as vodozemac writes it (standard alphabet, no padding)."""

from __future__ import annotations

import base64
import binascii

from strongroom.errors import CryptoError

__all__ = ["b64decode", "b64encode"]


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def b64decode(text: str) -> bytes:
    """Decode padded or unpadded base64.  Raises ``CryptoError`` on malformed input."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CryptoError("malformed base64 key or signature") from exc
