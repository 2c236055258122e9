"""Wake-ups between the parts of the server that store envelopes and those that deliver them.

A ``Bus`` carries no message content, only "device X has something new" (``deliver``) and
"device X was revoked" (``revoked``).  Delivery always reads the store, so a lost wake-up
delays a message until the next one or the device's next connection; it never loses it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal, Protocol

__all__ = ["Bus", "BusEvent", "LocalBus", "Subscription"]

BusEvent = Literal["deliver", "revoked"]
Listener = Callable[[BusEvent], None]


class Subscription(Protocol):
    def cancel(self) -> None: ...


class Bus(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def subscribe(self, device_id: str, listener: Listener) -> Subscription:
        """Call ``listener`` (on the event loop, without blocking) for the device's events."""

    async def publish(self, event: BusEvent, device_ids: Iterable[str]) -> None: ...


class _LocalSubscription:
    def __init__(self, bus: LocalBus, device_id: str, listener: Listener) -> None:
        self._bus = bus
        self._device_id = device_id
        self._listener = listener

    def cancel(self) -> None:
        listeners = self._bus._listeners.get(self._device_id)
        if listeners is not None:
            listeners.discard(self._listener)
            if not listeners:
                del self._bus._listeners[self._device_id]


class LocalBus:
    """The in-process bus: one server process, no network."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[Listener]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._listeners.clear()

    def subscribe(self, device_id: str, listener: Listener) -> Subscription:
        self._listeners.setdefault(device_id, set()).add(listener)
        return _LocalSubscription(self, device_id, listener)

    async def publish(self, event: BusEvent, device_ids: Iterable[str]) -> None:
        for device_id in device_ids:
            for listener in tuple(self._listeners.get(device_id, ())):
                listener(event)
