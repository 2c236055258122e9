"""The organisation under test: a real server child, real activated devices, real sessions.

Rules:

1. The server is ``strongroom serve`` in a child process (``cli._local.LocalServer``) on a
   fresh data directory.  With a PostgreSQL URL the server and ``migrate`` read it from
   ``STRONGROOM_DATABASE_URL``, in a schema of their own that is dropped afterwards.
2. Devices are activated through the real PAKE and certificate path with the SDK's
   ``client.activate``, many at once; after that the load generator holds each device's
   account in memory (``Identity``) and never opens its SQLCipher store again.
3. Olm sessions are made through the real key directory: the initiator's SDK ``Client``
   looks the peer up, verifies its certificate and claims a one-time key.  One message
   each way is then exchanged in memory, so both ends ratchet normally (type-1 messages,
   the steady state of a conversation) before anything is measured.
4. Pre-encrypted traffic is one distinct Olm ciphertext per message, in the payload
   format the SDK sends (``proto.Payload`` with counters), encoded once as a ``Send``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from strongroom import client, crypto, proto, server

from ._wire import Identity

if TYPE_CHECKING:
    from strongroom.cli._local import LocalServer as _LocalServer

__all__ = [
    "Lane",
    "Org",
    "Pair",
    "filler_text",
    "make_pairs",
    "organisation",
    "sample_frame",
]

_FILLER = b"abcdefghijklmnopqrstuvwxyz0123456789"


def filler_text(size: int) -> str:
    """``size`` bytes of ASCII text, the same for every message of that size."""
    return (_FILLER * (size // len(_FILLER) + 1))[:size].decode()


class Org:
    """A running server with its admin credential, and the devices activated so far."""

    def __init__(self, root: Path, data: server.DataDir, srv: _LocalServer) -> None:
        self.root = root
        self.data = data
        self.server = srv
        self.url = srv.url
        self.ws_url = srv.url.replace("http", "ws", 1) + "/v1/stream"
        self.token = data.read_admin_token()
        self.server_name = data.load_authority().public.fingerprint().replace(" ", "")
        self.devices: list[Identity] = []
        self._users = 0

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    async def _admin(
        self,
        http: httpx.AsyncClient,
        path: str,
        body: proto.UserAdd | proto.CodeRequest,
    ) -> bytes:
        response = await http.post(path, content=proto.encode_json(body))
        if response.status_code != 200:
            raise RuntimeError(f"admin {path}: HTTP {response.status_code}")
        return response.content

    async def enrol(self, count: int, concurrency: int) -> tuple[list[Identity], float]:
        """Activate ``count`` new devices (one user each); returns them and the seconds
        the activations took (users and codes are issued before the clock starts)."""
        names = [f"bench{self._users + i:06d}" for i in range(count)]
        self._users += count
        codes: dict[str, str] = {}
        headers = {"authorization": f"Bearer {self.token}"}
        limit = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=60.0
        ) as http:

            async def issue(user: str) -> None:
                async with limit:
                    await self._admin(http, "/v1/admin/users", proto.UserAdd(user, ""))
                    issued = await self._admin(
                        http,
                        f"/v1/admin/users/{user}/code",
                        proto.CodeRequest(3600),
                    )
                    codes[user] = proto.decode_json(issued, proto.CodeIssued).code

            await asyncio.gather(*(issue(u) for u in names))

        # Idle pooled connections are dropped after 1 s, well inside the server's 5 s
        # keep-alive: on a loaded machine an activation's client-side PAKE can outlast
        # the keep-alive, and a connection the server is closing just as it is reused
        # fails the activation with a read error.
        shared = _SharedTransport(
            httpx.AsyncHTTPTransport(limits=httpx.Limits(keepalive_expiry=1.0))
        )

        async def activate(user: str) -> Identity:
            async with limit:
                home = self.root / "devices" / user
                done = await client.activate(
                    home, self.url, user, codes[user], "bench", transport=shared
                )
            return Identity(
                user, done.device_id, _account(home), self.server_name, str(home)
            )

        started = time.perf_counter()
        try:
            made = await asyncio.gather(*(activate(u) for u in names))
        finally:
            await shared.inner.aclose()
        elapsed = time.perf_counter() - started
        self.devices.extend(made)
        return list(made), elapsed


class _SharedTransport(httpx.AsyncBaseTransport):
    """One connection pool for every activation.

    Without it ``client.activate`` builds an ``httpx.AsyncClient`` per call, and with it a
    default TLS context (the CA bundle parsed again) even for ``http://``: about a third
    of the load generator's time per activation, which is SDK cost, not server cost.
    """

    def __init__(self, inner: httpx.AsyncHTTPTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        return None  # each activation closes its client; the pool outlives them


def _account(home: Path) -> crypto.DeviceAccount:
    store = client.LocalStore.open(home)
    try:
        return client.Device(store, lambda: 0).account()
    finally:
        store.close()


@contextlib.contextmanager
def organisation(database: str | None, keep: bool = False) -> Iterator[Org]:
    """A fresh organisation and its server; everything is removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="strongroom-bench-"))
    schema: str | None = None
    saved = os.environ.get("STRONGROOM_DATABASE_URL")
    try:
        if database is not None:
            schema = f"sr_bench_{secrets.token_hex(6)}"
            asyncio.run(_pg(database, f"CREATE SCHEMA {schema}"))
            sep = "&" if "?" in database else "?"
            os.environ["STRONGROOM_DATABASE_URL"] = f"{database}{sep}schema={schema}"
        # Imported here: the CLI package imports this one for `strongroom bench`.
        from strongroom.cli._local import LocalServer

        data = server.init_data_dir(root / "server", "Bench Ministry")
        asyncio.run(server.migrate(data))
        with LocalServer(data.path) as srv:
            yield Org(root, data, srv)
    finally:
        if database is not None:
            if saved is None:
                os.environ.pop("STRONGROOM_DATABASE_URL", None)
            else:
                os.environ["STRONGROOM_DATABASE_URL"] = saved
            if schema is not None:
                with contextlib.suppress(Exception):
                    asyncio.run(
                        _pg(database, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                    )
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


async def _pg(url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


# --- sessions and traffic -------------------------------------------------------------------


class Lane:
    """One direction of one conversation: its Olm session end and what it will send."""

    __slots__ = ("counter", "frames", "payload_size", "recipient", "sender", "session")

    def __init__(
        self, sender: Identity, recipient: Identity, session: crypto.OlmSession
    ) -> None:
        self.sender = sender
        self.recipient = recipient
        self.session = session  # the sender's end; it also decrypts what comes back
        self.counter = 1
        self.frames: list[tuple[bytes, bytes]] = []
        self.payload_size = 0

    def encrypt(self, text: str) -> tuple[bytes, bytes]:
        """One new message: (envelope id, encoded ``Send`` frame)."""
        me, peer = self.sender, self.recipient
        message_id = os.urandom(16)
        self.counter += 1
        payload = proto.Payload(
            sender_user=me.user,
            sender_device=me.device_id,
            recipient_user=peer.user,
            recipient_device=peer.device_id,
            conversation=proto.conversation_for(me.user, peer.user),
            message_id=message_id,
            counter=self.counter,
            sent_at=time.time_ns() // 1_000_000,
            content=proto.Text(body=text),
        )
        kind, ciphertext = self.session.encrypt(proto.encode(payload))
        body = proto.encode(proto.OlmEnvelope(me.curve25519, kind, ciphertext))
        self.payload_size = len(body)
        send = proto.Send(
            id=message_id, copies=[proto.Copy(device=peer.device_id, body=body)]
        )
        return message_id, proto.encode_frame(send)

    def prepare(self, count: int, size: int) -> None:
        """Pre-encrypt ``count`` messages of ``size`` bytes of text."""
        text = filler_text(size)
        self.frames = [self.encrypt(text) for _ in range(count)]

    def open(self, deliver: proto.Deliver) -> bool:
        """Decrypt and check a delivery that came back on this lane's session."""
        try:
            envelope = proto.decode_olm_envelope(deliver.body)
            plain = self.session.decrypt(envelope.type, envelope.ciphertext)
            payload = proto.decode_payload(plain)
        except Exception:
            return False
        return (
            payload.message_id == deliver.id
            and payload.recipient_device == self.sender.device_id
            and envelope.sender_key == self.recipient.curve25519
        )


class Pair:
    """Two lanes that share one Olm session: ``a`` -> ``b`` and ``b`` -> ``a``."""

    def __init__(self, ab: Lane, ba: Lane) -> None:
        self.ab = ab
        self.ba = ba


async def _outbound(me: Identity, peer: Identity) -> crypto.OlmSession:
    """A session from ``me`` to ``peer`` made the SDK's way: directory, verify, claim."""
    async with client.Client(Path(me.home)) as sdk:
        entries = await sdk.directory(peer.user)
        peers = sdk.device.recipients(entries, {peer.user})
        # ``_ensure_sessions`` is the SDK's private step between the directory and
        # encryption; the benchmark needs the session itself, not an encrypted text.
        ready = await sdk._ensure_sessions(peers)
        if not ready:
            raise RuntimeError(f"no session with {peer.device_id}: {sdk.warnings}")
        _, pickle = sdk.store.sessions_for(peer.device_id)[0]
        return crypto.OlmSession.from_pickle(pickle, sdk.store.pickle_key)


async def _pair(a: Identity, b: Identity, limit: asyncio.Semaphore) -> Pair:
    async with limit:
        session_a = await _outbound(a, b)
    return _warm(a, b, session_a)


def _warm(a: Identity, b: Identity, session_a: crypto.OlmSession) -> Pair:
    """One message each way, in memory, so that both ends send type-1 messages."""
    ab = Lane(a, b, session_a)
    _, first = ab.encrypt("hello")
    # The recipient opens the pre-key message with its account, as ``Device.open`` does.
    send = proto.decode_client_frame(first)
    assert isinstance(send, proto.Send)
    envelope = proto.decode_olm_envelope(send.copies[0].body)
    session_b, _ = b.account.create_inbound(a.curve25519, envelope.ciphertext)
    ba = Lane(b, a, session_b)
    _, reply = ba.encrypt("hello back")
    back = proto.decode_client_frame(reply)
    assert isinstance(back, proto.Send)
    envelope = proto.decode_olm_envelope(back.copies[0].body)
    session_a.decrypt(envelope.type, envelope.ciphertext)
    return Pair(ab, ba)


async def make_pairs(
    devices: list[tuple[Identity, Identity]], concurrency: int = 16
) -> list[Pair]:
    """Sessions for each (a, b), through the server's key directory."""
    limit = asyncio.Semaphore(concurrency)
    return list(await asyncio.gather(*(_pair(a, b, limit) for a, b in devices)))


def sample_frame(size: int) -> int:
    """The size of a pre-encrypted ``Send`` frame for ``size`` bytes of text (for echo)."""
    a = crypto.DeviceAccount.generate()
    b = crypto.DeviceAccount.generate()
    key = b.new_one_time_keys(1)[0]
    fake_a = Identity("a", a.device_id, a, "", "")
    fake_b = Identity("b", b.device_id, b, "", "")
    pair = _warm(fake_a, fake_b, a.create_outbound(b.curve25519, key.key))
    return len(pair.ab.encrypt(filler_text(size))[1])
