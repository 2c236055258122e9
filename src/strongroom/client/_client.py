"""The asyncio driver: HTTP (httpx) and the stream (websockets) around the device core.

All network I/O of a device happens here, and all foreign network exceptions are mapped
here: connection failures become ``ClientError`` with a sentence naming the server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import httpx
import msgspec
import websockets
from websockets.asyncio.client import ClientConnection

from strongroom import proto
from strongroom.errors import (
    ClientError,
    RemoteProtocolError,
    ServerRefusedError,
)

from ._device import Device, Received
from ._store import LocalStore, Peer

__all__ = ["CLIENT_VERSION", "Client", "SendResult", "http_error", "tls_context"]

CLIENT_VERSION = "strongroom/0.1.0"
T = TypeVar("T")
_KEY_LOW_WATER = 20
_KEY_BATCH = 50
_ACK_IDLE = 0.05
_ACK_EVERY = 64


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def tls_context(ca: str | None) -> ssl.SSLContext | None:
    if not ca:
        return None
    return ssl.create_default_context(cafile=ca)


def http_error(response: httpx.Response) -> ServerRefusedError:
    try:
        body = msgspec.json.decode(response.content, type=proto.ErrorBody)
        return ServerRefusedError(body.detail, body.code)
    except proto.DECODE_ERRORS:
        return ServerRefusedError(
            f"server answered HTTP {response.status_code}", "internal"
        )


class SendResult(msgspec.Struct, frozen=True):
    id: str
    devices: list[str]
    skipped: list[str]


class Client:
    """An activated device, connected on demand.  Use as ``async with Client(home) as c``."""

    def __init__(self, home: Path, clock: Callable[[], int] = wall_clock_ms) -> None:
        self.home = home
        self.store = LocalStore.open(home)
        self.device = Device(self.store, clock)
        ca = self.store.get_meta("ca")
        self._tls = tls_context(ca.decode() if ca else None)
        self._http = httpx.AsyncClient(
            base_url=self.device.server_url, timeout=30.0, verify=self._tls or True
        )
        self._ws: ClientConnection | None = None
        self._conn: proto.StreamConnection | None = None
        self.welcome: proto.Welcome | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
            self._ws = None
        await self._http.aclose()
        self.store.close()

    @property
    def warnings(self) -> list[str]:
        return self.device.warnings

    # --- HTTP -----------------------------------------------------------------------------

    async def signed(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One HTTP request signed by this device; any status.  Raises ``ClientError``
        only if the server cannot be reached."""
        stamp = str(self.device.clock())
        nonce = base64.urlsafe_b64encode(os.urandom(18)).decode()
        signature = self.device.account().sign(
            proto.http_signing_input(
                method, path, self.device.device_id, stamp, nonce, body
            )
        )
        sent = {
            "strongroom-device": self.device.device_id,
            "strongroom-time": stamp,
            "strongroom-nonce": nonce,
            "strongroom-signature": base64.b64encode(signature).decode(),
            "content-type": content_type,
            **(headers or {}),
        }
        try:
            return await self._http.request(method, path, content=body, headers=sent)
        except httpx.HTTPError as exc:
            raise ClientError(
                f"cannot reach the server at {self.device.server_url}"
            ) from exc

    async def _request(
        self, method: str, path: str, kind: type[T], body: bytes = b""
    ) -> T:
        response = await self.signed(method, path, body)
        if response.status_code != 200:
            raise http_error(response)
        return proto.decode_json(response.content, kind)

    async def directory(self, user: str) -> list[proto.DeviceEntry]:
        found = await self._request("GET", f"/v1/keys/user/{user}", proto.UserDevices)
        return found.devices

    async def _learn_sender(self, device_id: str) -> None:
        try:
            entry = await self._request(
                "GET", f"/v1/keys/device/{device_id}", proto.DeviceEntry
            )
        except ServerRefusedError:
            return
        with self.store.transaction():
            self.device.verify_entry(entry)

    async def _ensure_sessions(self, peers: list[Peer]) -> list[Peer]:
        missing = [p for p in peers if self.device.needs_session(p)]
        if missing:
            body = proto.encode_json(
                proto.ClaimRequest(devices=[p.device_id for p in missing])
            )
            claimed = await self._request(
                "POST", "/v1/keys/claim", proto.ClaimResponse, body
            )
            for peer in missing:
                key = claimed.keys.get(peer.device_id)
                if key is None:
                    self.device.warn(
                        f"skipped device {peer.device_id}: it has no keys left"
                    )
                    continue
                self.device.establish(peer, key)
        return [p for p in peers if not self.device.needs_session(p)]

    async def upload_keys(self, count: int = _KEY_BATCH) -> int:
        body = proto.encode_json(self.device.new_keys(count))
        result = await self._request("POST", "/v1/keys/upload", proto.KeyCount, body)
        return result.count

    # --- the stream -----------------------------------------------------------------------

    async def connect(self) -> proto.Welcome:
        """Open and authenticate the stream (once).  Raises ``ClientError``."""
        if self._ws is not None and self.welcome is not None:
            return self.welcome
        url = self.device.server_url.replace("http", "ws", 1) + "/v1/stream"
        try:
            self._ws = await websockets.connect(
                url, ssl=self._tls, max_size=2 * proto.MAX_FRAME_BYTES, open_timeout=15
            )
        except (OSError, websockets.WebSocketException, TimeoutError) as exc:
            raise ClientError(
                f"cannot reach the server at {self.device.server_url}"
            ) from exc
        self._conn = proto.StreamConnection(proto.Role.CLIENT)
        challenge = await self._next_frame()
        if not isinstance(challenge, proto.Challenge):
            raise RemoteProtocolError("the server did not start with a challenge")
        await self._send_frame(self.device.hello(challenge, CLIENT_VERSION))
        welcome = await self._next_frame()
        if isinstance(welcome, proto.Error):
            raise ServerRefusedError(welcome.detail, welcome.code)
        if not isinstance(welcome, proto.Welcome):
            raise RemoteProtocolError("the server did not welcome us")
        self.welcome = welcome
        if welcome.otk_count < _KEY_LOW_WATER:
            await self.upload_keys()
        return welcome

    async def _send_frame(self, frame: proto.ClientFrame) -> None:
        assert self._ws is not None and self._conn is not None
        try:
            await self._ws.send(self._conn.send(frame))
        except websockets.WebSocketException as exc:
            raise ClientError("the connection to the server was lost") from exc

    async def _next_frame(self, timeout: float | None = None) -> proto.ServerFrame:
        assert self._ws is not None and self._conn is not None
        try:
            data = await asyncio.wait_for(self._ws.recv(), timeout)
        except websockets.ConnectionClosed as exc:
            raise ClientError("the server closed the connection") from exc
        if isinstance(data, str):
            raise RemoteProtocolError("the server sent a text frame")
        frame = self._conn.receive(data)
        assert not isinstance(frame, proto.ClientFrame)
        if isinstance(frame, proto.Error) and frame.ref is None:
            raise ServerRefusedError(frame.detail, frame.code)
        return frame

    # --- verbs ------------------------------------------------------------------------------

    async def send_text(self, to_user: str, text: str) -> SendResult:
        """Encrypt to every certified device of ``to_user`` and our own other devices.

        Returns once the server has durably accepted the message.  Raises ``ClientError``
        if there is nobody to encrypt to, or the server refuses.
        """
        if not proto.valid_user_id(to_user):
            raise ClientError(f"{to_user!r} is not a valid user id")
        entries = await self.directory(to_user)
        if to_user != self.device.user:
            entries += await self.directory(self.device.user)
        wanted = {to_user, self.device.user}
        peers = await self._ensure_sessions(self.device.recipients(entries, wanted))
        if not any(p.user == to_user for p in peers) and to_user != self.device.user:
            raise ClientError(
                f"{to_user} has no device this device can trust and reach"
            )
        if not peers:
            raise ClientError("no other device to send to")
        send = self.device.encrypt_text(to_user, peers, text)
        await self.connect()
        results = await self.flush_outbox()
        accepted = results[send.id]
        return SendResult(
            id=send.id.hex(),
            devices=[c.device for c in send.copies],
            skipped=accepted.skipped,
        )

    async def flush_outbox(self) -> dict[bytes, proto.Accepted]:
        """Send everything waiting in the outbox and wait until each is accepted."""
        await self.connect()
        decoder = msgspec.msgpack.Decoder(proto.ClientFrame)
        waiting: dict[bytes, proto.Send] = {}
        for message_id, encoded in self.store.outbox():
            send = decoder.decode(encoded)
            assert isinstance(send, proto.Send)
            waiting[message_id] = send
            await self._send_frame(send)
        results: dict[bytes, proto.Accepted] = {}
        while len(results) < len(waiting):
            frame = await self._next_frame()
            if isinstance(frame, proto.Accepted):
                results[frame.id] = frame
                with self.store.transaction():
                    self.store.remove_outbox(frame.id)
                for device_id in frame.skipped:
                    self.device.warn(
                        f"server did not deliver to {device_id} (unknown/revoked)"
                    )
            elif isinstance(frame, proto.Error):
                raise ServerRefusedError(frame.detail, frame.code)
        return results

    async def _handle(self, deliver: proto.Deliver) -> Received | None:
        sender = self.device.unknown_sender(deliver)
        if sender is not None:
            await self._learn_sender(sender)
        return self.device.open(deliver)

    async def messages(self, wait: float | None) -> AsyncIterator[Received]:
        """Yield messages as they are verified; acknowledge them once stored.

        Ends ``wait`` seconds after the backlog that was waiting at connect time has been
        read (never, with ``wait=None``).
        """
        welcome = await self.connect()
        assert self._conn is not None
        backlog = welcome.pending
        handled = 0
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            if deadline is None and handled >= backlog and wait is not None:
                deadline = loop.time() + wait
            timeout = _ACK_IDLE
            if deadline is not None:
                timeout = min(timeout, max(0.0, deadline - loop.time()))
            try:
                frame = await self._next_frame(timeout)
            except TimeoutError:
                if self._conn.last_delivered > self._conn.last_acked:
                    await self._send_frame(proto.Ack(upto=self._conn.last_delivered))
                if deadline is not None and loop.time() >= deadline:
                    return
                continue
            if isinstance(frame, proto.Deliver):
                handled += 1
                received = await self._handle(frame)
                if self._conn.last_delivered - self._conn.last_acked >= _ACK_EVERY:
                    await self._send_frame(proto.Ack(upto=self._conn.last_delivered))
                if received is not None:
                    yield received

    async def receive(self, wait: float) -> list[Received]:
        return [m async for m in self.messages(wait)]
