"""Fleet control end to end: IT sets policy, wipes, revokes and disables; devices obey only
what the authority signed; every step is in an audit log whose damage `verify` names.

The hostile server is played by changing its database (``Org.sql``) between requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import msgspec
import pytest

from _cli import sr
from conftest import Org, arun, receive, send
from strongroom import client, proto
from strongroom.errors import DeviceWipedError, PolicyViolationError


def set_policy(org: Org, key: str, value: object, user: str | None = None) -> int:
    response = org.admin(
        "POST",
        "/v1/admin/policy",
        proto.encode_json(proto.PolicySet(key=key, value=value, user=user)),
    )
    assert response.status_code == 200, response.text
    return proto.decode_json(response.content, proto.PolicyView).version


def devices(org: Org) -> dict[str, proto.AdminDevice]:
    response = org.admin("GET", "/v1/admin/devices")
    assert response.status_code == 200, response.text
    rows = proto.decode_json(response.content, list[proto.AdminDevice])
    return {r.device_id: r for r in rows}


def actions(org: Org) -> list[tuple[str, str]]:
    response = org.admin("GET", "/v1/admin/audit")
    rows = proto.decode_json(response.content, list[proto.AuditView])
    return [(r.action, r.subject) for r in rows]


def policy_on(home: Path) -> client.PolicyInForce | None:
    store = client.LocalStore.open(home)
    try:
        return client.policy_in_force(store)
    finally:
        store.close()


def connect_once(home: Path) -> list[str]:
    """Connect, take what the server pushes, leave; the warnings raised."""
    _, warnings = arun(receive(home, 0.3))
    return warnings


def test_policy_is_signed_pushed_enforced_and_acknowledged(org: Org) -> None:
    alice = org.activate("alice")
    alice_id = org.device_id(alice)
    assert devices(org)[alice_id].compliance == "compliant (no policy)"
    version = set_policy(org, "retention_days", 30)
    assert devices(org)[alice_id].compliance == f"behind: enforces v0 of v{version}"

    # on connect: the device verifies, stores and acknowledges the policy
    assert connect_once(alice) == []
    shown = policy_on(alice)
    assert shown is not None and shown.version == version
    assert "messages are deleted from devices after 30 days" in shown.rules
    row = devices(org)[alice_id]
    assert (row.policy_version, row.compliance) == (version, "compliant")

    # live: a change reaches a connected device at once
    async def live() -> int:
        async with client.Client(alice) as c:
            listening = asyncio.create_task(c.receive(3.0))
            await asyncio.sleep(0.5)
            newer = await asyncio.to_thread(
                set_policy, org, "read_receipts_allowed", False
            )
            await listening
            assert c.rules.read_receipts_allowed is False
            return newer

    newer = arun(live())
    shown = policy_on(alice)
    assert shown is not None and shown.version == newer
    assert "read receipts are off" in shown.rules
    assert devices(org)[alice_id].policy_version == newer
    assert ("policy.set", "organisation") in actions(org)


def test_per_user_overrides_apply_to_that_user_only(sqlite_org: Org) -> None:
    org = sqlite_org
    alice = org.activate("alice")
    bob = org.activate("bob")
    set_policy(org, "attachments_allowed", True)
    set_policy(org, "attachments_allowed", False, user="bob")
    connect_once(alice)
    connect_once(bob)
    file = org.root / "report.txt"
    file.write_text("quarterly figures")

    async def upload(home: Path) -> None:
        async with client.Client(home) as c:
            await client.upload_file(c, file)

    arun(upload(alice))  # allowed
    with pytest.raises(PolicyViolationError, match="does not allow attachments"):
        arun(upload(bob))
    view = sr(
        "admin", "--data", org.data.path, "policy", "show", "--user", "bob", "--json"
    )
    shown = json.loads(view.stdout)
    assert shown["rules"]["attachments_allowed"] is False
    assert shown["overrides"] == ["attachments_allowed"]
    sr(
        "admin",
        "--data",
        org.data.path,
        "policy",
        "unset",
        "attachments_allowed",
        "--user",
        "bob",
    )
    connect_once(bob)
    arun(upload(bob))  # the organisation's rule again


def test_clients_obey_the_rules(sqlite_org: Org) -> None:
    org = sqlite_org
    alice = org.activate("alice")
    bob = org.activate("bob")
    set_policy(org, "default_timer_seconds", 3600)
    set_policy(org, "read_receipts_allowed", False)
    for home in (alice, bob):
        connect_once(home)
    arun(send(alice, "bob", "this one disappears"))
    ((expires_at,),) = org.sql(
        "SELECT expires_at FROM inbox WHERE expires_at IS NOT NULL"
    )
    assert expires_at is not None  # the policy's default timer travelled with it
    got, _ = arun(receive(bob))

    async def read(home: Path, ids: list[bytes]) -> int:
        async with client.Client(home) as c:
            return await c.mark_read(ids)

    assert arun(read(bob, [bytes.fromhex(got[0].id)])) == 0  # no read receipts

    set_policy(org, "min_client_version", "99.0")
    connect_once(alice)
    with pytest.raises(PolicyViolationError, match=r"needs client version 99\.0"):
        arun(send(alice, "bob", "from an old client"))

    set_policy(org, "max_devices_per_user", 1)
    home = org.root / "alice-laptop"
    with pytest.raises(Exception, match="allows 1 devices per user"):
        arun(client.activate(home, org.url, "alice", org.code("alice"), "laptop"))
    assert ("activation.refused", "alice") in actions(org)


def test_retention_deletes_old_messages_from_the_device(sqlite_org: Org) -> None:
    org = sqlite_org
    alice = org.activate("alice")
    bob = org.activate("bob")
    arun(send(alice, "bob", "old news"))
    arun(send(alice, "bob", "fresh news"))
    got, _ = arun(receive(bob))
    assert sorted(m.text for m in got) == ["fresh news", "old news"]
    # three days pass for the first message (the device's own clock, not the server's)
    three_days_ago = int(time.time() * 1000) - 3 * 86_400_000
    store = client.LocalStore.open(bob)
    with store.transaction():
        store._conn.execute(
            "UPDATE messages SET sent_at = ? WHERE text = 'old news'", (three_days_ago,)
        )
    store.close()
    set_policy(org, "retention_days", 1)
    connect_once(bob)
    store = client.LocalStore.open(bob)
    try:
        assert [m.text for m in store.messages()] == ["fresh news"]
    finally:
        store.close()


def test_a_replayed_older_policy_is_refused(org: Org) -> None:
    alice = org.activate("alice")
    set_policy(org, "retention_days", 30)
    newest = set_policy(org, "read_receipts_allowed", False)
    connect_once(alice)
    # the hostile server forgets the newest change and hands out the older, signed one
    org.sql("DELETE FROM policy_changes WHERE version = ?", newest)
    warnings = connect_once(alice)
    assert any("an old policy replayed" in w for w in warnings), warnings
    shown = policy_on(alice)
    assert shown is not None and shown.version == newest  # still enforces the newest


def wait_wiped(home: Path) -> str:
    async def go() -> str:
        with contextlib.suppress(DeviceWipedError):
            async with client.Client(home) as c:
                await c.receive(2.0)
            return "not wiped"
        return "wiped"

    return arun(go())


def test_wipe_reaches_an_offline_device_at_its_next_contact(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")
    marker = "wipe-marker-5f1e2d"
    arun(send(bob, "alice", marker))
    got, _ = arun(receive(alice))
    assert [m.text for m in got] == [marker]
    alice_id = org.device_id(alice)

    result = sr("admin", "--data", org.data.path, "device", "wipe", alice_id)
    assert "wipe ordered" in result.stdout
    assert devices(org)[alice_id].compliance == "wipe pending"
    # revoked at once: bob's client no longer encrypts to it
    with pytest.raises(Exception, match="no device"):
        arun(send(bob, "alice", "after the order"))

    assert wait_wiped(alice) == "wiped"
    assert not (alice / "device.db").exists() and not (alice / "device.key").exists()
    for path in alice.rglob("*"):
        if path.is_file():
            assert marker.encode() not in path.read_bytes()
    with pytest.raises(DeviceWipedError, match="wiped"):
        client.LocalStore.open(alice)
    assert devices(org)[alice_id].wiped_at is not None
    assert ("device.wiped", alice_id) in actions(org)
    listed = sr("admin", "--data", org.data.path, "device", "list")
    assert "wiped at" in listed.stdout


def test_wipe_reaches_a_connected_device_at_once(org: Org) -> None:
    alice = org.activate("alice")
    alice_id = org.device_id(alice)

    async def go() -> str:
        async with contextlib.AsyncExitStack() as stack:
            c = await stack.enter_async_context(client.Client(alice))
            listening = asyncio.create_task(c.receive(20.0))
            await asyncio.sleep(0.5)
            await asyncio.to_thread(
                org.admin, "POST", f"/v1/admin/devices/{alice_id}/wipe"
            )
            try:
                await asyncio.wait_for(listening, 10)
            except DeviceWipedError as exc:
                return exc.reason
        return "not wiped"

    assert arun(go()) == "ordered by IT"
    assert not (alice / "device.key").exists()


def test_a_wipe_order_for_another_device_does_nothing(sqlite_org: Org) -> None:
    org = sqlite_org
    alice = org.activate("alice")
    bob = org.activate("bob")
    bob_id, alice_id = org.device_id(bob), org.device_id(alice)
    org.admin("POST", f"/v1/admin/devices/{bob_id}/wipe")
    # the hostile server hands bob's (genuine) order to alice
    ((order,),) = org.sql(
        "SELECT wipe_order FROM device_fleet WHERE device_id=?", bob_id
    )
    org.sql(
        "INSERT INTO device_fleet(device_id, wipe_order, wipe_ordered_at) VALUES (?, ?, 1)",
        alice_id,
        order,
    )
    org.sql("UPDATE devices SET revoked_at=1 WHERE device_id=?", alice_id)
    warnings = connect_once(alice)
    assert any("wipe order for device " + bob_id in w for w in warnings), warnings
    assert (alice / "device.key").exists()

    # and a forged one (its signature broken) is ignored too
    forged = msgspec.msgpack.decode(order, type=proto.Signed)
    body = msgspec.msgpack.decode(forged.body)
    body["device_id"] = alice_id
    bad = proto.Signed(msgspec.msgpack.encode(body), forged.signature)
    org.sql(
        "UPDATE device_fleet SET wipe_order=? WHERE device_id=?",
        proto.encode(bad),
        alice_id,
    )
    warnings = connect_once(alice)
    assert any("not signed by this organisation's authority" in w for w in warnings)
    assert (alice / "device.key").exists()


def test_disabling_a_user_revokes_devices_and_takes_them_out_of_groups(
    org: Org,
) -> None:
    alice = org.activate("alice")
    org.activate("bob")
    carol = org.activate("carol")

    async def make_group() -> str:
        async with client.Client(alice) as c:
            return await c.create_group("Team", ["bob", "carol"])

    group = arun(make_group())
    sr("admin", "--data", org.data.path, "user", "disable", "carol")
    assert all(d.revoked_at for d in devices(org).values() if d.user == "carol")

    async def group_send() -> tuple[client.SendResult, list[str]]:
        async with client.Client(alice) as c:
            result = await c.send_group_text(group, "carol is gone")
            return result, list(c.warnings)

    result, warnings = arun(group_send())
    assert org.device_id(carol) not in result.devices
    assert len(result.devices) == 1  # bob's phone only
    assert any("carol was disabled by IT" in w for w in warnings), warnings
    users = json.loads(
        sr("admin", "--data", org.data.path, "user", "list", "--json").stdout
    )
    assert next(u for u in users if u["user"] == "carol")["disabled_at"]
    code = org.admin("POST", "/v1/admin/users/carol/code", b"{}")
    assert code.status_code == 403 and "disabled" in code.text


def test_a_forged_disabled_record_is_ignored(sqlite_org: Org) -> None:
    org = sqlite_org
    alice = org.activate("alice")
    org.activate("bob")
    org.sql(
        "INSERT INTO disabled_users(user_id, record, at) VALUES ('bob', ?, 1)",
        proto.encode(proto.Signed(b"\x81\xa1x\x01", bytes(64))),
    )

    async def go() -> tuple[client.SendResult, list[str]]:
        async with client.Client(alice) as c:
            return await c.send_text("bob", "still here"), list(c.warnings)

    result, warnings = arun(go())
    assert len(result.devices) == 1
    assert any("forged user-disabled record" in w for w in warnings)


def test_revocation_rotates_the_group_key(sqlite_org: Org) -> None:
    org = sqlite_org
    alice = org.activate("alice")
    org.activate("bob")
    laptop = org.activate("bob", "laptop")

    async def make_group() -> str:
        async with client.Client(alice) as c:
            return await c.create_group("Pair", ["bob"])

    group = arun(make_group())

    def session_of(text: str) -> str:
        async def go() -> client.SendResult:
            async with client.Client(alice) as c:
                return await c.send_group_text(group, text)

        result = arun(go())
        ((body,),) = org.sql(
            "SELECT body FROM shared_bodies WHERE envelope_id=?",
            bytes.fromhex(result.id),
        )
        return proto.decode_megolm_envelope(bytes(body)).session_id

    before = session_of("one")
    assert session_of("two") == before  # no change, no rotation
    sr("admin", "--data", org.data.path, "device", "revoke", org.device_id(laptop))
    assert session_of("three") != before


def test_the_audit_log_records_everything_and_verify_names_damage(org: Org) -> None:
    alice = org.activate("alice")
    org.activate("bob")
    set_policy(org, "retention_days", 7)
    sr("admin", "--data", org.data.path, "device", "revoke", org.device_id(alice))
    got = actions(org)
    for expected in (
        ("user.add", "alice"),
        ("code.issue", "alice"),
        ("device.activate", "alice"),
        ("policy.set", "organisation"),
        ("device.revoke", org.device_id(alice)),
    ):
        assert expected in got
    shown = sr("admin", "--data", org.data.path, "audit", "show", "--since", "1h")
    assert "device.revoke" in shown.stdout
    ok = sr("admin", "--data", org.data.path, "audit", "verify")
    assert f"verifies: {len(got)} entries" in ok.stdout
    out = org.root / "audit.jsonl"
    sr("admin", "--data", org.data.path, "audit", "export", out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["seq"] for line in lines] == list(range(len(got)))
    # no secrets in the log: the activation code is not there
    assert "code" not in json.dumps(lines[1]["details"])

    def verify() -> str:
        result = sr("admin", "--data", org.data.path, "audit", "verify", check=False)
        assert result.returncode == 1
        return result.stderr

    # edit one row: its signature no longer verifies
    ((entry,),) = org.sql("SELECT entry FROM audit_log WHERE seq = 2")
    org.sql(
        "UPDATE audit_log SET entry = ? WHERE seq = 2",
        bytes(entry).replace(b"alice", b"mallo"),
    )
    assert "entry 2: its signature does not verify" in verify()
    org.sql("UPDATE audit_log SET entry = ? WHERE seq = 2", bytes(entry))
    # delete one row: the next one names the gap
    saved = org.sql("SELECT seq, entry, hash, at FROM audit_log WHERE seq = 3")[0]
    org.sql("DELETE FROM audit_log WHERE seq = 3")
    assert "entry 4" in verify()
    org.sql("INSERT INTO audit_log(seq, entry, hash, at) VALUES (?, ?, ?, ?)", *saved)
    assert sr("admin", "--data", org.data.path, "audit", "verify").returncode == 0
    # reorder two rows
    org.sql("UPDATE audit_log SET seq = -1 WHERE seq = 1")
    org.sql("UPDATE audit_log SET seq = 1 WHERE seq = 2")
    org.sql("UPDATE audit_log SET seq = 2 WHERE seq = -1")
    damage = verify()
    assert "entry 1" in damage and "entry 2" in damage


def test_a_policy_that_requires_a_passcode_gets_one(sqlite_org: Org) -> None:
    org = sqlite_org
    org.add_user("dora")
    set_policy(org, "passcode_required", True)
    set_policy(org, "passcode_min_length", 8)
    set_policy(org, "passcode_max_attempts", 3)
    home = org.root / "dora-phone"
    cheap = {"STRONGROOM_TEST_PASSCODE_KDF": "1,8,1"}
    too_short = sr(
        "device", "activate", "--home", home, "--server", org.url, "--user", "dora",
        "--code", org.code("dora"), check=False,
        env={**cheap, "STRONGROOM_NEW_PASSCODE": "short"},
    )  # fmt: skip
    assert too_short.returncode == 1
    assert "at least 8" in too_short.stderr
    # still activated, but no command runs until a passcode is set
    refused = sr("device", "info", "--home", home, check=False, env=cheap)
    assert "requires a passcode of at least 8" in refused.stderr
    env = {**cheap, "STRONGROOM_NEW_PASSCODE": "long enough 1"}
    sr("device", "info", "--home", home, env=env)
    key = json.loads((home / "device.key").read_text())
    assert key["max_tries"] == 3  # the policy's limit, bound into the key file
    locked = sr("device", "info", "--home", home, check=False, env=cheap)
    assert "STRONGROOM_PASSCODE" in locked.stderr
    sr(
        "device",
        "info",
        "--home",
        home,
        env={**cheap, "STRONGROOM_PASSCODE": "long enough 1"},
    )
