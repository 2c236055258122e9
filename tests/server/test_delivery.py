"""One stream's deliveries (``server._delivery``): memory while caught up, the store when not.

A ``Harness`` stands for the stream and the store: ``committed`` appends a row to the
device's inbox as the store would, and pushes it or not (a row committed on another node
is not pushed here); ``fetch`` reads that inbox, and can be held open to let events
happen while a read is in flight.  What the stream sent is ``sent``; ``reads`` counts
store reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from strongroom.server._delivery import Deliveries
from strongroom.server.store import InboxRow


def row(seq: int) -> InboxRow:
    return InboxRow(seq, b"id-%d" % seq, "SENDER", 1000 + seq, b"body %d" % seq)


class Harness:
    def __init__(self, window: int = 100) -> None:
        self.inbox: list[InboxRow] = []
        self.sent: list[int] = []
        self.acked = 0
        self.window = window
        self.reads = 0
        self.gate: asyncio.Event | None = None  # set: reads wait for it
        self.reading = asyncio.Event()
        self.failed: list[BaseException] = []
        self.d = Deliveries(self._send, self._room, self._fetch, self.failed.append)

    def _send(self, r: InboxRow) -> None:
        assert not self.sent or r.seq > self.sent[-1], "seqs must increase"
        self.sent.append(r.seq)

    def _room(self) -> int:
        return self.window - len([s for s in self.sent if s > self.acked])

    async def _fetch(self, after: int, limit: int) -> list[InboxRow]:
        self.reads += 1
        snapshot = [r for r in self.inbox if r.seq > after][:limit]
        self.reading.set()
        if self.gate is not None:
            await self.gate.wait()
        return snapshot

    def committed(self, seq: int, *, push: bool = True) -> None:
        self.inbox.append(row(seq))
        if push:
            self.d.push(row(seq))

    def ack(self, upto: int, *, delete: bool = True) -> None:
        self.acked = upto
        if delete:
            self.inbox = [r for r in self.inbox if r.seq > upto]
        self.d.pump()

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        await self.d.wait_reader()


def run(body: Callable[[Harness], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        async with asyncio.timeout(5):
            await body(Harness())

    asyncio.run(main())


def test_connecting_reads_the_store_then_takes_pushes_from_memory() -> None:
    async def body(h: Harness) -> None:
        h.committed(1, push=False)  # waiting before the stream connected
        h.committed(2, push=False)
        h.d.pump()
        await h.settle()
        assert h.sent == [1, 2] and h.reads == 1
        for seq in range(3, 8):
            h.committed(seq)
        assert h.sent == [1, 2, 3, 4, 5, 6, 7]  # at once, without a read
        await h.settle()
        assert h.reads == 1

    run(body)


def test_a_gap_in_the_pushes_is_read_from_the_store() -> None:
    """Seq 3 was committed by another node, its wake-up not here yet: 4 must wait."""

    async def body(h: Harness) -> None:
        h.d.pump()
        await h.settle()
        h.committed(1)
        h.committed(2)
        h.committed(3, push=False)
        h.committed(4)
        assert h.sent == [1, 2]  # never 4 before 3
        await h.settle()
        assert h.sent == [1, 2, 3, 4]
        h.committed(5)
        assert h.sent == [1, 2, 3, 4, 5]

    run(body)


def test_a_wake_up_reads_the_store() -> None:
    async def body(h: Harness) -> None:
        h.d.pump()
        await h.settle()
        h.committed(1, push=False)
        await h.settle()
        assert h.sent == []
        h.d.wake()
        await h.settle()
        assert h.sent == [1]

    run(body)


def test_a_wake_up_during_a_read_reads_again() -> None:
    async def body(h: Harness) -> None:
        h.gate = asyncio.Event()
        h.d.pump()
        await h.reading.wait()  # the first read took its snapshot: nothing
        h.committed(1, push=False)
        h.d.wake()
        h.gate.set()
        await h.settle()
        assert h.sent == [1] and h.reads == 2

    run(body)


def test_pushes_during_a_read_are_held_and_delivered_in_order() -> None:
    async def body(h: Harness) -> None:
        h.committed(1, push=False)
        h.gate = asyncio.Event()
        h.d.pump()
        await h.reading.wait()  # snapshot: [1]
        h.committed(2)
        h.committed(3)
        assert h.sent == []  # behind: nothing from memory yet
        h.gate.set()
        await h.settle()
        assert h.sent == [1, 2, 3] and h.reads == 1
        h.committed(4)
        assert h.sent == [1, 2, 3, 4]

    run(body)


def test_rows_acknowledged_elsewhere_are_skipped_by_the_stores_word() -> None:
    """Held rows the store no longer has (another connection of the device acked them)
    are passed over; the stream is not stuck on the hole they leave."""

    async def body(h: Harness) -> None:
        h.d.pump()
        await h.settle()
        h.window = 0  # the device reads slowly: pushes are held
        for seq in (1, 2, 3):
            h.committed(seq)
        h.inbox = [r for r in h.inbox if r.seq > 2]  # acked on another connection
        h.d.wake()  # something makes it read the store
        h.window = 100
        h.d.pump()
        await h.settle()
        assert h.sent == [3]
        h.committed(4)
        assert h.sent == [3, 4]

    run(body)


def test_the_window_holds_deliveries_until_acknowledged() -> None:
    async def body(h: Harness) -> None:
        h.window = 3
        h.d.pump()
        await h.settle()
        for seq in range(1, 8):
            h.committed(seq)
        assert h.sent == [1, 2, 3]
        h.ack(2)
        assert h.sent == [1, 2, 3, 4, 5]
        h.ack(5)
        assert h.sent == [1, 2, 3, 4, 5, 6, 7]
        assert h.reads == 1

    run(body)


def test_more_pushed_than_held_is_read_from_the_store() -> None:
    async def body(h: Harness) -> None:
        h.window = 1
        h.d.pump()
        await h.settle()
        for seq in range(1, 3000):
            h.committed(seq)
        assert h.sent == [1]
        h.window = 10_000
        h.ack(1, delete=False)
        await h.settle()
        assert h.sent == list(range(1, 3000))
        assert h.reads > 1

    run(body)


def test_nothing_is_delivered_after_close() -> None:
    async def body(h: Harness) -> None:
        h.committed(1, push=False)
        h.gate = asyncio.Event()
        h.d.pump()
        await h.reading.wait()
        h.d.close()
        h.gate.set()
        h.committed(2)
        h.d.wake()
        await h.settle()
        assert h.sent == []

    run(body)


def test_a_failed_read_is_reported() -> None:
    async def body(h: Harness) -> None:
        async def broken(after: int, limit: int) -> list[InboxRow]:
            raise OSError("disk on fire")

        failures: list[BaseException] = []
        d = Deliveries(lambda r: None, lambda: 10, broken, failures.append)
        d.pump()
        await asyncio.sleep(0.01)
        assert [type(f) for f in failures] == [OSError]

    run(body)
