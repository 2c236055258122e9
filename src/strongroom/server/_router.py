"""This node's streams by device: committed envelopes reach them from memory.

Rules:

1. A stream attaches after its handshake and detaches when it ends.  The router holds one
   bus subscription per device that has a stream here, so a wake-up from another node
   (``deliver``) or a revocation (``revoked``) reaches every stream of that device.
   ``control`` (IT changed the device's policy) reaches the stream's own handler.
2. ``committed`` is called only after the store committed the rows.  It hands each row to
   the recipient's streams here (``Deliveries.push``) in the order the store numbered
   them, at once.
3. The other nodes are woken through the bus (``here=False``: the streams here know
   already), once per turn of the event loop for all the devices committed in it.  The
   local bus has no other node, so that costs one no-op per turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from ._delivery import Deliveries
from ._tally import Timings
from .bus import Bus, BusEvent, Subscription
from .store import InboxRow

__all__ = ["Router"]

log = logging.getLogger("strongroom.server")

OnEvent = Callable[[BusEvent], None]


class _Device:
    __slots__ = ("streams", "subscription")

    def __init__(self) -> None:
        self.streams: dict[Deliveries, OnEvent] = {}
        self.subscription: Subscription | None = None


class Router:
    """Streams connected to this node, by device."""

    def __init__(self, bus: Bus, publish_time: Timings) -> None:
        self._bus = bus
        self._publish_time = publish_time
        self._devices: dict[str, _Device] = {}
        self._elsewhere: dict[str, None] = {}  # devices to wake on the other nodes
        self._waking: asyncio.Task[None] | None = None

    def attach(
        self, device_id: str, deliveries: Deliveries, on_event: OnEvent
    ) -> Callable[[], None]:
        """Route the device's rows and wake-ups to ``deliveries``, and its other events
        (``revoked``, ``control``) to ``on_event``; returns the detach."""
        device = self._devices.get(device_id)
        if device is None:
            device = self._devices[device_id] = _Device()
            device.subscription = self._bus.subscribe(
                device_id, lambda event: self._on_bus(device_id, event)
            )
        device.streams[deliveries] = on_event

        def detach() -> None:
            device.streams.pop(deliveries, None)
            if not device.streams and self._devices.get(device_id) is device:
                del self._devices[device_id]
                if device.subscription is not None:
                    device.subscription.cancel()

        return detach

    def _on_bus(self, device_id: str, event: BusEvent) -> None:
        device = self._devices.get(device_id)
        if device is None:
            return
        for deliveries, on_event in list(device.streams.items()):
            if event == "deliver":
                deliveries.wake()
            else:
                on_event(event)

    def committed(self, rows: Sequence[tuple[str, InboxRow]]) -> None:
        """Rows the store committed, as (device, row): deliver here, wake elsewhere."""
        devices = self._devices
        for device_id, row in rows:
            device = devices.get(device_id)
            if device is not None:
                for deliveries in list(device.streams):
                    deliveries.push(row)
            self._elsewhere[device_id] = None
        if self._waking is None:
            self._waking = asyncio.get_running_loop().create_task(
                self._wake_elsewhere()
            )

    async def _wake_elsewhere(self) -> None:
        """Rule 3: one publish per turn of the loop, for every device committed in it."""
        try:
            while self._elsewhere:
                devices, self._elsewhere = list(self._elsewhere), {}
                with self._publish_time.time():
                    await self._bus.publish("deliver", devices, here=False)
        except Exception:  # best effort: the other nodes' devices read at next wake-up
            log.exception("could not wake the other nodes")
        finally:
            self._waking = None
