"""One device's WebSocket stream: authenticate, accept sends, deliver, take acknowledgements.

Rules:

1. The protocol rules live in ``proto.StreamConnection``; this module only does I/O around
   it.  Every outgoing frame goes through ``conn.send`` under ``_send_lock``, so the state
   machine sees frames in exactly the order they hit the socket.
2. A device is served only after it signed this connection's fresh challenge with the key
   its certificate names, and only while it is not revoked (a revocation closes the stream).
3. ``Accepted`` is sent only after the store committed the envelope.  Sends are handled as
   concurrent tasks so that one commit can carry many of them (group commit).
4. Delivery reads the store from the device's cursor; bus wake-ups only say "look again".
   At most ``delivery_window`` deliveries are unacknowledged at once.
5. A broken rule ends this connection alone, with an ``Error`` frame and a close code; the
   text of an internal error never reaches the device.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import MutableMapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from strongroom import proto
from strongroom.crypto import verify_ed25519
from strongroom.errors import (
    ProtocolError,
    RemoteProtocolError,
    SignatureError,
    StoreError,
)

from ._context import ServerContext
from .bus import BusEvent
from .store import DeviceRow

__all__ = ["StreamHandler"]

log = logging.getLogger("strongroom.server.stream")
_E = proto.ErrorCode
_FETCH = 256


class _Closed(Exception):
    """The peer went away; nothing more to do."""


class _Session:
    def __init__(self, ctx: ServerContext, ws: WebSocket) -> None:
        self.ctx = ctx
        self.ws = ws
        self.conn = proto.StreamConnection(proto.Role.SERVER)
        self.send_lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self.window_open = asyncio.Event()
        self.revoked = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.device: DeviceRow | None = None

    async def send(self, frame: proto.ServerFrame) -> None:
        async with self.send_lock:
            data = self.conn.send(frame)
            await self.ws.send_bytes(data)

    async def receive(self) -> bytes:
        message: MutableMapping[str, Any] = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise _Closed
        data = message.get("bytes")
        if data is None:
            raise RemoteProtocolError(
                "text frames are not part of the protocol", "bad_frame"
            )
        assert isinstance(data, bytes)
        return data

    # --- handshake ----------------------------------------------------------------------

    async def handshake(self) -> DeviceRow:
        nonce = os.urandom(32)
        await self.send(proto.Challenge(nonce=nonce, server=self.ctx.server_name))
        try:
            data = await asyncio.wait_for(
                self.receive(), self.ctx.config.limits.hello_timeout_seconds
            )
        except TimeoutError as exc:
            raise RemoteProtocolError("no hello in time", "timeout") from exc
        hello = self.conn.receive(data)
        assert isinstance(hello, proto.Hello)  # the state machine allows nothing else
        if hello.version != proto.PROTOCOL_VERSION:
            raise RemoteProtocolError(
                f"protocol version {hello.version} is not spoken here",
                "unsupported_version",
            )
        device = await self.ctx.store.get_device(hello.device_id)
        if device is None:
            raise RemoteProtocolError("unknown device", "auth_failed")
        try:
            verify_ed25519(
                device.ed25519,
                proto.hello_signing_input(nonce, hello.device_id, self.ctx.server_name),
                hello.signature,
            )
        except SignatureError as exc:
            raise RemoteProtocolError(
                "challenge signature does not verify", "auth_failed"
            ) from exc
        if device.revoked_at is not None:
            raise RemoteProtocolError(
                "this device has been revoked by IT", "device_revoked"
            )
        now = self.ctx.clock()
        await self.ctx.store.touch_device(device.device_id, now, hello.client_version)
        await self.send(
            proto.Welcome(
                device_id=device.device_id,
                user=device.user,
                otk_count=await self.ctx.store.count_keys(device.device_id),
                server_time=now,
                pending=await self.ctx.store.pending(device.device_id),
            )
        )
        return device

    # --- the open stream ---------------------------------------------------------------

    def on_bus(self, event: BusEvent) -> None:
        if event == "deliver":
            self.wake.set()
        elif event == "revoked":
            self.revoked.set()
            self.wake.set()

    async def read_loop(self, device: DeviceRow) -> None:
        while True:
            frame = self.conn.receive(await self.receive())
            if isinstance(frame, proto.Send | proto.SendShared):
                task = asyncio.create_task(self.accept(device, frame))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            elif isinstance(frame, proto.Ack):
                with self.ctx.metrics.store_ack.time():
                    await self.ctx.store.ack(device.device_id, frame.upto)
                self.window_open.set()
            elif isinstance(frame, proto.Ping):
                await self.send(proto.Pong(n=frame.n))

    async def accept(
        self, device: DeviceRow, send: proto.Send | proto.SendShared
    ) -> None:
        ctx = self.ctx
        try:
            with ctx.metrics.store_accept.time():
                if isinstance(send, proto.Send):
                    result = await ctx.store.accept(
                        device.device_id,
                        send.id,
                        [(c.device, c.body) for c in send.copies],
                        ctx.clock(),
                        expires_at=send.expires_at,
                    )
                else:
                    result = await ctx.store.accept_shared(
                        device.device_id,
                        send.id,
                        send.devices,
                        send.body,
                        ctx.clock(),
                        expires_at=send.expires_at,
                    )
        except StoreError:
            log.exception("store refused a send from %s", device.device_id)
            with contextlib.suppress(Exception):
                await self.send(
                    proto.Error(
                        code=_E.UNAVAILABLE, detail="not stored, try again", ref=send.id
                    )
                )
            return
        if result.delivered_to:
            ctx.metrics.envelopes_in.inc(len(result.delivered_to))
            with ctx.metrics.bus_publish.time():
                await ctx.bus.publish("deliver", result.delivered_to)
        with contextlib.suppress(Exception):
            await self.send(
                proto.Accepted(id=send.id, at=ctx.clock(), skipped=result.skipped)
            )

    async def deliver_loop(self, device: DeviceRow) -> None:
        window = self.ctx.config.limits.delivery_window
        cursor = 0
        while not self.revoked.is_set():
            if self.conn.unacked >= window:
                self.window_open.clear()
                if self.conn.unacked >= window:
                    await self.window_open.wait()
                continue
            self.wake.clear()
            with self.ctx.metrics.store_fetch.time():
                rows = await self.ctx.store.fetch(
                    device.device_id, cursor, min(_FETCH, window - self.conn.unacked)
                )
            if not rows:
                await self.wake.wait()
                continue
            for row in rows:
                await self.send(
                    proto.Deliver(
                        seq=row.seq,
                        id=row.envelope_id,
                        sender=row.sender,
                        at=row.at,
                        body=row.body,
                        shared=row.shared,
                    )
                )
                cursor = row.seq
            self.ctx.metrics.envelopes_out.inc(len(rows))
        raise RemoteProtocolError(
            "this device has been revoked by IT", "device_revoked"
        )


class StreamHandler:
    """The ``/v1/stream`` WebSocket endpoint."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    async def handle(self, ws: WebSocket) -> None:
        await ws.accept()
        session = _Session(self.ctx, ws)
        subscription = None
        try:
            device = await session.handshake()
            session.device = device
            subscription = self.ctx.bus.subscribe(device.device_id, session.on_bus)
            self.ctx.metrics.connected.inc()
            try:
                await self._serve(session, device)
            finally:
                self.ctx.metrics.connected.dec()
        except (_Closed, WebSocketDisconnect):
            pass
        except ProtocolError as exc:
            await self._fail(session, exc.code, str(exc))
        except Exception:
            log.exception("stream handler failed")
            await self._fail(session, _E.INTERNAL, "internal error")
        finally:
            if subscription is not None:
                subscription.cancel()
            # Sends already received finish committing even though the device went away:
            # it will resend them with the same ids and the store answers "duplicate".
            if session.tasks:
                await asyncio.gather(*session.tasks, return_exceptions=True)

    async def _serve(self, session: _Session, device: DeviceRow) -> None:
        reader = asyncio.create_task(session.read_loop(device))
        deliverer = asyncio.create_task(session.deliver_loop(device))
        done, pending = await asyncio.wait(
            {reader, deliverer}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for task in done:
            task.result()  # re-raise what ended the connection

    async def _fail(self, session: _Session, code: str, detail: str) -> None:
        device = session.device.device_id if session.device else "unauthenticated"
        log.info("closing stream of %s: %s", device, code)
        with contextlib.suppress(Exception):
            session.conn.close()
            await session.ws.send_bytes(
                proto.encode_frame(proto.Error(code=code, detail=detail))
            )
        with contextlib.suppress(Exception):
            await session.ws.close(code=4000 if code != _E.INTERNAL else 1011)
