"""The SDK pieces the chat app stands on, against a real server: the directory, the
session's queue across a server restart, history search kept in step with edits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from conftest import Org
from strongroom import client, proto
from strongroom.client import Backoff, Client, Session, Status
from strongroom.client._history import fts_query
from strongroom.errors import ClientError, ServerRefusedError

DM = "dm:alice:bob"


async def wait(check: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_directory_lists_users_with_names(sqlite_org: Org) -> None:
    sqlite_org.add_user("alice", "Alice Archer")
    sqlite_org.add_user("bob", "")
    home = sqlite_org.activate("alice")

    async def scenario() -> list[proto.DirectoryEntry]:
        async with Client(home) as c:
            found = await client.fetch_directory(c)
            assert Session(c).history.names() == {"alice": "Alice Archer"}
            return found

    assert asyncio.run(scenario()) == [
        proto.DirectoryEntry("alice", "Alice Archer"),
        proto.DirectoryEntry("bob", ""),
    ]
    # devices only: the admin credential is no device signature
    assert sqlite_org.admin("GET", "/v1/directory").status_code == 401


def test_queued_sends_survive_a_restart_and_go_out_once(sqlite_org: Org) -> None:
    alice, bob = sqlite_org.activate("alice"), sqlite_org.activate("bob")

    async def scenario() -> None:
        async with Client(alice) as c:
            session = Session(c, backoff=Backoff(first=0.05, limit=0.2))
            task = asyncio.create_task(session.run())
            await wait(lambda: session.status is Status.ONLINE, "online")
            first = session.send_text(DM, "one")
            await wait(
                lambda: c.store.get_message(bytes.fromhex(first)).state == "sent",  # type: ignore[union-attr]
                "sent",
            )
            sqlite_org.server.stop()
            await wait(lambda: session.status is Status.OFFLINE, "offline")
            with pytest.raises(ClientError, match="not connected"):
                await session.create_group("g", ["bob"])
            second = session.send_text(DM, "two")
            session.react(DM, first, "👍")
            assert session.queued() == 2
            assert c.store.get_message(bytes.fromhex(second)).state == "sending"  # type: ignore[union-attr]
            sqlite_org.server.start()
            session.retry_now()
            await wait(lambda: session.queued() == 0, "the queue to drain")
            assert c.store.get_message(bytes.fromhex(second)).state == "sent"  # type: ignore[union-attr]
            task.cancel()
        async with Client(bob) as b:
            got = await b.receive(0.3)
            assert [(m.kind, m.text or m.emoji) for m in got] == [
                ("text", "one"),
                ("text", "two"),
                ("reaction", "👍"),
            ]

    asyncio.run(scenario())


def test_a_refused_send_is_marked_failed_not_retried(sqlite_org: Org) -> None:
    alice = sqlite_org.activate("alice")

    async def scenario() -> None:
        async with Client(alice) as c:
            session = Session(c)
            task = asyncio.create_task(session.run())
            await wait(lambda: session.status is Status.ONLINE, "online")
            sent = session.send_text("dm:alice:nobody", "hello?")
            await wait(lambda: session.queued() == 0, "the refusal")
            assert c.store.get_message(bytes.fromhex(sent)).state == "failed"  # type: ignore[union-attr]
            assert any("was not sent" in w for w in c.warnings)
            assert session.status is Status.ONLINE
            task.cancel()

    asyncio.run(scenario())


def test_search_follows_edits_and_expiry(sqlite_org: Org) -> None:
    alice = sqlite_org.activate("alice")

    async def scenario() -> None:
        async with Client(alice) as c:
            session = Session(c)
            first = session.send_text("dm:alice:alice", "the quarterly figures")
            assert [h.id for h in session.history.search("QUARTER")] == [first]
            assert session.history.search("figures quart")[0].snippet == (
                "the [quarterly] [figures]"
            )
            session.edit("dm:alice:alice", first, "the annual report")
            assert session.history.search("quarterly") == []
            assert [h.id for h in session.history.search("annual")] == [first]
            assert c.store.purge_expired(2**62) == 0  # nothing expires...
            with c.store.transaction():
                c.store._conn.execute("UPDATE messages SET expires_at = 1")
            c.store.purge_expired(2)  # ...until its time: gone from the index too
            assert session.history.search("annual") == []
            assert session.history.search('"; DROP TABLE messages; --') == []

            # an expired message can no longer be edited or reacted to, even before
            # anything purged it: the edit and the reaction purge first
            second = session.send_text("dm:alice:alice", "going soon")
            with c.store.transaction():
                c.store._conn.execute("UPDATE messages SET expires_at = 1")
            queued = session.queued()
            with pytest.raises(ClientError, match="it may have expired"):
                session.react("dm:alice:alice", second, "👍")
            with pytest.raises(ClientError, match="it may have expired"):
                session.edit("dm:alice:alice", second, "changed")
            assert session.queued() == queued  # nothing was sent about it
            with pytest.raises(ClientError, match="not a message id"):
                session.react("dm:alice:alice", "zz", "👍")

    asyncio.run(scenario())


def test_offline_refusals_are_transient_others_are_not() -> None:
    try:
        raise ClientError("cannot reach") from OSError("refused")
    except ClientError as exc:
        assert client.is_transient(exc)
    assert client.is_transient(ServerRefusedError("busy", "unavailable"))
    assert not client.is_transient(ServerRefusedError("no", "not_found"))
    assert not client.is_transient(ClientError("bob has no device"))
    assert fts_query('a "b') == '"a" """b"*'
    assert fts_query("   ") is None
    backoff = Backoff(first=0.5, limit=4)
    assert [backoff.delay(n, 1.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 4, 4]
    assert backoff.delay(3, 0.0) == 1.0
