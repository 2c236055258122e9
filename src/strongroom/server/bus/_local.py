"""The in-process bus: one server process, no network."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Literal

__all__ = ["BusEvent", "Listener", "LocalBus"]

BusEvent = Literal["deliver", "revoked", "control"]
Listener = Callable[[BusEvent], None]


class _LocalSubscription:
    __slots__ = ("_bus", "_device_id", "_listener")

    def __init__(self, bus: LocalBus, device_id: str, listener: Listener) -> None:
        self._bus = bus
        self._device_id = device_id
        self._listener = listener

    def cancel(self) -> None:
        self._bus.remove(self._device_id, self._listener)


class LocalBus:
    """Listeners per device, called synchronously on publish."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[Listener]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._listeners.clear()

    def healthy(self) -> bool:
        return True

    def subscribe(self, device_id: str, listener: Listener) -> _LocalSubscription:
        self._listeners.setdefault(device_id, set()).add(listener)
        return _LocalSubscription(self, device_id, listener)

    async def publish(
        self, event: BusEvent, device_ids: Iterable[str], *, here: bool = True
    ) -> None:
        if here:  # there is no other node
            for device_id in device_ids:
                self.dispatch(event, device_id)

    # --- for buses that carry events between nodes ---------------------------------------

    def dispatch(self, event: BusEvent, device_id: str) -> None:
        for listener in tuple(self._listeners.get(device_id, ())):
            listener(event)

    def remove(self, device_id: str, listener: Listener) -> None:
        listeners = self._listeners.get(device_id)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[device_id]

    def has(self, device_id: str) -> bool:
        return device_id in self._listeners

    def devices(self) -> Iterator[str]:
        return iter(self._listeners)
