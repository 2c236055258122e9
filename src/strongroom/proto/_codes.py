"""Version numbers, size limits and wire error codes.

The values of ``ErrorCode`` are part of the wire: they never change meaning and are never
reused.  New codes may be added; clients treat an unknown code as ``internal``.
"""

from __future__ import annotations

import enum
import re

import msgspec

__all__ = [
    "DECODE_ERRORS",
    "DEVICE_ID_RE",
    "MAX_BLOBS",
    "MAX_BODY_BYTES",
    "MAX_COPIES",
    "MAX_FANOUT",
    "MAX_FRAME_BYTES",
    "MAX_HTTP_BODY_BYTES",
    "PROTOCOL_VERSION",
    "USER_ID_RE",
    "ErrorCode",
    "conversation_for",
    "valid_device_id",
    "valid_user_id",
]

#: What msgspec may raise on hostile input: malformed bytes, wrong schema, invalid UTF-8 in
#: a string, and nesting deep enough to exhaust the recursion limit.  Every decoder of
#: foreign bytes maps exactly these to our own errors.
DECODE_ERRORS: tuple[type[Exception], ...] = (
    msgspec.DecodeError,
    msgspec.ValidationError,
    UnicodeDecodeError,
    RecursionError,
)

#: Bumped only for changes an older peer cannot understand.
PROTOCOL_VERSION = 1

#: One stream frame, as bytes on the WebSocket.
MAX_FRAME_BYTES = 1 << 20
#: One encrypted copy inside a ``Send`` (an Olm message for one device).
MAX_BODY_BYTES = 64 * 1024
#: Device copies in one ``Send``: every device of the recipient plus the sender's own.
MAX_COPIES = 256
#: Member devices one ``SendShared`` (a group message) reaches.
MAX_FANOUT = 4096
#: Attachments one message may refer to.
MAX_BLOBS = 16
#: Any HTTP request body.
MAX_HTTP_BODY_BYTES = 256 * 1024

#: User ids are what IT types: short, lowercase, unambiguous in a terminal.
USER_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
#: Device ids are derived from the device's Ed25519 key (see ``strongroom.crypto``).
DEVICE_ID_RE = re.compile(r"^[a-z2-7]{16}$")


class ErrorCode(enum.StrEnum):
    """Why the server (or a client) refused something.  Values are stable wire strings."""

    BAD_FRAME = "bad_frame"
    FRAME_TOO_LARGE = "frame_too_large"
    BAD_REQUEST = "bad_request"
    UNSUPPORTED_VERSION = "unsupported_version"
    AUTH_FAILED = "auth_failed"
    DEVICE_REVOKED = "device_revoked"
    NOT_AUTHORIZED = "not_authorized"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    CODE_INVALID = "code_invalid"
    CODE_BURNED = "code_burned"
    CODE_EXPIRED = "code_expired"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    INTERNAL = "internal"
    ATTACHMENT_TOO_LARGE = "attachment_too_large"
    POLICY_VIOLATION = "policy_violation"
    USER_DISABLED = "user_disabled"


def valid_user_id(user: str) -> bool:
    return USER_ID_RE.fullmatch(user) is not None


def valid_device_id(device_id: str) -> bool:
    return DEVICE_ID_RE.fullmatch(device_id) is not None


def conversation_for(user_a: str, user_b: str) -> str:
    """The id of the 1:1 conversation between two users (the same from either side)."""
    first, second = sorted((user_a, user_b))
    return f"dm:{first}:{second}"
