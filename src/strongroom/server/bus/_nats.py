"""The scale-out bus: wake-ups between server nodes over NATS core publish/subscribe.

Rules:

1. A node subscribes to ``strongroom.<org>.device.<id>`` while at least one stream of that
   device is open on it, and unsubscribes when the last one closes.  ``<org>`` is the
   authority key's fingerprint, so organisations sharing a NATS cluster never see each
   other's wake-ups.
2. An event reaches local listeners at once, without a round trip through NATS (unless the
   publisher says ``here=False``: it told them itself); the copy that comes back from NATS
   carries this node's id and is ignored.
3. NATS may lose a wake-up (it is at-most-once, and the connection can drop).  That delays,
   never loses, a message: delivery always reads the store, and when the connection comes
   back every local listener is woken to read its inbox again.
4. While NATS is unreachable the bus reports itself unhealthy, so ``/readyz`` takes the
   node out of the load balancer; the node keeps serving the devices connected to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterable

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from strongroom.errors import ConfigError

from .._urls import redacted_url
from ._local import BusEvent, Listener, LocalBus

__all__ = ["NatsBus"]

log = logging.getLogger("strongroom.server.bus")

_EVENTS: dict[bytes, BusEvent] = {
    b"deliver": "deliver",
    b"revoked": "revoked",
    b"control": "control",
}
_RETRY_S = 0.5


def _servers(url: str) -> list[str]:
    servers = [part.strip() for part in url.split(",") if part.strip()]
    for server in servers:
        if not server.startswith(("nats://", "tls://")):
            raise ConfigError(
                f"bus URL {redacted_url(server)!r} is not a NATS URL"
                " (nats://HOST:PORT or tls://…)"
            )
    return servers


class _Sub:
    __slots__ = ("bus", "device_id", "listener")

    def __init__(self, bus: NatsBus, device_id: str, listener: Listener) -> None:
        self.bus = bus
        self.device_id = device_id
        self.listener = listener

    def cancel(self) -> None:
        self.bus._unsubscribe(self.device_id, self.listener)


class NatsBus:
    """``Bus`` over a NATS server or cluster."""

    def __init__(
        self, url: str, namespace: str, first_connect_wait: float = 3.0
    ) -> None:
        self._servers = _servers(url)
        if not namespace.isalnum():
            raise ConfigError(f"bus namespace {namespace!r} must be letters and digits")
        self._prefix = f"strongroom.{namespace}.device."
        self._node = secrets.token_hex(8).encode()
        self._local = LocalBus()
        self._nc: NatsClient | None = None
        self._subs: dict[str, NatsSubscription] = {}
        self._pending_subs: set[str] = set()
        self._connected = asyncio.Event()
        self._connector: asyncio.Task[None] | None = None
        self._closing = False
        self._first_connect_wait = first_connect_wait

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._connector = asyncio.create_task(self._connect_forever())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), self._first_connect_wait)
        if not self._connected.is_set():
            log.warning(
                "NATS is not reachable yet at %s; retrying",
                ", ".join(redacted_url(s) for s in self._servers),
            )

    async def _connect_forever(self) -> None:
        while not self._closing:
            try:
                nc = await nats.connect(
                    self._servers,
                    name="strongroom-server",
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=_RETRY_S,
                    connect_timeout=2,
                    ping_interval=5,
                    max_outstanding_pings=2,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    error_cb=self._on_error,
                )
            except Exception as exc:  # nats raises several unrelated types here
                log.warning("cannot connect to NATS: %s", type(exc).__name__)
                await asyncio.sleep(_RETRY_S)
                continue
            self._nc = nc
            for device_id in list(self._local.devices()):
                await self._nats_subscribe(device_id)
            self._connected.set()
            log.info("connected to NATS")
            self._wake_all()
            return

    async def close(self) -> None:
        self._closing = True
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
        await self._local.close()

    def healthy(self) -> bool:
        return (
            self._connected.is_set()
            and self._nc is not None
            and (self._nc.is_connected)
        )

    async def _on_disconnected(self) -> None:
        if not self._closing:
            log.warning("lost the NATS connection; reconnecting")
            self._connected.clear()

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")
        self._connected.set()
        # Wake-ups published while we were away are gone: every local stream looks again.
        self._wake_all()

    async def _on_error(self, exc: Exception) -> None:
        log.warning("NATS error: %s", type(exc).__name__)

    def _wake_all(self) -> None:
        for device_id in list(self._local.devices()):
            self._local.dispatch("deliver", device_id)
            self._local.dispatch("control", device_id)

    # --- subscriptions ------------------------------------------------------------------

    def subscribe(self, device_id: str, listener: Listener) -> _Sub:
        first = not self._local.has(device_id)
        self._local.subscribe(device_id, listener)
        if first and self._nc is not None:
            self._pending_subs.add(device_id)
            asyncio.get_running_loop().create_task(self._nats_subscribe(device_id))
        return _Sub(self, device_id, listener)

    def _unsubscribe(self, device_id: str, listener: Listener) -> None:
        self._local.remove(device_id, listener)
        if self._local.has(device_id):
            return
        self._pending_subs.discard(device_id)
        sub = self._subs.pop(device_id, None)
        if sub is not None:
            asyncio.get_running_loop().create_task(self._nats_unsubscribe(sub))

    async def _nats_subscribe(self, device_id: str) -> None:
        nc = self._nc
        if nc is None or device_id in self._subs:
            return
        self._pending_subs.discard(device_id)
        if not self._local.has(device_id):
            return
        try:
            self._subs[device_id] = await nc.subscribe(
                self._prefix + device_id, cb=self._on_message
            )
        except Exception as exc:
            # nats-py re-sends every live subscription after a reconnect; one that could
            # not be made now is retried when the connection is back (see _connect_forever)
            log.warning("cannot subscribe on NATS: %s", type(exc).__name__)

    async def _nats_unsubscribe(self, sub: NatsSubscription) -> None:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    async def _on_message(self, msg: Msg) -> None:
        node, _, name = msg.data.partition(b" ")
        event = _EVENTS.get(name)
        if node == self._node or event is None:
            return
        self._local.dispatch(event, msg.subject.removeprefix(self._prefix))

    # --- publishing ---------------------------------------------------------------------

    async def publish(
        self, event: BusEvent, device_ids: Iterable[str], *, here: bool = True
    ) -> None:
        ids = list(device_ids)
        await self._local.publish(event, ids, here=here)
        nc = self._nc
        if nc is None or not nc.is_connected:
            return  # at-most-once: the devices' next connection reads the store
        payload = self._node + b" " + event.encode()
        try:
            for device_id in ids:
                await nc.publish(self._prefix + device_id, payload)
        except Exception as exc:
            log.warning("cannot publish on NATS: %s", type(exc).__name__)

    def __repr__(self) -> str:
        return f"NatsBus({[redacted_url(s) for s in self._servers]!r})"
