"""The organisation's directory as devices see it: who can be written to.

``GET /v1/directory`` (device-signed) answers ``Directory``: every enabled user of the
organisation with the display name IT gave them.  Names are informative only: a device
encrypts to the devices the authority certified for a user id, never to a name.
"""

from __future__ import annotations

import msgspec

__all__ = ["Directory", "DirectoryEntry"]


class DirectoryEntry(msgspec.Struct, frozen=True):
    user: str
    name: str = ""


class Directory(msgspec.Struct, frozen=True):
    users: list[DirectoryEntry]
