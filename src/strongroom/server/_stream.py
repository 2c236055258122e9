"""One device's WebSocket stream: authenticate, accept sends, deliver, take acknowledgements.

Rules:

1. The protocol rules live in ``proto.StreamConnection``; this module only does I/O around
   it.  Every outgoing frame goes through ``_Session.emit``, which is synchronous (the
   frame is encoded, checked and written in one step), so the state machine sees frames in
   exactly the order they reach the socket, with no lock.  Frames written in one turn of
   the event loop leave in one system call (``_websocket``).  Frames from the device are
   handled one by one as the socket's data is parsed (``_on_message``), with no task per
   frame.
2. A device is served only after it signed this connection's fresh challenge with the key
   its certificate names, and only while it is not revoked: a revocation stops deliveries
   at once and closes the stream.
3. ``Accepted`` is sent only after the store committed the envelope.  A send is handed to
   the store at once and answered from the store's future (no task per send), so that
   one commit carries every send that arrived meanwhile (group commit).
4. Deliveries follow ``_delivery``: committed envelopes reach a caught-up stream from
   memory through the router, and a stream that may be behind reads the store.  At most
   ``delivery_window`` deliveries are unacknowledged at once.
5. Acknowledgements are written behind the stream's back: at most one store ``ack`` is in
   flight per stream, carrying the highest ``upto`` received meanwhile.  An ack that does
   not reach the store costs a redelivery (at-least-once), never a message.
6. IT's orders (``_fleet``): right after ``Welcome`` the device gets the signed policy in
   force for its user, and again whenever IT changes it (bus ``control``); it answers
   ``Enforcing``.  A device with a pending wipe order is let in (though revoked) for
   the order alone: no deliveries, sends refused; it answers ``Wiped``.  A wipe ordered
   while the device is connected reaches it at once.
7. A broken rule ends this connection alone, with an ``Error`` frame and a close code; the
   text of an internal error never reaches the device.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import MutableMapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from strongroom import proto
from strongroom.crypto import verify_ed25519
from strongroom.errors import (
    ConflictError,
    ProtocolError,
    RemoteProtocolError,
    SignatureError,
    StoreError,
)

from ._context import ServerContext
from ._delivery import Deliveries
from ._websocket import frame_link
from .store import AcceptResult, DeviceRow, InboxRow

__all__ = ["StreamHandler"]

log = logging.getLogger("strongroom.server.stream")
_E = proto.ErrorCode


class _Closed(Exception):
    """The peer went away; nothing more to do."""


class _Session:
    def __init__(self, ctx: ServerContext, ws: WebSocket) -> None:
        self.ctx = ctx
        self.ws = ws
        self.conn = proto.StreamConnection(proto.Role.SERVER)
        self.link = frame_link(ws)
        self.window = ctx.config.limits.delivery_window
        self.deliveries = Deliveries(self._deliver, self._room, self._fetch, self.end)
        self.device: DeviceRow | None = None
        self.sends: set[asyncio.Future[AcceptResult]] = set()
        self.ack_wanted = 0
        self.ack_writing: asyncio.Future[None] | None = None
        self._gone: asyncio.Future[None] | None = None  # the open stream's end
        self.policy_sent = 0  # version of the last policy sent on this stream
        self.wipe_only = False  # rule 6: the device is here for its wipe order
        self._tasks: set[asyncio.Task[None]] = set()

    def emit(self, frame: proto.ServerFrame) -> None:
        """Encode, check and write one frame (rule 1); nothing once the stream closed."""
        if self.conn.state is not proto.State.CLOSED:
            self.link.send(self.conn.send(frame))

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

    def end(self, reason: BaseException) -> None:
        """End the open stream: a broken rule, revoked, or a store read failed."""
        if self._gone is not None and not self._gone.done():
            self._gone.set_exception(reason)

    def revoke(self) -> None:
        self.deliveries.close()  # rule 2: not one more delivery
        self.end(
            RemoteProtocolError("this device has been revoked by IT", "device_revoked")
        )

    def on_event(self, event: str) -> None:
        """A bus event other than ``deliver`` for this device (rule 6)."""
        if event == "revoked":
            self.deliveries.close()  # rule 2, before anything is read
            self._spawn(self._revoked())
        elif event == "control" and not self.wipe_only:
            self._spawn(self.send_policy())

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.end(task.exception() or RuntimeError())

    async def _revoked(self) -> None:
        """Revoked while connected: a wipe order goes out at once, else the stream ends."""
        assert self.device is not None
        if await self.send_wipe(self.device.device_id):
            return
        self.revoke()

    async def send_wipe(self, device_id: str) -> bool:
        order = await self.ctx.fleet.wipe_order_for(device_id)
        if order is None:
            return False
        self.wipe_only = True
        self.deliveries.close()
        self.emit(proto.Control(kind="wipe", item=order))
        return True

    async def send_policy(self) -> None:
        assert self.device is not None
        signed = await self.ctx.fleet.signed_policy(self.device.user)
        if signed is not None and signed[0] > self.policy_sent and not self.wipe_only:
            self.policy_sent = signed[0]
            self.emit(proto.Control(kind="policy", item=signed[1]))

    # --- handshake ----------------------------------------------------------------------

    async def handshake(self) -> DeviceRow:
        nonce = os.urandom(32)
        self.emit(proto.Challenge(nonce=nonce, server=self.ctx.server_name))
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
            if await self.ctx.fleet.wipe_order_for(device.device_id) is None:
                raise RemoteProtocolError(
                    "this device has been revoked by IT", "device_revoked"
                )
            self.wipe_only = True  # rule 6
        now = self.ctx.clock()
        await self.ctx.store.touch_device(device.device_id, now, hello.client_version)
        self.emit(
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

    async def serve(self, device: DeviceRow) -> None:
        """Take frames until the device leaves; raises what ended the stream."""
        self._gone = self.link.read(functools.partial(self._on_message, device))
        await self._gone

    def _on_message(self, device: DeviceRow, data: bytes | None) -> None:
        """One frame from the device, as it is read (no task per frame)."""
        try:
            if data is None:
                raise RemoteProtocolError(
                    "text frames are not part of the protocol", "bad_frame"
                )
            frame = self.conn.receive(data)
            if isinstance(frame, proto.Send | proto.SendShared):
                self._accept(device, frame)
            elif isinstance(frame, proto.Ack):
                self.ack_wanted = frame.upto
                if self.ack_writing is None:
                    self._write_ack(device)
                self.deliveries.pump()
            elif isinstance(frame, proto.Ping):
                self.emit(proto.Pong(n=frame.n))
            elif isinstance(frame, proto.Enforcing):
                self._spawn(
                    self.ctx.fleet.enforcing(device.device_id, frame.policy_version)
                )
            elif isinstance(frame, proto.Wiped):
                self._spawn(self._wiped(device, frame.ordered_at))
        except Exception as exc:
            self.end(exc)

    async def _wiped(self, device: DeviceRow, ordered_at: int) -> None:
        await self.ctx.fleet.wipe_confirmed(device.device_id, ordered_at)
        self.end(_Closed())

    def _accept(self, device: DeviceRow, send: proto.Send | proto.SendShared) -> None:
        """Hand a send to the store; ``_accepted`` answers it once committed (rule 3)."""
        if self.wipe_only:
            self.emit(
                proto.Error(
                    code=_E.DEVICE_REVOKED,
                    detail="this device has been revoked by IT",
                    ref=send.id,
                )
            )
            return
        store = self.ctx.store
        at = self.ctx.clock()
        try:
            if isinstance(send, proto.Send):
                committing = store.accept(
                    device.device_id,
                    send.id,
                    [(c.device, c.body) for c in send.copies],
                    at,
                    expires_at=send.expires_at,
                    blobs=send.blobs,
                )
            else:
                committing = store.accept_shared(
                    device.device_id,
                    send.id,
                    send.devices,
                    send.body,
                    at,
                    expires_at=send.expires_at,
                    blobs=send.blobs,
                )
        except StoreError as exc:
            committing = asyncio.get_running_loop().create_future()
            committing.set_exception(exc)
        self.sends.add(committing)
        committing.add_done_callback(
            functools.partial(self._accepted, device, send, at, time.perf_counter())
        )

    def _accepted(
        self,
        device: DeviceRow,
        send: proto.Send | proto.SendShared,
        at: int,
        started: float,
        committing: asyncio.Future[AcceptResult],
    ) -> None:
        self.sends.discard(committing)
        ctx = self.ctx
        ctx.metrics.store_accept.observe(time.perf_counter() - started)
        if committing.cancelled():
            return
        error = committing.exception()
        if isinstance(error, ConflictError):  # an attachment it names is gone
            self.emit(proto.Error(code=_E.CONFLICT, detail=str(error), ref=send.id))
            return
        if error is not None:
            log.error("store refused a send from %s", device.device_id, exc_info=error)
            self.emit(
                proto.Error(
                    code=_E.UNAVAILABLE, detail="not stored, try again", ref=send.id
                )
            )
            return
        result = committing.result()
        if result.delivered_to:
            ctx.metrics.envelopes_in.inc(len(result.delivered_to))
            ctx.router.committed(_rows(device.device_id, send, at, result))
        self.emit(proto.Accepted(id=send.id, at=ctx.clock(), skipped=result.skipped))

    def _write_ack(self, device: DeviceRow) -> None:
        """Rule 5: one store ack in flight, for the highest ``upto`` received."""
        upto = self.ack_wanted
        try:
            self.ack_writing = self.ctx.store.ack(device.device_id, upto)
        except StoreError as exc:
            log.warning("acknowledgement of %s not stored: %s", device.device_id, exc)
            return
        self.ack_writing.add_done_callback(
            functools.partial(self._acked, device, upto, time.perf_counter())
        )

    def _acked(
        self,
        device: DeviceRow,
        upto: int,
        started: float,
        writing: asyncio.Future[None],
    ) -> None:
        self.ack_writing = None
        self.ctx.metrics.store_ack.observe(time.perf_counter() - started)
        if writing.cancelled():
            return
        error = writing.exception()
        if error is not None:
            log.warning("acknowledgement of %s not stored: %s", device.device_id, error)
        elif self.ack_wanted > upto:
            self._write_ack(device)

    # --- deliveries (called by self.deliveries) ------------------------------------------

    def _room(self) -> int:
        return self.window - self.conn.unacked

    def _deliver(self, row: InboxRow) -> None:
        self.emit(
            proto.Deliver(
                seq=row.seq,
                id=row.envelope_id,
                sender=row.sender,
                at=row.at,
                body=row.body,
                shared=row.shared,
            )
        )
        self.ctx.metrics.envelopes_out.inc()

    async def _fetch(self, after: int, limit: int) -> list[InboxRow]:
        assert self.device is not None
        with self.ctx.metrics.store_fetch.time():
            return await self.ctx.store.fetch(self.device.device_id, after, limit)

    async def settle(self) -> None:
        """Let what the device asked for finish: sends commit, acks are written.

        A device that went away resends unanswered sends with the same ids, and the
        store answers "duplicate".
        """
        self.deliveries.close()
        await self.deliveries.wait_reader()
        if self._tasks:  # IT's bookkeeping (a wipe confirmed, a policy enforced)
            _, late = await asyncio.wait(list(self._tasks), timeout=5.0)
            for task in late:
                task.cancel()
        while self.sends or self.ack_writing is not None:
            pending: list[asyncio.Future[Any]] = [*self.sends]
            if self.ack_writing is not None:
                pending.append(self.ack_writing)
            await asyncio.wait(pending)


def _rows(
    sender: str, send: proto.Send | proto.SendShared, at: int, result: AcceptResult
) -> list[tuple[str, InboxRow]]:
    """The inbox rows the store committed for a send, as (device, row)."""
    delivered, seqs = result.delivered_to, result.seqs
    if isinstance(send, proto.SendShared):
        return [
            (device, InboxRow(seq, send.id, sender, at, send.body, shared=True))
            for device, seq in zip(delivered, seqs, strict=True)
        ]
    # delivered_to keeps the copies' order, less the skipped devices
    rows: list[tuple[str, InboxRow]] = []
    for copy in send.copies:
        n = len(rows)
        if n < len(delivered) and copy.device == delivered[n]:
            rows.append(
                (copy.device, InboxRow(seqs[n], send.id, sender, at, copy.body))
            )
    return rows


class StreamHandler:
    """The ``/v1/stream`` WebSocket endpoint."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    async def handle(self, ws: WebSocket) -> None:
        await ws.accept()
        session = _Session(self.ctx, ws)
        detach = None
        try:
            device = await session.handshake()
            session.device = device
            detach = self.ctx.router.attach(
                device.device_id, session.deliveries, session.on_event
            )
            if session.wipe_only:
                await session.send_wipe(device.device_id)
            else:
                await session.send_policy()
                session.deliveries.pump()  # connected: read the store from the start
            self.ctx.metrics.connected.inc()
            try:
                await session.serve(device)
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
            if detach is not None:
                detach()
            await session.settle()

    async def _fail(self, session: _Session, code: str, detail: str) -> None:
        device = session.device.device_id if session.device else "unauthenticated"
        log.info("closing stream of %s: %s", device, code)
        session.deliveries.close()
        with contextlib.suppress(Exception):
            session.conn.close()
            # through the writer, behind the frames it may still hold
            session.link.send(proto.encode_frame(proto.Error(code=code, detail=detail)))
        with contextlib.suppress(Exception):
            await session.ws.close(code=4000 if code != _E.INTERNAL else 1011)
