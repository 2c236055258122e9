"""What every handler needs, passed explicitly: config, store, bus, authority, clock, metrics,
and the router that hands committed envelopes to this node's streams."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from strongroom.crypto import AuthorityKey

from ._config import Config
from ._fleet import Fleet
from ._router import Router
from ._tally import TallyCollector
from .bus import Bus
from .store import Store

__all__ = ["Metrics", "ServerContext", "wall_clock_ms"]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connected = Gauge(
            "strongroom_connected_devices",
            "Devices with an open stream",
            registry=self.registry,
        )
        # The hot path's counts: no lock per increment (``_tally``).
        self.hot = hot = TallyCollector(self.registry)
        self.envelopes_in = hot.counter(
            "strongroom_envelopes_in", "Envelope copies accepted"
        )
        self.envelopes_out = hot.counter(
            "strongroom_envelopes_out", "Envelopes delivered"
        )
        store = hot.timings(
            "strongroom_store_seconds",
            "Time the stream's store operations took, commit included",
            _LATENCY_BUCKETS,
            labels=["op"],
            values=[("accept",), ("fetch",), ("ack",)],
        )
        self.store_accept = store[("accept",)]
        self.store_fetch = store[("fetch",)]
        self.store_ack = store[("ack",)]
        (self.bus_publish,) = hot.timings(
            "strongroom_bus_publish_seconds",
            "Time a wake-up publish took",
            _LATENCY_BUCKETS,
        ).values()
        self.inbox_depth = Gauge(
            "strongroom_inbox_depth",
            "Envelopes waiting in all inboxes (read from the store at each scrape)",
            registry=self.registry,
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
        blob_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.bus = bus
        self.authority = authority
        self.clock = clock
        #: Where attachment ciphertext lives; None: this server takes no attachments.
        self.blob_dir = blob_dir
        self.metrics = Metrics()
        self.metrics.hot.counter_from(
            "strongroom_store_commits",
            "Transactions of the hot path's group commit",
            lambda: store.group_commits()[0],
        )
        self.metrics.hot.counter_from(
            "strongroom_store_committed_writes",
            "Sends and acknowledgements those transactions carried",
            lambda: store.group_commits()[1],
        )
        self.router = Router(bus, self.metrics.bus_publish)
        self.ready = False
        # The server's name in stream challenges: the authority key's fingerprint, so a
        # device's answer is useful to no other organisation's server.
        self.server_name = authority.public.fingerprint_id()
        #: IT's operations (users, devices, policy, audit), for every entry point.
        self.fleet = Fleet(self)
        from ._escrow import Escrow  # its routes import this module

        #: Lawful-access escrow, when the organisation opts in.
        self.escrow = Escrow(self)
