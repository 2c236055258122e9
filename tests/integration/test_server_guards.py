"""What the server refuses, and what it never keeps: credentials, bad input, crashes."""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec
import pytest
import websockets

from conftest import Org, arun, receive, send
from strongroom import client, crypto, proto
from strongroom.errors import ServerRefusedError


def _account(home: Path) -> crypto.DeviceAccount:
    store = client.LocalStore.open(home)
    try:
        return crypto.DeviceAccount.from_pickle(
            store.meta_text("account"), store.pickle_key
        )
    finally:
        store.close()


async def _raw_stream(org: Org) -> websockets.ClientConnection:
    return await websockets.connect(org.url.replace("http", "ws") + "/v1/stream")


async def _hello(
    ws: websockets.ClientConnection, device_id: str, account: crypto.DeviceAccount
) -> proto.ServerFrame:
    challenge = proto.decode_server_frame(await ws.recv())  # type: ignore[arg-type]
    assert isinstance(challenge, proto.Challenge)
    signature = account.sign(
        proto.hello_signing_input(challenge.nonce, device_id, challenge.server)
    )
    await ws.send(
        proto.encode_frame(proto.Hello(device_id=device_id, signature=signature))
    )
    return proto.decode_server_frame(await ws.recv())  # type: ignore[arg-type]


