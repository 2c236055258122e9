"""Wake-ups between the parts of the server that store envelopes and those that deliver them.

A ``Bus`` carries no message content, only "device X has something new" (``deliver``) and
"device X was revoked" (``revoked``) and "IT has news for device X" (``control``: a
policy change; the stream reads the signed policy from the store).  A stream that hears ``deliver`` reads the store, so a
lost wake-up delays a message until the next one or the device's next connection; it never
loses it.  Envelopes committed on this node reach this node's streams without the bus
(``server._router``), which then wakes only the other nodes (``here=False``).

Two implementations: ``LocalBus`` (one process, the default) and ``NatsBus`` (several
server nodes sharing a NATS server or cluster).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from strongroom.errors import ConfigError

from .._urls import redacted_url
from ._local import BusEvent, Listener, LocalBus

if TYPE_CHECKING:
    from ._nats import NatsBus

__all__ = [
    "Bus",
    "BusEvent",
    "Listener",
    "LocalBus",
    "NatsBus",
    "Subscription",
    "bus_from_url",
]


class Subscription(Protocol):
    def cancel(self) -> None: ...


class Bus(Protocol):
    async def start(self) -> None:
        """Begin connecting; returns even when the bus is not reachable yet."""

    async def close(self) -> None: ...

    def healthy(self) -> bool:
        """Whether wake-ups reach the other nodes now (``/readyz`` reports it)."""

    def subscribe(self, device_id: str, listener: Listener) -> Subscription:
        """Call ``listener`` (on the event loop, without blocking) for the device's events."""

    async def publish(
        self, event: BusEvent, device_ids: Iterable[str], *, here: bool = True
    ) -> None:
        """Tell every node's listeners of these devices; with ``here=False``, only the
        other nodes' (the caller has told this node's streams itself)."""


def bus_from_url(url: str, namespace: str) -> Bus:
    """Build the bus a URL names: ``local:`` or ``nats://HOST:PORT[,nats://…]``.

    ``namespace`` separates organisations that share one NATS cluster.
    """
    if url in ("local:", "local", ""):
        return LocalBus()
    if url.startswith(("nats://", "tls://")):
        from ._nats import NatsBus  # loads the NATS client only for a NATS bus

        return NatsBus(url, namespace)
    raise ConfigError(
        f"unsupported bus URL {redacted_url(url)!r}: use local: or nats://HOST:PORT"
    )


def __getattr__(name: str) -> Any:
    if name == "NatsBus":
        from ._nats import NatsBus

        return NatsBus
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
