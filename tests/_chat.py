"""Helpers for the chat app's tests (tests/app): waiting on a running app, and a
history built offline with a fixed clock, so screenshots come out the same every run."""

from __future__ import annotations

import asyncio
import datetime
import os
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot

from strongroom import client, proto
from strongroom.client import Client, Session

__all__ = ["FIXED_MS", "UTC", "build_history", "until"]

#: 1 March 2025, 09:41 UTC: every message of the offline history is near it.
FIXED_MS = 1_740_822_060_000
UTC = datetime.UTC


async def until(
    pilot: Pilot[None], check: Callable[[], object], what: str, timeout: float = 15.0
) -> None:
    """Let the app run until ``check()`` is true; fail naming ``what`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def learn(home: Path) -> None:
    """While the server runs: cache the directory's names and the contacts' devices."""
    async with Client(home) as c:
        session = Session(c)
        await session.directory()
        for user in ("bob", "carol"):
            await session.refresh_devices(user)


def build_history(home: Path) -> None:
    """Alice's history as the screenshots show it, written with a fixed clock and no
    server: what she sent waits in the queue; what others sent is applied as the
    device core applies a verified delivery."""

    async def build() -> None:
        now = [FIXED_MS - 3_600_000]

        def clock() -> int:
            now[0] += 60_000
            return now[0]

        async with Client(home, clock) as c:
            session = Session(c)
            me = c.device.user
            bob_dm = proto.conversation_for(me, "bob")
            carol_dm = proto.conversation_for(me, "carol")

            def incoming(
                user: str, conversation: str, content: proto.UserContent
            ) -> bytes:
                peers = [
                    p
                    for p in (
                        c.store.get_peer(d.device_id)
                        for d in session.verifications.devices(user)
                    )
                    if p
                ]
                message_id = os.urandom(16)
                origin = client._device.Origin(  # what Device.open does once checked
                    message_id, peers[0], conversation, clock(), None
                )
                with c.store.transaction():
                    c.device.apply(origin, content)
                return message_id

            first = incoming("bob", bob_dm, proto.Text("Morning. Is the draft ready?"))
            sent = session.send_text(
                bob_dm, "Nearly: I'll send it before ten.", reply_to=first.hex()
            )
            session.react(bob_dm, first.hex(), "👍")
            read = session.send_text(bob_dm, "Here are the figures\nfor Q1 and Q2.")
            incoming("bob", bob_dm, proto.Reaction(bytes.fromhex(read), "🙏"))
            waiting = session.send_text(bob_dm, "Meeting moved to 11:00")
            with c.store.transaction():
                c.store.set_state(bytes.fromhex(sent), "read")
                c.store.set_state(bytes.fromhex(read), "delivered")
            incoming("carol", carol_dm, proto.Text("Can you review the budget?"))
            incoming("carol", carol_dm, proto.Text("It's in the usual place."))
            # the queue stays: these are "sending" until a server is reachable
            c.store._conn.execute(
                "DELETE FROM queued_sends WHERE message_id != ?",
                (bytes.fromhex(waiting),),
            )

    asyncio.run(build())
