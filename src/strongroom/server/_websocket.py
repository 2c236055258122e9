"""The stream's WebSocket transport: uvicorn's sans-I/O protocol, written in batches.

uvicorn's ``websockets-sansio`` protocol writes every frame with its own ``transport.write``,
one system call each, and reaches a frame only through an ASGI message dict.  Routing sends
two frames per envelope (``Accepted`` to the sender, ``Deliver`` to the recipient) to
thousands of sockets, so both costs count.

Rules:

1. Everything this protocol writes during one turn of the event loop leaves in one
   ``writelines`` at the end of that turn (``_Corked``).  Order on the wire is the order of
   the writes; nothing is held longer than the turn, so corking adds no latency.
2. The ASGI app still sees an ordinary WebSocket.  Beside it, the connection's scope
   carries ``FRAMES_EXTENSION``: a ``FrameWriter`` whose ``send`` frames one binary
   message synchronously, skipping the ASGI message round.  The stream uses it when it is
   there and falls back to plain ASGI sends when the app runs under another server.
3. Back-pressure is uvicorn's: when the socket's buffer is over its high-water mark,
   ``FrameWriter.writable`` is clear and the stream stops reading until it drains.
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
from collections.abc import Iterable
from typing import Any, Protocol, cast

from starlette.websockets import WebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import (
    WebSocketsSansIOProtocol,
)
from websockets.exceptions import InvalidState, ProtocolError
from websockets.http11 import Request
from websockets.protocol import State

__all__ = [
    "FRAMES_EXTENSION",
    "FrameWriter",
    "StreamProtocol",
    "Writer",
    "frame_writer",
]

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


class FrameWriter:
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


def _binary_header(length: int) -> bytes:
    """RFC 6455 5.2: FIN, opcode 2, unmasked (the server's frames are never masked)."""
    if length < 126:
        return bytes((0x82, length))
    if length < 65536:
        return struct.pack("!BBH", 0x82, 126, length)
    return struct.pack("!BBQ", 0x82, 127, length)


class StreamProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with corked writes and a ``FrameWriter``."""

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
            extensions[FRAMES_EXTENSION] = {"writer": FrameWriter(self)}


class Writer(Protocol):
    """What the stream writes frames with."""

    @property
    def writable(self) -> asyncio.Event: ...

    def send(self, data: bytes) -> bool: ...


class _AsgiWriter:
    """Rule 2's fallback under another ASGI server: one ``send_bytes`` per frame, in
    order, from a task that runs while frames wait."""

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        self._waiting: deque[bytes] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.writable = asyncio.Event()
        self.writable.set()

    def send(self, data: bytes) -> bool:
        if self._closed:
            return False
        self._waiting.append(data)
        if self._task is None:
            self.writable.clear()
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return True

    async def _drain(self) -> None:
        try:
            while self._waiting:
                await self._ws.send_bytes(self._waiting.popleft())
        except Exception:  # the connection is gone; the stream finds out as it reads
            self._closed = True
            self._waiting.clear()
        finally:
            self._task = None
            self.writable.set()


def frame_writer(ws: WebSocket) -> Writer:
    """The connection's ``FrameWriter`` under ``StreamProtocol``, else the fallback."""
    extension = (ws.scope.get("extensions") or {}).get(FRAMES_EXTENSION)
    writer = None if extension is None else extension.get("writer")
    return writer if isinstance(writer, FrameWriter) else _AsgiWriter(ws)
