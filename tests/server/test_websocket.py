"""The stream's own WebSocket framing (``server._websocket``), read back by websockets."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from starlette.websockets import WebSocket
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from strongroom.server._websocket import FrameLink, _binary_header, frame_link


def parse(data: bytes, count: int) -> list[Frame]:
    """``count`` frames, as a client parses them (unmasked, no extensions)."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames: list[Frame] = []
    for _ in range(count):
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            while True:
                next(parser)
        except StopIteration as done:
            frames.append(done.value)
    return frames


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_binary_frames_parse_as_binary_messages(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    wire = _binary_header(size) + payload + _binary_header(3) + b"end"
    assert [(f.opcode, f.fin, bytes(f.data)) for f in parse(wire, 2)] == [
        (Opcode.BINARY, True, payload),
        (Opcode.BINARY, True, b"end"),
    ]


class FakeWebSocket:
    """Just what ``_AsgiLink`` uses of Starlette's WebSocket."""

    def __init__(self, incoming: list[dict[str, Any]]) -> None:
        self.scope: dict[str, Any] = {"type": "websocket", "extensions": {}}
        self.incoming = incoming
        self.sent: list[bytes] = []

    async def send_bytes(self, data: bytes) -> None:
        await asyncio.sleep(0)  # a real send may let others run
        self.sent.append(data)

    async def receive(self) -> dict[str, Any]:
        await asyncio.sleep(0)
        return self.incoming.pop(0)


def test_the_asgi_fallback_keeps_frames_in_order_and_reads_until_disconnect() -> None:
    async def main() -> None:
        ws = FakeWebSocket(
            [
                {"type": "websocket.receive", "bytes": b"one"},
                {"type": "websocket.receive", "text": "two"},
                {"type": "websocket.disconnect", "code": 1000},
            ]
        )
        link = frame_link(cast(WebSocket, ws))
        assert not isinstance(link, FrameLink)  # no StreamProtocol under it
        for n in range(5):
            assert link.send(b"frame %d" % n)
        got: list[bytes | None] = []
        await link.read(got.append)
        assert got == [b"one", None]  # None: a text message
        await link.writable.wait()
        assert ws.sent == [b"frame %d" % n for n in range(5)]

    asyncio.run(main())
