"""Scale-out: several server nodes sharing PostgreSQL and NATS, and their failures.

Every node is a real ``strongroom serve`` process with its own copy of the organisation's
data directory (config, authority key, admin credential), as docs/deploy.md describes.
A ``TcpProxy`` stands in for the load balancer in front of the nodes, and between a node
and PostgreSQL or NATS where a test breaks those connections.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from _proxy import TcpProxy
from _services import NATS_URL, POSTGRES_URL, postgres_schema, require, with_schema
from conftest import Backend, Org, arun
from strongroom import client
from strongroom.cli._local import LocalServer
from strongroom.errors import ClientError

WAIT_S = 30.0


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


class Cluster:
    """An organisation served by three nodes on one PostgreSQL schema and one NATS."""

    def __init__(self, root: Path, schema_url: str) -> None:
        self.schema_url = schema_url
        self.org = Org(root, Backend("postgres", schema_url, NATS_URL))
        self.nodes = [self.org.server]
        for i in (1, 2):
            path = root / f"node{i}"
            shutil.copytree(
                self.org.data.path,
                path,
                ignore=shutil.ignore_patterns("logs", "*.json"),
            )
            self.nodes.append(LocalServer(path))

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    require(NATS_URL)
    with postgres_schema() as url:
        made = Cluster(tmp_path, url)
        made.start()
        try:
            yield made
        finally:
            made.stop()


async def listen(
    home: Path, got: list[str], want: int, on_message: Callable[[], None] = lambda: None
) -> None:
    """Collect texts as a device app would: reconnecting whenever the link drops."""

    async def run() -> None:
        while len(got) < want:
            try:
                async with client.Client(home) as c:
                    async for message in c.messages(wait=None):
                        if message.kind != "text":
                            continue  # receipts
                        got.append(message.text)
                        on_message()
                        if len(got) >= want:
                            return
            except ClientError:
                await asyncio.sleep(0.1)

    await asyncio.wait_for(run(), WAIT_S)


async def send_all(home: Path, to: str, texts: list[str]) -> list[str]:
    """Send each text in turn, retrying through failures as a device app would.

    A message that was encrypted and queued is retried from the outbox, with its own id,
    never encrypted again: the server may have committed it before the link broke, and
    then says "duplicate".  Returns the texts accepted.
    """
    accepted: list[str] = []
    for text in texts:
        queued = False
        while True:
            try:
                async with client.Client(home) as c:
                    if queued:
                        await c.flush_outbox()
                    else:
                        try:
                            await c.send_text(to, text)
                        finally:
                            queued = bool(c.store.outbox())
                    accepted.append(text)
                    break
            except ClientError:
                await asyncio.sleep(0.1)
    return accepted


def readyz(node: LocalServer) -> tuple[int, dict[str, str]]:
    response = httpx.get(node.url + "/readyz", timeout=5.0)
    return response.status_code, response.json()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def test_messages_cross_nodes_live_and_in_order(cluster: Cluster) -> None:
    node0, node1, node2 = (node.url for node in cluster.nodes)
    alice = cluster.org.activate("alice", "phone", node0)
    alice_laptop = cluster.org.activate("alice", "laptop", node2)
    bob = cluster.org.activate("bob", "phone", node1)
    carol = cluster.org.activate("carol", "phone", node2)
    texts = [f"from alice {i}" for i in range(25)]

    async def go() -> tuple[list[str], list[str]]:
        at_bob: list[str] = []
        at_laptop: list[str] = []
        listening = [
            asyncio.create_task(listen(bob, at_bob, len(texts) + 1)),
            asyncio.create_task(listen(alice_laptop, at_laptop, len(texts))),
        ]
        await asyncio.sleep(0.5)  # both are connected and idle: delivery is a wake-up
        await send_all(alice, "bob", texts)
        await send_all(carol, "bob", ["from carol"])
        await asyncio.gather(*listening)
        return at_bob, at_laptop

    at_bob, at_laptop = arun(go())
    assert [t for t in at_bob if t.startswith("from alice")] == texts  # in order
    assert "from carol" in at_bob
    assert at_laptop == texts  # alice's own other device, on a third node


def test_group_messages_cross_nodes(cluster: Cluster) -> None:
    node0, node1, node2 = (node.url for node in cluster.nodes)
    alice = cluster.org.activate("alice", "phone", node0)
    bob = cluster.org.activate("bob", "phone", node1)
    carol = cluster.org.activate("carol", "phone", node2)

    async def go() -> tuple[list[str], list[str]]:
        async with client.Client(alice) as c:
            group = await c.create_group("Across the cluster", ["bob", "carol"])
        at_bob: list[str] = []
        at_carol: list[str] = []
        listening = [
            asyncio.create_task(listen(bob, at_bob, 3)),
            asyncio.create_task(listen(carol, at_carol, 3)),
        ]
        await asyncio.sleep(0.5)
        async with client.Client(alice) as c:
            for i in range(3):
                await c.send_group_text(group, f"to all {i}")
        await asyncio.gather(*listening)
        return at_bob, at_carol

    at_bob, at_carol = arun(go())
    expected = [f"to all {i}" for i in range(3)]
    assert at_bob == expected and at_carol == expected


def test_a_node_killed_mid_traffic_loses_nothing(cluster: Cluster) -> None:
    node0, node1, node2 = cluster.nodes
    alice = cluster.org.activate("alice", "phone", node0.url)
    with TcpProxy(node1.port, node2.port) as balancer:
        # bob reaches the cluster through the balancer, which prefers node1
        bob = cluster.org.activate("bob", "phone", f"http://127.0.0.1:{balancer.port}")
        texts = [f"m{i:03d}" for i in range(60)]
        killed = threading.Event()

        def kill_after_some() -> None:
            if len(got) == 20 and not killed.is_set():
                killed.set()
                node1.kill()  # SIGKILL, in the middle of traffic

        got: list[str] = []

        async def go() -> list[str]:
            listener = asyncio.create_task(
                listen(bob, got, len(texts), kill_after_some)
            )
            await asyncio.sleep(0.3)
            accepted = await send_all(alice, "bob", texts)
            await listener
            return accepted

        accepted = arun(go())
    assert killed.is_set()
    assert balancer.connections >= 2  # bob did reconnect, to node2
    assert accepted == texts
    assert got == texts  # every accepted message, once, in order


def test_lost_wake_ups_are_made_good_when_nats_returns(tmp_path: Path) -> None:
    require(NATS_URL)
    with postgres_schema() as url, TcpProxy(_port(NATS_URL)) as nats_link:
        cluster = Cluster(tmp_path, url)
        node0, node1, _ = cluster.nodes
        # node1 reaches NATS only through a link the test can break
        node1.env = {"STRONGROOM_BUS_URL": f"nats://127.0.0.1:{nats_link.port}"}
        cluster.start()
        try:
            alice = cluster.org.activate("alice", "phone", node0.url)
            bob = cluster.org.activate("bob", "phone", node1.url)
            texts = [f"while NATS is away {i:02d}" for i in range(40)]
            got: list[str] = []

            async def go() -> None:
                listener = asyncio.create_task(listen(bob, got, len(texts)))
                await asyncio.sleep(0.5)
                nats_link.refuse()
                nats_link.cut()
                await asyncio.to_thread(
                    wait_until,
                    lambda: readyz(node1)[0] == 503,
                    "node1 reports itself unready",
                )
                assert readyz(node1)[1].get("bus") == "down"
                # node1 still serves bob, but hears no wake-ups from node0 now
                async with client.Client(alice) as c:  # node0 and its NATS are fine
                    for text in texts:
                        await c.send_text("bob", text)
                await asyncio.sleep(0.5)
                assert got == []
                nats_link.refuse(False)
                await listener  # woken when NATS is back: nothing was lost

            arun(go())
            assert got == texts  # every one, once, in order
            assert readyz(node1)[0] == 200
        finally:
            cluster.stop()


async def _terminate_store_connections(schema: str) -> int:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND application_name = $1",
            f"strongroom-{schema}",
        )
        return len(rows)
    finally:
        await conn.close()


def test_store_connections_killed_under_load_lose_nothing(tmp_path: Path) -> None:
    require(NATS_URL)
    with postgres_schema() as url:
        schema = url.rsplit("schema=", 1)[1]
        named = f"{url}&application_name=strongroom-{schema}"
        org = Org(tmp_path, Backend("postgres", named, NATS_URL))
        with org.server:
            alice = org.activate("alice")
            bob = org.activate("bob")
            texts = [f"under fire {i}" for i in range(40)]
            killed: list[int] = []

            async def killer(stop: asyncio.Event) -> None:
                while not stop.is_set():
                    killed.append(await _terminate_store_connections(schema))
                    await asyncio.sleep(0.1)

            async def go() -> tuple[list[str], list[str]]:
                stop = asyncio.Event()
                kill_task = asyncio.create_task(killer(stop))
                got: list[str] = []
                listener = asyncio.create_task(listen(bob, got, len(texts)))
                accepted = await send_all(alice, "bob", texts)
                await listener
                stop.set()
                await kill_task
                return accepted, got

            accepted, got = arun(go())
            assert sum(killed) > 0  # the store's connections really were killed
            assert accepted == texts
            assert got == texts
            assert readyz(org.server)[0] == 200


def test_readyz_follows_the_database(tmp_path: Path) -> None:
    require(NATS_URL)
    with postgres_schema() as url, TcpProxy(_port(POSTGRES_URL)) as db_link:
        schema = url.rsplit("schema=", 1)[1]
        org = Org(tmp_path, Backend("postgres", url, NATS_URL))
        proxied = with_schema(
            POSTGRES_URL.replace(f":{_port(POSTGRES_URL)}/", f":{db_link.port}/"),
            schema,
        )
        org.server.env = {"STRONGROOM_DATABASE_URL": proxied}
        with org.server:
            alice = org.activate("alice")
            bob = org.activate("bob")
            assert readyz(org.server)[0] == 200
            db_link.refuse()
            db_link.cut()
            wait_until(lambda: readyz(org.server)[0] == 503, "the node is unready")
            assert readyz(org.server)[1].get("store") == "down"
            db_link.refuse(False)
            wait_until(lambda: readyz(org.server)[0] == 200, "the node is ready again")
            arun(send_all(alice, "bob", ["after the outage"]))
            got: list[str] = []
            arun(listen(bob, got, 1))
            assert got == ["after the outage"]
