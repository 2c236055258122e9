"""The stream's own WebSocket framing (``server._websocket``), read back by websockets."""

from __future__ import annotations

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from strongroom.server._websocket import _binary_header


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_binary_frames_parse_as_one_binary_message(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    client = ClientProtocol(parse_uri("ws://example.test/"), max_size=None)
    client.state = State.OPEN  # past the handshake, which is not under test
    client.receive_data(_binary_header(size) + payload + _binary_header(3) + b"end")
    frames = [e for e in client.events_received() if isinstance(e, Frame)]
    assert [(f.opcode, f.fin, bytes(f.data)) for f in frames] == [
        (Opcode.BINARY, True, payload),
        (Opcode.BINARY, True, b"end"),
    ]
