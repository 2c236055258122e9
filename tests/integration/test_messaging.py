"""End-to-end messaging against a real server process, with real crypto."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conftest import Org, arun, receive, send
from strongroom import client, proto
from strongroom.errors import RemoteProtocolError


def test_messages_reach_every_device_of_both_users(org: Org) -> None:
    alice_phone = org.activate("alice", "phone")
    alice_laptop = org.activate("alice", "laptop")
    bob_phone = org.activate("bob", "phone")

    result = arun(send(alice_phone, "bob", "hello bob"))
    assert len(result.devices) == 2  # bob's phone and alice's own laptop
    got, warnings = arun(receive(bob_phone))
    assert [(m.from_user, m.text) for m in got] == [("alice", "hello bob")]
    assert got[0].conversation == "dm:alice:bob"
    assert got[0].from_device == org.device_id(alice_phone)
    assert warnings == []

    arun(send(bob_phone, "alice", "hello alice"))
    laptop, _ = arun(receive(alice_laptop))
    assert [(m.from_user, m.text) for m in laptop] == [
        ("alice", "hello bob"),
        ("bob", "hello alice"),
    ]
    phone, _ = arun(receive(alice_phone))
    assert [m.text for m in phone] == ["hello alice"]


def test_sessions_survive_client_restarts(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")
    for i in range(3):  # each send and receive is a fresh process-like client
        arun(send(alice, "bob", f"a{i}"))
        arun(send(bob, "alice", f"b{i}"))
    got, warnings = arun(receive(bob))
    assert [m.text for m in got] == ["a0", "a1", "a2"]
    got, warnings = arun(receive(alice))
    assert [m.text for m in got] == ["b0", "b1", "b2"]
    assert warnings == []


def test_offline_device_gets_backlog_in_order_once(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")
    texts = [f"message {i}" for i in range(30)]

    async def send_all() -> None:
        async with client.Client(alice) as c:
            for text in texts:
                await c.send_text("bob", text)

    arun(send_all())
    got, _ = arun(receive(bob))
    assert [m.text for m in got] == texts
    again, _ = arun(receive(bob))
    assert again == []


def _inbox(org: Org) -> list[tuple[str, int, bytes, str, int, bytes]]:
    return [
        (r[0], r[1], bytes(r[2]), r[3], r[4], bytes(r[5]))
        for r in org.sql(
            "SELECT device_id, seq, envelope_id, sender, at, body FROM inbox"
            " ORDER BY device_id, seq"
        )
    ]


def _inject(
    org: Org, device_id: str, envelope_id: bytes, sender: str, body: bytes
) -> None:
    """What a hostile server (or whoever holds the database) can do: queue anything."""
    ((seq,),) = org.sql(
        "UPDATE device_seqs SET next_seq = next_seq + 1 WHERE device_id=? RETURNING next_seq",
        device_id,
    )
    org.sql(
        "INSERT INTO inbox(device_id, seq, envelope_id, sender, at, body) "
        "VALUES (?, ?, ?, ?, 0, ?)",
        device_id,
        seq,
        envelope_id,
        sender,
        body,
    )


def test_redelivery_is_shown_once_and_replays_are_refused(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")
    arun(send(alice, "bob", "pay 100 to carol"))
    (row,) = _inbox(org)
    device, _, envelope_id, sender, _, body = row
    got, _ = arun(receive(bob))
    assert [m.text for m in got] == ["pay 100 to carol"]

    # The same envelope again (at-least-once delivery): dropped silently.
    _inject(org, device, envelope_id, sender, body)
    got, warnings = arun(receive(bob))
    assert got == [] and warnings == []
    # and acknowledged, so it does not come back (alice's inbox holds bob's receipt);
    # a bounded read sends its last acknowledgement as it ends, so wait for the commit
    deadline = time.monotonic() + 10
    while [r for r in _inbox(org) if r[0] == device]:
        assert time.monotonic() < deadline, "the repeat was never acknowledged"
        time.sleep(0.02)

    # The same ciphertext under a fresh envelope id: a replay, refused with a warning.
    _inject(org, device, os.urandom(16), sender, body)
    got, warnings = arun(receive(bob))
    assert got == []
    assert len(warnings) == 1 and "dropped message" in warnings[0]


def test_reflection_back_to_the_sender_is_refused(org: Org) -> None:
    alice = org.activate("alice")
    org.activate("bob")
    arun(send(alice, "bob", "for bob only"))
    (row,) = _inbox(org)
    alice_id = org.device_id(alice)
    _inject(org, alice_id, os.urandom(16), alice_id, row[5])
    got, warnings = arun(receive(alice))
    assert got == []
    assert any("our own message back" in w for w in warnings)


def test_message_moved_to_another_device_is_refused(org: Org) -> None:
    alice = org.activate("alice")
    bob_phone = org.activate("bob", "phone")
    bob_laptop = org.activate("bob", "laptop")
    arun(send(alice, "bob", "for the phone"))
    phone_id = org.device_id(bob_phone)
    rows = [r for r in _inbox(org) if r[0] == phone_id]
    _inject(org, org.device_id(bob_laptop), os.urandom(16), rows[0][3], rows[0][5])
    got, warnings = arun(receive(bob_laptop))
    assert [m.text for m in got] == ["for the phone"]  # its own copy
    assert len(warnings) == 1 and "does not decrypt" in warnings[0]


def test_sender_skips_and_warns_about_uncertified_devices(org: Org) -> None:
    from strongroom import crypto

    alice = org.activate("alice")
    bob = org.activate("bob")
    # Whoever holds the database adds a device for bob, certified by a key that is not
    # the organisation's authority.
    rogue_authority = crypto.AuthorityKey.generate()
    rogue = crypto.DeviceAccount.generate()
    cert = rogue_authority.sign_certificate(
        proto.DeviceCertificate(
            org="Test Ministry",
            user="bob",
            device_id=rogue.device_id,
            ed25519=rogue.ed25519,
            curve25519=rogue.curve25519,
            name="definitely bob",
            issued_at=0,
        )
    )
    keys = rogue.new_one_time_keys(1)
    org.sql(
        "INSERT INTO devices(device_id, user_id, name, ed25519, curve25519, certificate,"
        " created_at) VALUES (?, 'bob', 'x', ?, ?, ?, 0)",
        rogue.device_id,
        rogue.ed25519,
        rogue.curve25519,
        proto.encode(cert),
    )
    org.sql("INSERT INTO device_seqs VALUES (?, 0)", rogue.device_id)  # may receive
    org.sql(
        "INSERT INTO one_time_keys VALUES (?, ?, ?, ?, 0)",
        rogue.device_id,
        keys[0].key_id,
        keys[0].key,
        keys[0].signature,
    )

    async def go() -> tuple[client.SendResult, list[str]]:
        async with client.Client(alice) as c:
            return await c.send_text("bob", "secret"), c.warnings

    result, warnings = arun(go())
    assert rogue.device_id not in result.devices
    assert result.devices == [org.device_id(bob)]
    assert any("not signed by this organisation's authority" in w for w in warnings)
    assert all(r[0] != rogue.device_id for r in _inbox(org))


def test_sender_refuses_a_certified_stranger_listed_as_the_recipient(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")
    eve = org.activate("eve")
    # The server lists eve's (genuinely certified) device among bob's devices.
    org.sql("UPDATE devices SET user_id='bob' WHERE device_id=?", org.device_id(eve))

    async def go() -> tuple[client.SendResult, list[str]]:
        async with client.Client(alice) as c:
            return await c.send_text("bob", "for bob's eyes"), c.warnings

    result, warnings = arun(go())
    assert result.devices == [org.device_id(bob)]
    assert any("skipped device" in w and "of eve" in w for w in warnings)


def test_device_refuses_a_server_of_another_organisation(
    org: Org, tmp_path: Path
) -> None:
    alice = org.activate("alice")
    other = Org(tmp_path / "other")
    with other.server:
        store = client.LocalStore.open(alice)
        try:
            with store.transaction():
                store.set_meta("server_url", other.url.encode())
        finally:
            store.close()
        with pytest.raises(RemoteProtocolError, match="does not belong"):
            arun(receive(alice))


def test_devices_replenish_their_one_time_keys(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")
    bob_id = org.device_id(bob)

    def count() -> int:
        ((n,),) = org.sql(
            "SELECT COUNT(*) FROM one_time_keys WHERE device_id=? AND fallback=0",
            bob_id,
        )
        return int(n)

    async def drain() -> None:
        async with client.Client(alice) as c:
            body = proto.encode_json(proto.ClaimRequest(devices=[bob_id]))
            for _ in range(45):
                await c._request("POST", "/v1/keys/claim", proto.ClaimResponse, body)

    assert count() == 50
    arun(drain())
    assert count() == 5
    arun(receive(bob))  # connecting tells bob it is low on keys
    assert count() == 55
    arun(send(alice, "bob", "new session, fresh key"))
    got, _ = arun(receive(bob))
    assert [m.text for m in got] == ["new session, fresh key"]
