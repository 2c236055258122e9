"""What every handler needs, passed explicitly: config, store, bus, authority, clock, metrics."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from strongroom.crypto import AuthorityKey

from ._config import Config
from .bus import Bus
from .store import Store

__all__ = ["Metrics", "ServerContext", "wall_clock_ms"]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connected = Gauge(
            "strongroom_connected_devices",
            "Devices with an open stream",
            registry=self.registry,
        )
        self.envelopes_in = Counter(
            "strongroom_envelopes_in",
            "Envelope copies accepted",
            registry=self.registry,
        )
        self.envelopes_out = Counter(
            "strongroom_envelopes_out", "Envelopes delivered", registry=self.registry
        )
        self.activations = Counter(
            "strongroom_activations",
            "Activation outcomes",
            ["outcome"],
            registry=self.registry,
        )


class ServerContext:
    def __init__(
        self,
        config: Config,
        store: Store,
        bus: Bus,
        authority: AuthorityKey,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.config = config
        self.store = store
        self.bus = bus
        self.authority = authority
        self.clock = clock
        self.metrics = Metrics()
        self.ready = False
        # The server's name in stream challenges: the authority key's fingerprint, so a
        # device's answer is useful to no other organisation's server.
        self.server_name = authority.public.fingerprint().replace(" ", "")