def test_a_device_cannot_open_another_devices_inbox(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")
    arun(send(alice, "bob", "for bob"))

    async def go() -> proto.ServerFrame:
        ws = await _raw_stream(org)
        try:
            # Alice's key signs a hello that claims to be bob's device.
            return await _hello(ws, org.device_id(bob), _account(alice))
        finally:
            await ws.close()

    answer = arun(go())
    assert isinstance(answer, proto.Error) and answer.code == "auth_failed"
    got, _ = arun(receive(bob))
    assert [m.text for m in got] == ["for bob"]  # still waiting for the real bob


def test_revoked_device_is_refused_and_skipped_by_senders(org: Org) -> None:
    alice = org.activate("alice")
    bob_phone = org.activate("bob", "phone")
    bob_laptop = org.activate("bob", "laptop")
    laptop_id = org.device_id(bob_laptop)
    response = org.admin("POST", f"/v1/admin/devices/{laptop_id}/revoke")
    assert response.status_code == 200

    with pytest.raises(ServerRefusedError, match="revoked") as refused:
        arun(receive(bob_laptop))
    assert refused.value.code == "device_revoked"
    result = arun(send(alice, "bob", "after revocation"))
    assert result.devices == [org.device_id(bob_phone)]
    got, _ = arun(receive(bob_phone))
    assert [m.text for m in got] == ["after revocation"]


def test_revocation_closes_a_live_stream(org: Org) -> None:
    bob = org.activate("bob")
    bob_id = org.device_id(bob)

    async def go() -> proto.ServerFrame:
        ws = await _raw_stream(org)
        try:
            welcome = await _hello(ws, bob_id, _account(bob))
            assert isinstance(welcome, proto.Welcome)
            await asyncio.to_thread(
                org.admin, "POST", f"/v1/admin/devices/{bob_id}/revoke"
            )
            return proto.decode_server_frame(await ws.recv())  # type: ignore[arg-type]
        finally:
            await ws.close()

    frame = arun(go())
    assert isinstance(frame, proto.Error) and frame.code == "device_revoked"


def _signed_headers(
    home: Path, method: str, path: str, body: bytes = b""
) -> dict[str, str]:
    account = _account(home)
    stamp = str(time.time_ns() // 1_000_000)
    nonce = base64.urlsafe_b64encode(os.urandom(12)).decode()
    signature = account.sign(
        proto.http_signing_input(method, path, account.device_id, stamp, nonce, body)
    )
    return {
        "strongroom-device": account.device_id,
        "strongroom-time": stamp,
        "strongroom-nonce": nonce,
        "strongroom-signature": base64.b64encode(signature).decode(),
    }


def test_admin_and_device_credentials_do_not_mix(org: Org) -> None:
    alice = org.activate("alice")
    as_device = httpx.get(
        org.url + "/v1/admin/users",
        headers=_signed_headers(alice, "GET", "/v1/admin/users"),
    )
    assert as_device.status_code == 401
    assert msgspec.json.decode(as_device.content)["code"] == "not_authorized"

    as_admin = httpx.get(
        org.url + "/v1/keys/user/alice",
        headers={"authorization": f"Bearer {org.token}"},
    )
    assert as_admin.status_code == 401
    assert msgspec.json.decode(as_admin.content)["code"] == "auth_failed"

    signed = _signed_headers(alice, "GET", "/v1/keys/user/alice")
    assert httpx.get(org.url + "/v1/keys/user/alice", headers=signed).status_code == 200
    replayed = httpx.get(org.url + "/v1/keys/user/alice", headers=signed)
    assert replayed.status_code == 401  # the same signed request twice: refused


def _with_password(url: str) -> tuple[str, str]:
    """``url`` with a password in it, and the password.  The test database trusts
    local connections, so any password opens it; one already in the URL is kept."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    password = f"db-password-{uuid.uuid4().hex}"
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username or 'postgres'}:{password}@{host}"
    return urlunsplit(parts._replace(netloc=netloc)), password


def test_no_plaintext_in_data_directory_or_logs(org: Org) -> None:
    """Message text is nowhere on the server, the activation code only as a hash, and
    the admin token and the database password are not in its logs."""
    marker = f"MARKER-{uuid.uuid4().hex}"
    credentials = {"the admin token": org.token}
    if org.backend.database is not None:
        url, credentials["the database password"] = _with_password(org.backend.database)
        org.server.stop()
        org.server.env = {"STRONGROOM_DATABASE_URL": url}
        org.server.start()
    org.add_user("alice")
    code = org.code("alice")
    alice = org.root / "alice-phone"
    arun(client.activate(alice, org.url, "alice", code, "phone"))
    bob = org.activate("bob")
    arun(send(alice, "bob", f"the password is {marker}"))
    arun(send(bob, "alice", f"got it: {marker}"))
    got, _ = arun(receive(bob))
    assert marker in got[0].text  # the devices do read it
    arun(send(alice, "bob", f"still waiting {marker}"))  # and one stays queued
    contents = org.database_contents()  # SQLite or PostgreSQL, table by table
    assert len(contents) > 1000
    assert marker.encode() not in contents
    # the server keeps a hash of the activation code, never the code
    codes = [code.encode(), code.replace("-", "").encode()]
    assert not any(c in contents for c in codes)
    org.server.stop()
    checked = 0
    logged = b""
    for path in org.data.path.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            checked += 1
            assert marker.encode() not in content, path
            assert marker.encode("utf-16-le") not in content, path
            assert not any(c in content for c in codes), path
            if path.parent == org.data.logs:
                logged += content
    assert checked >= 4  # config, keys, database (and WAL), logs
    assert b"serving" in logged and b"stopped" in logged
    for what, secret in credentials.items():
        assert secret.encode() not in logged, f"{what} is in the server's logs"
    # The devices' own stores are encrypted at rest too.
    for home in (alice, bob):
        for path in home.rglob("*"):
            assert marker.encode() not in path.read_bytes(), path


def test_bad_frames_fail_alone(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")

    async def bad(payload: bytes) -> proto.ServerFrame | None:
        ws = await _raw_stream(org)
        try:
            await ws.recv()  # challenge
            try:
                # An oversized frame may be refused while it is still being
                # written, so the close can surface from send() or recv().
                await ws.send(payload)
                return proto.decode_server_frame(await ws.recv())  # type: ignore[arg-type]
            except websockets.ConnectionClosed:
                return None
        finally:
            await ws.close()

    async def go() -> list[proto.ServerFrame | None]:
        answers = [
            await bad(b"\xc1 not msgpack"),
            await bad(proto.encode_frame(proto.Ack(upto=5))),  # before the handshake
            await bad(msgspec.msgpack.encode({"t": "hello", "device_id": "x"})),
            await bad(b"\x00" * (3 * 1024 * 1024)),  # over the WebSocket size limit
        ]
        # Meanwhile the server keeps serving everyone else.
        await send(alice, "bob", "still here")
        return answers

    answers = arun(go())
    assert [a.code if isinstance(a, proto.Error) else None for a in answers[:3]] == [
        "bad_frame",
        "bad_frame",
        "bad_frame",
    ]
    assert answers[3] is None  # closed by the transport's size limit
    got, _ = arun(receive(bob))
    assert [m.text for m in got] == ["still here"]


def test_bad_http_bodies_get_clear_errors(org: Org) -> None:
    for body, status, code in (
        (b"{not json", 400, "bad_request"),
        (b'{"user": "alice"}', 400, "bad_request"),
        (b"x" * (300 * 1024), 413, "frame_too_large"),
    ):
        response = httpx.post(org.url + "/v1/activation/start", content=body)
        assert response.status_code == status
        assert msgspec.json.decode(response.content)["code"] == code
    assert httpx.get(org.url + "/healthz").status_code == 200


def test_accepted_message_survives_a_server_crash(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")
    arun(send(alice, "bob", "before the crash"))  # accepted = committed
    org.server.kill()  # SIGKILL: no clean shutdown
    org.server.start()
    got, _ = arun(receive(bob))
    assert [m.text for m in got] == ["before the crash"]
    again, _ = arun(receive(bob))
    assert again == []
