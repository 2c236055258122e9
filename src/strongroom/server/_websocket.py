"""The stream's WebSocket transport: uvicorn's sans-I/O protocol, written in batches.

uvicorn's ``websockets-sansio`` protocol writes every frame with its own ``transport.write``,
one system call each, and reaches a frame only through an ASGI message dict.  Routing sends
two frames per envelope (``Accepted`` to the sender, ``Deliver`` to the recipient) to
thousands of sockets, so both costs count.

Rules:

1. Everything this protocol writes during one turn of the event loop leaves in one
   ``writelines`` at the end of that turn (``_Corked``).  Order on the wire is the order of
   the writes; nothing is held longer than the turn, so corking adds no latency.
2. The ASGI app still sees an ordinary WebSocket (the stream's handshake uses it).
   Beside it, the connection's scope carries ``FRAMES_EXTENSION``: a ``FrameLink`` whose
   ``send`` frames one binary message synchronously, and whose ``read`` hands every
   message from then on to a callback as ``data_received`` parses it, skipping the ASGI
   message dicts, the queue and a task wake-up per message.  The stream uses it when it
   is there and falls back to plain ASGI (``_AsgiLink``) under another server.
3. Back-pressure: when the socket's buffer is over its high-water mark, ``writable`` is
   clear, and a ``FrameLink`` that is reading pauses reading the socket until the buffer
   drains: a device that does not read gets nothing more read from it either.
4. With no extension negotiated (``serve`` turns permessage-deflate off: ciphertext does
   not compress), a binary message is its 2-to-10-byte header and the payload itself,
   written as two parts: no ``Frame`` object and no copy of the payload.  Frames are
   written only while the websockets state machine is OPEN and not fragmenting, and
   every frame it makes itself (pong, close) is written when it makes it, so the order
   on the wire is the order of the writes.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol, cast

from starlette.websockets import WebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import (
    WebSocketsSansIOProtocol,
)
from websockets.exceptions import InvalidState, ProtocolError
from websockets.http11 import Request
from websockets.protocol import State

__all__ = ["FRAMES_EXTENSION", "FrameLink", "Link", "StreamProtocol", "frame_link"]

# A binary message, or None for a text message (which the stream refuses).
OnMessage = Callable[[bytes | None], None]

FRAMES_EXTENSION = "strongroom.frames"


class _Corked:
    """A transport whose writes wait for the end of the loop turn (rule 1)."""

    __slots__ = ("_loop", "_parts", "_transport")

    def __init__(
        self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._parts:
            self._loop.call_soon(self.flush)
        self._parts.append(data)

    def writelines(self, data: Iterable[bytes]) -> None:
        for part in data:
            self.write(part)

    def flush(self) -> None:
        parts, self._parts = self._parts, []
        if parts and not self._transport.is_closing():
            self._transport.writelines(parts)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._parts.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        # is_closing, pause_reading, resume_reading, get_extra_info, ...
        return getattr(self._transport, name)


class FrameLink:
    """Synchronous binary frames on one WebSocket (rule 2)."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: StreamProtocol) -> None:
        self._protocol = protocol

    @property
    def writable(self) -> asyncio.Event:
        return self._protocol.writable

    def send(self, data: bytes) -> bool:
        """Frame ``data`` as one binary message; False once the connection is closing."""
        p = self._protocol
        conn = p.conn
        if (
            p.close_sent
            or p.disconnected
            or conn.state is not State.OPEN
            or conn.expect_continuation_frame
        ):
            return False
        if conn.extensions:  # none is negotiated by ``serve``; kept correct anyway
            try:
                conn.send_binary(data)
            except (InvalidState, ProtocolError):
                return False
            p.transport.writelines(conn.data_to_send())
        else:  # rule 4
            p.transport.writelines((_binary_header(len(data)), data))
        return True

    def read(self, on_message: OnMessage) -> asyncio.Future[None]:
        """Hand every message from now on to ``on_message``; the future resolves when
        the connection is gone (or fails with what ``on_message`` raised)."""
        return self._protocol.read_directly(on_message)


