"""The load generator's connections: light enough that one process drives thousands.

Rules:

1. No coroutine and no task per frame.  Bytes arrive in ``Link.data_received``; websockets'
   sans-I/O ``ClientProtocol`` parses them; each complete binary message goes to the
   owner's callback synchronously.  Frames sent from inside that callback are corked and
   written with one ``writelines`` when the read is handled.
2. The stream handshake is the SDK's, not a copy of its protocol: the server's ``Challenge``
   is answered with ``proto.Hello`` signed by the device key over
   ``proto.hello_signing_input`` (what ``client.Device.hello`` does), after checking that
   the server names the organisation's authority.  Frames are encoded and decoded with
   ``proto``; the client-side ``StreamConnection`` checks are left out on purpose (they
   protect a real device, and would be measured as load-generator cost here).
3. No permessage-deflate: Olm ciphertext does not compress, and the server should not be
   charged for inflating it.
4. A connection that fails or is closed fails ``opened`` / resolves ``closed``; an ``Error``
   frame from the server is recorded in ``Stream.errors`` and fails ``welcomed``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from strongroom import crypto, proto

__all__ = ["BENCH_CLIENT_VERSION", "Identity", "Link", "Stream", "open_link"]

BENCH_CLIENT_VERSION = "strongroom-bench/0.1.0"


class Identity:
    """An activated device, held in memory by the load generator."""

    __slots__ = ("account", "curve25519", "device_id", "home", "server_name", "user")

    def __init__(
        self,
        user: str,
        device_id: str,
        account: crypto.DeviceAccount,
        server_name: str,
        home: str,
    ) -> None:
        self.user = user
        self.device_id = device_id
        self.account = account
        self.curve25519 = account.curve25519
        self.server_name = server_name
        self.home = home


class Link(asyncio.Protocol):
    """One WebSocket connection; ``on_message(bytes)`` gets every binary message."""

    def __init__(self, url: str, on_message: Callable[[bytes], None]) -> None:
        loop = asyncio.get_running_loop()
        self._ws = ClientProtocol(parse_uri(url), max_size=2 * proto.MAX_FRAME_BYTES)
        self._transport: asyncio.Transport | None = None
        self._corked = False
        self._parts: list[bytes] = []
        self.on_message = on_message
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._ws.send_request(self._ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self._ws.receive_data(data)
        self._corked = True
        try:
            for event in self._ws.events_received():
                if isinstance(event, Frame):
                    self._frame(event)
                elif isinstance(event, Response) and not self.opened.done():
                    if self._ws.handshake_exc is not None:
                        self.opened.set_exception(self._ws.handshake_exc)
                    else:
                        self.opened.set_result(None)
        finally:
            self._corked = False
            self._flush()

    def _frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.BINARY or (
            frame.opcode is Opcode.CONT and self._parts
        ):
            if frame.fin and not self._parts:
                self.on_message(bytes(frame.data))
                return
            self._parts.append(bytes(frame.data))
            if frame.fin:
                message = b"".join(self._parts)
                self._parts.clear()
                self.on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during upgrade"))
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, data: bytes) -> None:
        self._ws.send_binary(data)
        if not self._corked:
            self._flush()

    def _flush(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        chunks = self._ws.data_to_send()
        if not chunks:
            return
        if chunks[-1] == b"":  # websockets' way of saying "half-close now"
            transport.writelines(chunks[:-1])
            transport.close()
        else:
            transport.writelines(chunks)

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


async def open_link(
    url: str, on_message: Callable[[bytes], None], timeout: float = 30.0
) -> Link:
    """Connect and complete the WebSocket upgrade.  Raises ``OSError`` / ``TimeoutError``."""
    link = Link(url, on_message)
    await connect_link(link, url, timeout)
    return link


async def connect_link(link: Link, url: str, timeout: float = 30.0) -> None:
    """Connect ``link`` to ``url`` and wait for the upgrade; messages may arrive at once."""
    loop = asyncio.get_running_loop()
    parsed = parse_uri(url)
    await asyncio.wait_for(
        loop.create_connection(lambda: link, parsed.host, parsed.port), timeout
    )
    await asyncio.wait_for(link.opened, timeout)


FrameHandler = Callable[["Stream", proto.ServerFrame], None]


class Stream:
    """One device's authenticated stream.  After ``welcomed``, frames go to ``handler``."""

    __slots__ = (
        "errors",
        "handler",
        "identity",
        "last_acked",
        "last_delivered",
        "link",
        "owner",
        "unacked_since",
        "welcome",
        "welcomed",
    )

    def __init__(self, identity: Identity, handler: FrameHandler) -> None:
        self.identity = identity
        self.handler = handler
        self.link: Link | None = None
        self.welcome: proto.Welcome | None = None
        self.welcomed: asyncio.Future[proto.Welcome] = (
            asyncio.get_running_loop().create_future()
        )
        self.errors: list[str] = []
        self.last_delivered = 0
        self.last_acked = 0
        self.unacked_since = 0.0  # when the oldest unacknowledged delivery came
        self.owner: object = None  # the workload's per-device state

    async def open(self, url: str, timeout: float = 30.0) -> proto.Welcome:
        """Connect, answer the challenge, wait for ``Welcome``.

        Raises ``OSError``, ``TimeoutError`` or ``RuntimeError`` (refused by the server).
        """
        self.link = Link(url, self._on_message)
        await connect_link(self.link, url, timeout)
        return await asyncio.wait_for(asyncio.shield(self.welcomed), timeout)

    def _on_message(self, data: bytes) -> None:
        frame = proto.decode_server_frame(data)
        if self.welcome is not None:
            self.handler(self, frame)
        elif isinstance(frame, proto.Challenge):
            self._answer(frame)
        elif isinstance(frame, proto.Welcome):
            self.welcome = frame
            self.welcomed.set_result(frame)
        elif isinstance(frame, proto.Error):
            self.errors.append(f"{frame.code}: {frame.detail}")
            if not self.welcomed.done():
                self.welcomed.set_exception(RuntimeError(self.errors[-1]))

    def _answer(self, challenge: proto.Challenge) -> None:
        me = self.identity
        if challenge.server != me.server_name:
            self.welcomed.set_exception(
                RuntimeError("the server does not name our organisation's authority")
            )
            return
        signature = me.account.sign(
            proto.hello_signing_input(challenge.nonce, me.device_id, challenge.server)
        )
        self.send(
            proto.encode_frame(
                proto.Hello(
                    device_id=me.device_id,
                    signature=signature,
                    client_version=BENCH_CLIENT_VERSION,
                )
            )
        )

    def send(self, data: bytes) -> None:
        assert self.link is not None
        self.link.send(data)

    def delivered(self, seq: int, ack_every: int) -> None:
        """Note delivery ``seq``; acknowledge once ``ack_every`` are unacknowledged."""
        if self.last_delivered == self.last_acked:
            self.unacked_since = time.perf_counter()
        self.last_delivered = seq
        if seq - self.last_acked >= ack_every:
            self.ack()

    def ack(self) -> None:
        """Acknowledge everything delivered so far (cumulative), if anything is new."""
        if self.last_delivered > self.last_acked:
            self.last_acked = self.last_delivered
            self.send(proto.encode_frame(proto.Ack(upto=self.last_delivered)))

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
