"""Activation over an untrusted network: SPAKE2 on the code, single use, expiry, burning."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from conftest import Org, arun
from strongroom import client, crypto
from strongroom.errors import ActivationError


class RecordingProxy:
    """A TCP relay on loopback that keeps every byte the client sends."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sent = bytearray()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> RecordingProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        up_reader, up_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port
        )
        self._writers += [writer, up_writer]

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, record: bool
        ) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    if record:
                        self.sent.extend(data)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(
            pipe(reader, up_writer, True), pipe(up_reader, writer, False)
        )


def test_the_code_never_crosses_the_wire(org: Org) -> None:
    org.add_user("alice")
    code = org.code("alice")

    async def go() -> bytes:
        async with RecordingProxy(org.server.port) as proxy:
            url = f"http://127.0.0.1:{proxy.port}"
            await client.activate(org.root / "alice", url, "alice", code, "phone")
        return bytes(proxy.sent)

    sent = arun(go())
    assert b"/v1/activation/finish" in sent  # we did record the whole exchange
    normalised = crypto.normalise_code(code)
    for form in (code, normalised, code.lower(), code.replace("-", "")):
        assert form.encode() not in sent
    assert crypto.code_password(code) not in sent
    assert crypto.code_password(code).hex().encode() not in sent


def _activate(org: Org, user: str, code: str, home: str) -> None:
    arun(client.activate(org.root / home, org.url, user, code, home))


def test_codes_are_single_use(org: Org) -> None:
    org.add_user("alice")
    code = org.code("alice")
    _activate(org, "alice", code, "first")
    with pytest.raises(ActivationError, match="no activation code"):
        _activate(org, "alice", code, "second")
    assert not (
        org.root / "second"
    ).exists()  # a failed activation leaves nothing behind


def test_codes_expire(org: Org) -> None:
    org.add_user("alice")
    code = org.code("alice", ttl_seconds=1)
    time.sleep(1.2)
    with pytest.raises(ActivationError, match="expired"):
        _activate(org, "alice", code, "late")


def test_three_wrong_tries_burn_the_code(org: Org) -> None:
    org.add_user("alice")
    code = org.code("alice")
    wrong = crypto.generate_code()
    with pytest.raises(ActivationError) as first:
        _activate(org, "alice", wrong, "try1")
    assert first.value.tries_left == 2
    with pytest.raises(ActivationError) as second:
        _activate(org, "alice", wrong, "try2")
    assert second.value.tries_left == 1
    with pytest.raises(ActivationError, match="burned"):
        _activate(org, "alice", wrong, "try3")
    with pytest.raises(ActivationError, match="burned"):
        _activate(org, "alice", code, "right-but-too-late")
    # A new code from IT works.
    _activate(org, "alice", org.code("alice"), "fresh")


def test_a_server_without_the_code_cannot_activate_a_device(
    org: Org, tmp_path: Path
) -> None:
    # A second organisation's server (say, an impostor the network redirected us to) knows
    # a code for alice, but not the code IT gave us.
    impostor = Org(tmp_path / "impostor")
    with impostor.server:
        impostor.add_user("alice")
        impostor.code("alice")
        real_code = crypto.generate_code()
        with pytest.raises(ActivationError):
            arun(client.activate(tmp_path / "dev", impostor.url, "alice", real_code))
    assert not (tmp_path / "dev").exists()


def test_the_device_pins_the_authority_from_activation(org: Org) -> None:
    home = org.activate("alice")
    store = client.LocalStore.open(home)
    try:
        pinned = store.get_meta("authority_key")
    finally:
        store.close()
    assert pinned == org.data.load_authority().public.raw
