"""End-to-end groups against a real server: members read, others cannot, a hostile server
that tampers with the membership it hands out is noticed, the key is replaced on
revocation and by count, and a message to a large group is stored once.

The server's part is done the way a hostile server would: by changing its database
(``Org.sql``) between the members' requests.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from conftest import Org, arun, receive
from strongroom import client, proto
from strongroom.bench import _fleet as bench_fleet
from strongroom.errors import ClientError


def create(home: Path, name: str, members: list[str]) -> str:
    async def go() -> str:
        async with client.Client(home) as c:
            return await c.create_group(name, members)

    return arun(go())


def group_send(
    home: Path, group: str, text: str
) -> tuple[client.SendResult, list[str]]:
    async def go() -> tuple[client.SendResult, list[str]]:
        async with client.Client(home) as c:
            return await c.send_group_text(group, text), list(c.warnings)

    return arun(go())


def change(home: Path, group: str, action: proto.GroupAction, user: str) -> None:
    async def go() -> None:
        async with client.Client(home) as c:
            await c.change_group(group, action, user)

    arun(go())


def texts(home: Path) -> tuple[list[tuple[str, str | None]], list[str]]:
    got, warnings = arun(receive(home))
    return [(m.text, m.group) for m in got], warnings


def group_state(home: Path, group: str) -> client.GroupState:
    async def go() -> client.GroupState:
        async with client.Client(home) as c:
            return await c.sync_group(group)

    return arun(go())


def test_members_read_a_group_and_the_body_is_stored_once(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")
    carol = org.activate("carol")
    org.activate("dave")  # not a member
    group = create(alice, "Embassy", ["bob", "carol"])
    result, warnings = group_send(alice, group, "the convoy leaves at six")
    assert warnings == []
    assert len(result.devices) == 2  # bob's and carol's phones
    # one ciphertext for every member device, stored once
    ((shared,),) = org.sql(
        "SELECT COUNT(*) FROM shared_bodies WHERE envelope_id = ?",
        bytes.fromhex(result.id),
    )
    assert shared == 1
    for home in (bob, carol):
        got, warnings = texts(home)
        assert got == [("the convoy leaves at six", group)]
        assert warnings == []
    state = group_state(bob, group)
    assert state.members == {"alice", "bob", "carol"}
    assert state.admins == {"alice"}


def test_a_removed_member_reads_nothing_sent_after(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")
    carol = org.activate("carol")
    group = create(alice, "Embassy", ["bob", "carol"])
    group_send(alice, group, "before")
    assert texts(carol)[0] == [("before", group)]
    change(alice, group, proto.GroupAction.REMOVE, "carol")
    result, _ = group_send(alice, group, "after carol left")
    carol_id = org.device_id(carol)
    assert carol_id not in result.devices
    # Even if the server hands carol the new ciphertext, she has no key for it.
    ((seq,),) = org.sql(
        "UPDATE device_seqs SET next_seq = next_seq + 1 WHERE device_id=? RETURNING next_seq",
        carol_id,
    )
    org.sql(
        "INSERT INTO inbox(device_id, seq, envelope_id, sender, at, body) "
        "SELECT ?, ?, envelope_id, sender, at, NULL FROM shared_bodies "
        "WHERE envelope_id = ?",
        carol_id,
        seq,
        bytes.fromhex(result.id),
    )
    got, warnings = texts(carol)
    assert got == []
    assert any("no key for it ever arrived" in w for w in warnings)
    assert ("after carol left", group) in texts(bob)[0]


def test_a_late_device_reads_new_messages_not_old_ones(org: Org) -> None:
    alice = org.activate("alice")
    org.activate("bob", "phone")
    group = create(alice, "Embassy", ["bob"])
    group_send(alice, group, "before the laptop")
    laptop = org.activate("bob", "laptop")
    result, _ = group_send(alice, group, "after the laptop")
    assert org.device_id(laptop) in result.devices  # the key was rotated to include it
    got, _ = texts(laptop)
    assert got == [("after the laptop", group)]


def test_members_change_membership_and_admins_promote(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")
    org.activate("carol")
    group = create(alice, "Embassy", ["bob"])
    change(alice, group, proto.GroupAction.PROMOTE, "bob")
    change(bob, group, proto.GroupAction.ADD, "carol")
    state = group_state(alice, group)
    assert state.members == {"alice", "bob", "carol"}
    assert state.admins == {"alice", "bob"}


def test_the_server_adding_a_member_is_refused(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")
    eve = org.activate("eve")
    group = create(alice, "Embassy", ["bob"])
    group_state(bob, group)
    # eve (a certified device, but no admin) appends herself; the server accepts it
    # because it cannot judge entries.  Done here through her own client's signing.

    rows = org.sql(
        "SELECT entry FROM group_changes WHERE group_id=? ORDER BY seq", group
    )

    async def forge() -> None:
        async with client.Client(eve) as c:
            entry = proto.decode_msgpack(bytes(rows[-1][0]), proto.Signed)
            head = proto.decode_group_change(entry.body)
            forged = proto.GroupChange(
                group=group,
                seq=head.seq + 1,
                prev=proto.entry_hash(entry),
                action=proto.GroupAction.ADD,
                subject="eve",
                members=sorted({*head.members, "eve"}),
                admins=head.admins,
                name=head.name,
                author="eve",
                author_device=c.device.device_id,
                at=c.device.clock(),
            )
            signed = client.sign_change(forged, c.device.account())
            await c._request(
                "POST",
                f"/v1/groups/{group}/changes",
                proto.GroupChanges,
                proto.encode_json(proto.GroupPost(signed)),
            )

    arun(forge())
    result, warnings = group_send(alice, group, "for members only")
    assert org.device_id(eve) not in result.devices
    assert any("eve is not a member" in w for w in warnings), warnings
    got, _ = texts(eve)
    assert got == []
    assert group_state(bob, group).members == {"alice", "bob"}


def test_the_server_adding_a_device_to_a_member_is_skipped(org: Org) -> None:
    from strongroom import crypto

    alice = org.activate("alice")
    bob = org.activate("bob")
    group = create(alice, "Embassy", ["bob"])
    rogue_authority = crypto.AuthorityKey.generate()
    rogue = crypto.DeviceAccount.generate()
    cert = rogue_authority.sign_certificate(
        proto.DeviceCertificate(
            org="Test Ministry",
            user="bob",
            device_id=rogue.device_id,
            ed25519=rogue.ed25519,
            curve25519=rogue.curve25519,
            name="bob's other phone",
            issued_at=0,
        )
    )
    org.sql(
        "INSERT INTO devices(device_id, user_id, name, ed25519, curve25519, certificate,"
        " created_at) VALUES (?, 'bob', 'x', ?, ?, ?, 0)",
        rogue.device_id,
        rogue.ed25519,
        rogue.curve25519,
        proto.encode(cert),
    )
    result, warnings = group_send(alice, group, "hello group")
    assert result.devices == [org.device_id(bob)]
    assert any("not signed by this organisation's authority" in w for w in warnings)


def test_a_replayed_or_reordered_membership_is_refused(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")
    carol = org.activate("carol")
    group = create(alice, "Embassy", ["bob", "carol"])
    change(alice, group, proto.GroupAction.REMOVE, "carol")
    assert group_state(bob, group).members == {"alice", "bob"}
    # The server goes back to the membership before the removal (carol back in).
    org.sql("DELETE FROM group_changes WHERE group_id=? AND seq=1", group)

    async def bob_view() -> tuple[client.GroupState, list[str]]:
        async with client.Client(bob) as c:
            return await c.sync_group(group), list(c.warnings)

    state, warnings = arun(bob_view())
    assert state.members == {"alice", "bob"}  # never rewound
    assert any("no longer offers entry 1" in w for w in warnings)
    result, _ = group_send(bob, group, "carol is gone")
    assert org.device_id(carol) not in result.devices

    # Reordered: the server swaps two entries' places.
    group2 = create(alice, "Second", ["bob"])
    change(alice, group2, proto.GroupAction.ADD, "carol")
    change(alice, group2, proto.GroupAction.REMOVE, "carol")
    rows = org.sql(
        "SELECT seq, entry FROM group_changes WHERE group_id=? ORDER BY seq", group2
    )
    org.sql("DELETE FROM group_changes WHERE group_id=? AND seq>0", group2)
    for (seq, _), (_, entry) in zip(rows[1:], reversed(rows[1:]), strict=True):
        org.sql(
            "INSERT INTO group_changes(group_id, seq, entry, hash, at) "
            "VALUES (?, ?, ?, ?, 0)",
            group2,
            seq,
            bytes(entry),
            bytes(32),
        )

    dave = org.activate("dave")

    async def dave_sees() -> list[str]:
        async with client.Client(dave) as c:
            with contextlib.suppress(client.GroupChainError):
                await c.sync_group(group2)
            return list(c.warnings)

    assert any("refused a membership change" in w for w in arun(dave_sees()))


def test_a_fork_is_noticed_through_the_head_inside_messages(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")
    carol = org.activate("carol")
    org.activate("dave")
    org.activate("erin")
    group = create(alice, "Embassy", ["bob", "carol"])
    change(alice, group, proto.GroupAction.PROMOTE, "bob")
    group_state(carol, group)
    # bob adds erin; the server then drops his entry and takes alice's (adding dave)
    # at the same place, so bob and carol hold different chains.
    change(bob, group, proto.GroupAction.ADD, "erin")
    org.sql("DELETE FROM group_changes WHERE group_id=? AND seq=2", group)
    change(alice, group, proto.GroupAction.ADD, "dave")
    assert group_state(carol, group).members == {"alice", "bob", "carol", "dave"}

    async def bob_sends() -> None:
        async with client.Client(bob) as c:
            # bob's own client refuses the server's version: a fork of what he signed
            state = c.groups.state(group)
            assert state is not None
            await c.send_group_text(group, "hello all")

    arun(bob_sends())
    _, warnings = texts(carol)
    assert any("different membership" in w for w in warnings)


def test_a_withheld_removal_still_reaches_the_members(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")
    carol = org.activate("carol")
    group = create(alice, "Embassy", ["bob", "carol"])
    group_send(alice, group, "hello")
    texts(bob)
    change(alice, group, proto.GroupAction.REMOVE, "carol")
    # The server hides the removal from everyone who asks for the chain ...
    org.sql("DELETE FROM group_changes WHERE group_id=? AND seq=1", group)
    # ... but alice's new key carried the signed removal to bob over Olm.
    texts(bob)
    result, warnings = group_send(bob, group, "without carol")
    assert org.device_id(carol) not in result.devices, warnings
    got, _ = texts(carol)
    assert ("without carol", group) not in got, got


def test_a_group_message_nobody_can_read_is_refused_and_not_queued(
    sqlite_org: Org,
) -> None:
    alice = sqlite_org.activate("alice")
    sqlite_org.add_user("bob")  # bob has no device yet
    group = create(alice, "Waiting room", ["bob"])

    async def go() -> int:
        async with client.Client(alice) as c:
            with pytest.raises(ClientError, match="nobody else in this group"):
                await c.send_group_text(group, "hello?")
            renamed = await c.change_group(
                group, proto.GroupAction.RENAME, "alice", name="Lobby"
            )
            assert renamed.name == "Lobby"
            return len(c.store.outbox())

    assert arun(go()) == 0  # nothing left to fail on every later flush


def megolm_session(org: Org, result: client.SendResult) -> str:
    """The Megolm session a group message was sealed in, as the server stored it."""
    ((body,),) = org.sql(
        "SELECT body FROM shared_bodies WHERE envelope_id = ?",
        bytes.fromhex(result.id),
    )
    return proto.decode_megolm_envelope(bytes(body)).session_id


def inbox_devices(org: Org, result: client.SendResult) -> set[str]:
    rows = org.sql(
        "SELECT device_id FROM inbox WHERE envelope_id = ?", bytes.fromhex(result.id)
    )
    return {str(device) for (device,) in rows}


def test_a_revoked_device_gets_no_copy_and_the_key_is_replaced(sqlite_org: Org) -> None:
    """What the sender's device decides (the server's half of revocation runs on both
    backends in test_fleet.py)."""
    org = sqlite_org
    alice = org.activate("alice")
    phone = org.activate("bob", "phone")
    laptop = org.activate("bob", "laptop")
    carol = org.activate("carol")
    group = create(alice, "Embassy", ["bob", "carol"])
    first, _ = group_send(alice, group, "before the laptop was lost")
    lost = org.device_id(laptop)
    assert lost in first.devices
    revoked = org.admin("POST", f"/v1/admin/devices/{lost}/revoke")
    assert revoked.status_code == 200, revoked.text

    second, _ = group_send(alice, group, "after the laptop was lost")
    assert lost not in second.devices
    assert lost not in inbox_devices(org, second)
    assert inbox_devices(org, second) == {org.device_id(phone), org.device_id(carol)}
    # a new Megolm session, shared only with the devices still trusted
    assert megolm_session(org, second) != megolm_session(org, first)
    for home in (phone, carol):
        got, _ = texts(home)
        assert ("after the laptop was lost", group) in got


def test_the_key_is_replaced_after_a_hundred_messages(sqlite_org: Org) -> None:
    """The count half of the rotation policy (Matrix's default, 100 messages); the
    policy's own decisions are unit-tested in tests/client/test_groups.py."""
    org = sqlite_org
    alice = org.activate("alice")
    bob = org.activate("bob")
    group = create(alice, "Embassy", ["bob"])

    async def send_many() -> list[client.SendResult]:
        async with client.Client(alice) as c:
            return [await c.send_group_text(group, f"#{i}") for i in range(101)]

    sessions = [megolm_session(org, result) for result in arun(send_many())]
    assert len(set(sessions[:100])) == 1
    assert sessions[100] != sessions[0]
    got, warnings = texts(bob)
    assert [text for text, _ in got] == [f"#{i}" for i in range(101)]
    assert warnings == []


def test_a_message_to_two_hundred_members_is_stored_once(sqlite_org: Org) -> None:
    """Fan-out at a size where storing the body per device would show: 199 members.

    The members are activated the benchmark's way (the real PAKE and certificates,
    many at once over one connection pool), the cheapest honest way to 199 devices;
    SQLite only, as the store's half of this is in the conformance suite.
    """
    org = sqlite_org
    alice = org.activate("alice")
    fleet = bench_fleet.Org(org.root, org.data, org.server)
    members, _ = arun(fleet.enrol(199, concurrency=16))
    group = create(alice, "Everyone", [m.user for m in members])
    result, warnings = group_send(alice, group, "all hands at nine")
    assert warnings == []
    assert sorted(result.devices) == sorted(m.device_id for m in members)
    envelope = bytes.fromhex(result.id)
    bodies = org.sql("SELECT body FROM shared_bodies WHERE envelope_id = ?", envelope)
    assert len(bodies) == 1
    rows = org.sql("SELECT device_id, body FROM inbox WHERE envelope_id = ?", envelope)
    assert sorted(device for device, _ in rows) == sorted(result.devices)
    assert {body for _, body in rows} == {None}  # each row points at the one body
    for member in (members[0], members[-1]):
        got, warnings = texts(Path(member.home))
        assert got == [("all hands at nine", group)]
        assert warnings == []
