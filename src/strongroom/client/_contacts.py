"""The organisation's directory on the device: whom a person can start a conversation
with.  ``fetch_directory`` asks the server (``GET /v1/directory``) and keeps the names
in the device's store, so conversation titles still read well offline.

A name only helps a person pick a user id: what a message is encrypted to is always the
devices the authority certified for that id (``Client.directory``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from strongroom import proto

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["fetch_directory"]


async def fetch_directory(client: Client) -> list[proto.DirectoryEntry]:
    """Every enabled user of the organisation, by user id.  Raises ``ClientError`` if
    the server cannot be reached, ``ServerRefusedError`` if it refuses."""
    response = await client.signed("GET", "/v1/directory")
    if response.status_code != 200:
        from ._client import http_error  # here: _client may come to import this module

        raise http_error(response)
    directory = proto.decode_json(response.content, proto.Directory)
    now = client.device.clock()
    db = client.store._conn  # the contacts table (schema 3) is this module's
    with client.store.transaction():
        for entry in directory.users:
            db.execute(
                "INSERT INTO contacts VALUES (?, ?, ?) ON CONFLICT(user_id) DO UPDATE "
                "SET name=excluded.name, seen_at=excluded.seen_at",
                (entry.user, entry.name, now),
            )
    return directory.users