def _binary_header(length: int) -> bytes:
    """RFC 6455 5.2: FIN, opcode 2, unmasked (the server's frames are never masked)."""
    if length < 126:
        return bytes((0x82, length))
    if length < 65536:
        return struct.pack("!BBH", 0x82, 126, length)
    return struct.pack("!BBQ", 0x82, 127, length)


class StreamProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with corked writes and a ``FrameLink``."""

    _on_message: OnMessage | None = None
    _gone: asyncio.Future[None] | None = None
    _paused_for_writes = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence the casts
        corked = _Corked(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(cast(asyncio.Transport, corked))

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        extensions = getattr(self, "scope", {}).get("extensions")
        if not self.close_sent and extensions is not None:
            # upgraded: the app is about to run with this scope (its task starts on
            # the next turn of the loop)
            extensions[FRAMES_EXTENSION] = {"link": FrameLink(self)}

    # --- reading without the ASGI queue (rule 2) ----------------------------------------

    def read_directly(self, on_message: OnMessage) -> asyncio.Future[None]:
        gone = self._gone = self.loop.create_future()
        self._on_message = on_message
        while not self.queue.empty():  # what arrived before goes first
            event = self.queue.get_nowait()
            if event["type"] == "websocket.receive":
                self._deliver(event.get("bytes"))
            else:
                self._finish(None)
        if self.disconnected:
            self._finish(None)
        elif self.read_paused:  # uvicorn pauses after each message it queued
            self.read_paused = False
            self.transport.resume_reading()
        return gone

    def send_receive_event_to_app(self) -> None:
        if self._on_message is None or self.close_sent:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        self._deliver(data if self.curr_msg_data_type == "bytes" else None)

    def _deliver(self, data: bytes | None) -> None:
        on_message = self._on_message
        if on_message is None or (self._gone is not None and self._gone.done()):
            return
        try:
            on_message(data)
        except Exception as exc:  # a bug in the stream ends its connection alone
            self._finish(exc)

    def _finish(self, error: BaseException | None) -> None:
        gone = self._gone
        if gone is not None and not gone.done():
            if error is None:
                gone.set_result(None)
            else:
                gone.set_exception(error)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._finish(None)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._on_message is not None and not self._paused_for_writes:
            self._paused_for_writes = True  # rule 3
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._paused_for_writes:
            self._paused_for_writes = False
            if not self.disconnected:
                self.transport.resume_reading()


class Link(Protocol):
    """A stream's WebSocket, as the stream uses it after its handshake."""

    @property
    def writable(self) -> asyncio.Event: ...

    def send(self, data: bytes) -> bool: ...

    def read(self, on_message: OnMessage) -> asyncio.Future[None]: ...


class _AsgiLink:
    """Rule 2's fallback under another ASGI server: one ``send_bytes`` per frame, in
    order, from a task that runs while frames wait; a task reading ``receive``."""

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        self._waiting: deque[bytes] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self.writable = asyncio.Event()
        self.writable.set()

    def send(self, data: bytes) -> bool:
        if self._closed:
            return False
        self._waiting.append(data)
        if self._writer is None:
            self.writable.clear()
            self._writer = asyncio.get_running_loop().create_task(self._drain())
        return True

    async def _drain(self) -> None:
        try:
            while self._waiting:
                await self._ws.send_bytes(self._waiting.popleft())
        except Exception:  # the connection is gone; the reader finds out
            self._closed = True
            self._waiting.clear()
        finally:
            self._writer = None
            self.writable.set()

    def read(self, on_message: OnMessage) -> asyncio.Future[None]:
        gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def pump() -> None:
            try:
                while True:
                    message = await self._ws.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    on_message(message.get("bytes"))
                    if not self.writable.is_set():
                        await self.writable.wait()
            except Exception as exc:
                if not gone.done():
                    gone.set_exception(exc)
            if not gone.done():
                gone.set_result(None)

        self._reader = asyncio.get_running_loop().create_task(pump())
        gone.add_done_callback(lambda _: self._reader and self._reader.cancel())
        return gone


def frame_link(ws: WebSocket) -> Link:
    """The connection's ``FrameLink`` under ``StreamProtocol``, else the fallback."""
    extension = (ws.scope.get("extensions") or {}).get(FRAMES_EXTENSION)
    link = None if extension is None else extension.get("link")
    return link if isinstance(link, FrameLink) else _AsgiLink(ws)
