"""The NATS bus between server nodes, against the real local NATS server.

Two ``NatsBus`` objects in one process stand for two server nodes: each has its own NATS
connection, exactly as two processes would.  A ``TcpProxy`` between a node and NATS
breaks the connection the way a network failure does.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import pytest

from _proxy import TcpProxy
from _services import NATS_URL, require
from conftest import arun
from strongroom.errors import ConfigError
from strongroom.server.bus import BusEvent, NatsBus, bus_from_url

WAIT_S = 5.0


@pytest.fixture(autouse=True)
def nats_up() -> None:
    require(NATS_URL)


def namespace() -> str:
    return secrets.token_hex(8)


class Inbox:
    """A listener that remembers what it heard."""

    def __init__(self) -> None:
        self.events: list[BusEvent] = []
        self.changed = asyncio.Event()

    def __call__(self, event: BusEvent) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait_for(self, count: int) -> list[BusEvent]:
        async def reached() -> None:
            while len(self.events) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(reached(), WAIT_S)
        return self.events


async def until(condition: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), WAIT_S)


async def settle() -> None:
    """Give NATS a moment to route what is in flight (subscriptions, publishes)."""
    await asyncio.sleep(0.2)


def two_nodes(
    body: Callable[[NatsBus, NatsBus], Awaitable[None]], ns: str | None = None
) -> None:
    async def go() -> None:
        space = ns or namespace()
        a, b = NatsBus(NATS_URL, space), NatsBus(NATS_URL, space)
        await a.start()
        await b.start()
        try:
            assert a.healthy() and b.healthy()
            await body(a, b)
        finally:
            await a.close()
            await b.close()

    arun(go())


def test_a_wake_up_crosses_nodes() -> None:
    async def body(a: NatsBus, b: NatsBus) -> None:
        heard = Inbox()
        b.subscribe("DEVICE1", heard)
        await settle()
        await a.publish("deliver", ["DEVICE1"])
        await a.publish("revoked", ["DEVICE1"])
        assert await heard.wait_for(2) == ["deliver", "revoked"]

    two_nodes(body)


def test_a_local_listener_hears_once_and_at_once() -> None:
    async def body(a: NatsBus, b: NatsBus) -> None:
        heard = Inbox()
        a.subscribe("DEVICE1", heard)
        await settle()
        await a.publish("deliver", ["DEVICE1"])
        assert heard.events == ["deliver"]  # synchronously, no round trip
        await settle()
        assert heard.events == ["deliver"]  # the echo from NATS was ignored

    two_nodes(body)


def test_only_the_named_devices_hear() -> None:
    async def body(a: NatsBus, b: NatsBus) -> None:
        one, two = Inbox(), Inbox()
        b.subscribe("DEVICE1", one)
        b.subscribe("DEVICE2", two)
        await settle()
        await a.publish("deliver", ["DEVICE2"])
        await two.wait_for(1)
        await settle()
        assert one.events == []

    two_nodes(body)


def test_after_cancel_nothing_is_heard() -> None:
    async def body(a: NatsBus, b: NatsBus) -> None:
        first, second = Inbox(), Inbox()
        sub1 = b.subscribe("DEVICE1", first)
        b.subscribe("DEVICE1", second)
        await settle()
        sub1.cancel()
        await a.publish("deliver", ["DEVICE1"])
        await second.wait_for(1)
        await settle()
        assert first.events == []

    two_nodes(body)


def test_organisations_sharing_nats_do_not_hear_each_other() -> None:
    async def go() -> None:
        ours, theirs = NatsBus(NATS_URL, namespace()), NatsBus(NATS_URL, namespace())
        await ours.start()
        await theirs.start()
        try:
            heard = Inbox()
            theirs.subscribe("DEVICE1", heard)
            await settle()
            await ours.publish("deliver", ["DEVICE1"])
            await settle()
            assert heard.events == []
        finally:
            await ours.close()
            await theirs.close()

    arun(go())


def test_unreachable_nats_is_unhealthy_and_local_still_works() -> None:
    async def go() -> None:
        with TcpProxy(urlsplit(NATS_URL).port or 4222) as proxy:
            proxy.refuse()
            bus = NatsBus(f"nats://127.0.0.1:{proxy.port}", namespace(), 0.3)
            await bus.start()
            try:
                assert not bus.healthy()
                heard = Inbox()
                bus.subscribe("DEVICE1", heard)
                await bus.publish("deliver", ["DEVICE1"])
                assert heard.events == ["deliver"]
                # NATS comes back: the bus connects and wakes every local listener
                # (for mail and for IT's news), since events from other nodes may have
                # been lost meanwhile.
                proxy.refuse(False)
                await until(bus.healthy)
                assert await heard.wait_for(3) == ["deliver", "deliver", "control"]
            finally:
                await bus.close()

    arun(go())


def test_nats_credentials_never_reach_the_log_or_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "HUNTER2pw" + secrets.token_hex(4)

    async def go() -> None:
        with TcpProxy(urlsplit(NATS_URL).port or 4222) as proxy:
            proxy.refuse()
            bus = NatsBus(f"nats://ops:{secret}@127.0.0.1:{proxy.port}", namespace())
            await bus.start()
            try:
                await asyncio.sleep(0.3)  # a few tries, each logged
                assert not bus.healthy()
                assert secret not in repr(bus)
            finally:
                await bus.close()

    with caplog.at_level("DEBUG"):
        arun(go())
    assert "NATS is not reachable yet at nats://***@127.0.0.1" in caplog.text
    assert secret not in caplog.text
    with pytest.raises(ConfigError) as refused:
        bus_from_url(f"http://ops:{secret}@127.0.0.1:4222", namespace())
    assert secret not in str(refused.value)


def test_a_broken_connection_recovers_and_wakes_listeners() -> None:
    async def go() -> None:
        space = namespace()
        with TcpProxy(urlsplit(NATS_URL).port or 4222) as proxy:
            a = NatsBus(NATS_URL, space)
            b = NatsBus(f"nats://127.0.0.1:{proxy.port}", space)
            await a.start()
            await b.start()
            try:
                heard = Inbox()
                b.subscribe("DEVICE1", heard)
                await settle()
                proxy.refuse()
                proxy.cut()
                await until(lambda: not b.healthy())
                proxy.refuse(False)
                await until(b.healthy)
                # woken on reconnect, and subscribed again: a later publish arrives
                await heard.wait_for(1)
                await settle()
                await a.publish("revoked", ["DEVICE1"])
                assert (await heard.wait_for(3))[-1] == "revoked"
            finally:
                await a.close()
                await b.close()

    arun(go())


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379", "nats-ish", "http://x"])
def test_unknown_bus_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="bus URL"):
        bus_from_url(url, "abc")


def test_a_mixed_server_list_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a NATS URL"):
        bus_from_url("nats://127.0.0.1:4222,redis://x", "abc")
