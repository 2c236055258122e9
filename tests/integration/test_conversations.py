"""What people do in a conversation besides text: replies, edits, reactions, receipts and
disappearing messages, end to end against a real server."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import Backend, Org, arun, receive
from strongroom import client, proto


def everything(home: Path) -> tuple[list[client.Received], list[str]]:
    return arun(receive(home, everything=True))


def state_of(home: Path, message_id: str) -> str:
    store = client.LocalStore.open(home)
    try:
        message = store.get_message(bytes.fromhex(message_id))
        assert message is not None
        return message.state
    finally:
        store.close()


def stored_texts(home: Path) -> list[str]:
    store = client.LocalStore.open(home)
    try:
        return [m.text for m in store.messages()]
    finally:
        store.close()


def test_delivery_and_read_receipts_move_the_state_forward(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")

    async def send() -> client.SendResult:
        async with client.Client(alice) as c:
            return await c.send_text("bob", "are you there?")

    sent = arun(send())
    assert state_of(alice, sent.id) == "sent"
    got, _ = arun(receive(bob))  # bob's device sends "delivered" when it has it
    (receipt,) = [m for m in everything(alice)[0] if m.kind == "receipt"]
    assert (receipt.receipt, receipt.targets) == ("delivered", [sent.id])
    assert state_of(alice, sent.id) == "delivered"

    async def read() -> int:
        async with client.Client(bob) as c:
            return await c.mark_read([bytes.fromhex(got[0].id)])

    assert arun(read()) == 1
    (receipt,) = everything(alice)[0]
    assert (receipt.kind, receipt.receipt) == ("receipt", "read")
    assert state_of(alice, sent.id) == "read"


def test_read_receipts_can_be_switched_off_per_conversation(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")

    async def send() -> None:
        async with client.Client(alice) as c:
            await c.send_text("bob", "private")

    arun(send())
    got, _ = arun(receive(bob))

    async def read_quietly() -> int:
        async with client.Client(bob) as c:
            c.store.set_read_receipts("dm:alice:bob", False)
            return await c.mark_read([bytes.fromhex(got[0].id)])

    assert arun(read_quietly()) == 0
    assert [m.receipt for m in everything(alice)[0]] == ["delivered"]


def test_replies_edits_and_reactions(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")

    async def alice_writes() -> client.SendResult:
        async with client.Client(alice) as c:
            return await c.send_text("bob", "meet at 5")

    first = arun(alice_writes())
    arun(receive(bob))

    async def bob_answers() -> None:
        async with client.Client(bob) as c:
            await c.send_text("alice", "ok", reply_to=bytes.fromhex(first.id))
            await c.send("alice", proto.Reaction(bytes.fromhex(first.id), "👍"))

    async def alice_edits() -> None:
        async with client.Client(alice) as c:
            await c.send("bob", proto.Edit(bytes.fromhex(first.id), "meet at 6"))

    arun(bob_answers())
    arun(alice_edits())
    shown = [m for m in everything(alice)[0] if m.kind != "receipt"]
    assert [(m.kind, m.text, m.reply_to) for m in shown] == [
        ("text", "ok", first.id),
        ("reaction", "", None),
    ]
    assert (shown[1].emoji, shown[1].target) == ("👍", first.id)
    (edit,) = [m for m in everything(bob)[0] if m.kind == "edit"]
    assert (edit.target, edit.text) == (first.id, "meet at 6")
    assert "meet at 6" in stored_texts(bob) and "meet at 5" not in stored_texts(bob)


def test_only_the_author_can_edit_a_message(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")

    async def alice_writes() -> client.SendResult:
        async with client.Client(alice) as c:
            return await c.send_text("bob", "the original")

    first = arun(alice_writes())

    async def bob_forges() -> None:
        async with client.Client(bob) as c:
            await c.send("alice", proto.Edit(bytes.fromhex(first.id), "rewritten"))

    arun(receive(bob))
    arun(bob_forges())
    _, warnings = everything(alice)
    assert any("it is not their message" in w for w in warnings)
    assert "the original" in stored_texts(alice)


def test_disappearing_messages_go_everywhere(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")

    async def set_timer() -> None:
        async with client.Client(alice) as c:
            await c.set_timer(1, to_user="bob")
            await c.send_text("bob", "this will vanish")

    arun(set_timer())
    got, _ = everything(bob)
    assert (got[0].kind, got[0].timer) == ("timer", 1)
    vanishing = [m for m in got if m.kind == "text"]
    assert vanishing[0].expires_at is not None
    assert "this will vanish" in stored_texts(bob)
    time.sleep(1.2)
    everything(bob)  # the device deletes what has expired as it runs
    everything(alice)
    assert "this will vanish" not in stored_texts(bob)
    assert "this will vanish" not in stored_texts(alice)


def test_the_server_drops_undelivered_copies_at_expiry(
    tmp_path: Path, backend: Backend
) -> None:
    organisation = Org(tmp_path, backend)
    config = organisation.data.config
    config.write_text(config.read_text() + "prune_seconds = 0.2\n")
    with organisation.server:
        alice = organisation.activate("alice")
        bob = organisation.activate("bob")

        async def send() -> client.SendResult:
            async with client.Client(alice) as c:
                await c.send_text("bob", "kept")
                return await c.send_text("bob", "gone soon", expires_in=1)

        sent = arun(send())

        def waiting() -> int:
            ((n,),) = organisation.sql(
                "SELECT COUNT(*) FROM inbox WHERE envelope_id = ?",
                bytes.fromhex(sent.id),
            )
            return int(n)

        assert waiting() == 1  # bob is away
        deadline = time.monotonic() + 10
        while waiting():
            assert time.monotonic() < deadline, "the expired copy was never dropped"
            time.sleep(0.1)
        got, _ = arun(receive(bob))
        assert [m.text for m in got] == ["kept"]
