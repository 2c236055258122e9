"""The load generator: streams that send, receive, acknowledge and time, in worker processes.

Rules:

1. A message is *in flight* from the moment it is written until it is both accepted (the
   sender has ``Accepted``) and delivered (the recipient has ``Deliver``); the backlog fill
   needs only ``Accepted``.  Closed-loop runs keep at most ``window`` in flight per device;
   the protocol allows ``proto.MAX_PENDING_SENDS``, which no run exceeds.
2. Latency is send-to-deliver, on one clock (``time.perf_counter``, CLOCK_MONOTONIC, the
   same in every process).  Paced runs schedule message *k* at ``t0 + k / rate`` and time
   it from that schedule, not from when the loop got round to it, so a stall is charged to
   every message it delayed (no coordinated omission).
3. Recipients acknowledge cumulatively, as the SDK does: every ``ack_every`` deliveries,
   and otherwise once the oldest unacknowledged delivery has waited ``ACK_DELAY`` (a
   sweep every ``ACK_SWEEP`` looks).
4. Each job runs in its own worker process (``_workers``) and owns whole pairs (a group:
   its sender and every member), so a message's send and deliveries are timed in one
   process.
"""

from __future__ import annotations

import asyncio
import collections
import time
from array import array
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

import msgspec

from strongroom import proto
from strongroom.client import ACK_DELAY, ACK_EVERY

from ._fleet import Lane
from ._wire import FrameHandler, Identity, Link, Stream, open_link

__all__ = [
    "ACK_SWEEP",
    "BacklogDrain",
    "EchoJob",
    "Engine",
    "IdleJob",
    "Job",
    "Result",
    "RoutingJob",
    "Source",
    "ack_all",
    "ack_sweep",
    "open_streams",
]

ACK_SWEEP = 0.05  # seconds between acknowledgement sweeps (rule 3): the SDK's tick
_TICK = 0.001


class Result(msgspec.Struct):
    started: float = 0.0
    finished: float = 0.0
    completed: int = 0
    latencies: bytes = b""
    cpu_seconds: float = 0.0
    verified: int = 0
    connected: int = 0
    errors: list[str] = []
    sent: int = 0  # messages written (fan-out: each to many devices)
    spans: bytes = b""  # fan-out: per message, send to the last member's delivery


class Job:
    """What one worker does: ``connect`` before the start, ``run`` after it (once a phase)."""

    hold = False  # keep the connections open until the conductor says stop
    phases = 1

    async def connect(self) -> None:
        raise NotImplementedError

    async def run(self) -> Result:
        raise NotImplementedError

    def close(self) -> None:
        return None


async def _gather_limited(
    makers: list[Callable[[], Coroutine[Any, Any, None]]], limit: int
) -> None:
    semaphore = asyncio.Semaphore(limit)

    async def one(make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        async with semaphore:
            await make()

    await asyncio.gather(*(one(m) for m in makers))


async def open_streams(
    url: str, identities: Sequence[Identity], handler: FrameHandler, limit: int = 128
) -> dict[str, Stream]:
    """An authenticated stream for each device, ``limit`` handshakes at once."""
    streams: dict[str, Stream] = {}

    async def open_one(identity: Identity) -> None:
        stream = Stream(identity, handler)
        await stream.open(url)
        streams[identity.device_id] = stream

    await _gather_limited(
        [lambda i=i: open_one(i) for i in identities],  # type: ignore[misc]
        limit,
    )
    return streams


# --- the engine: closed loop or paced, over any kind of sender -------------------------------


class Source:
    """One sending device (or echo connection) as the engine sees it."""

    __slots__ = ("count", "inflight", "next", "scheduled")

    def __init__(self, count: int) -> None:
        self.count = count
        self.next = 0  # messages fired
        self.scheduled = 0  # messages given a time (paced runs)
        self.inflight = 0

    def fire(self, stamp: float) -> None:
        raise NotImplementedError


class Engine:
    def __init__(
        self, sources: Sequence[Source], window: int, rate: float | None
    ) -> None:
        self.sources = sources
        self.window = window
        self.rate = rate
        self.remaining = sum(s.count for s in sources)
        self.latencies = array("d")
        self.started = 0.0
        self.finished = 0.0
        self.errors: list[str] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.verified = 0

    def pump(self, source: Source) -> None:
        while source.inflight < self.window and source.next < source.count:
            source.inflight += 1
            source.fire(time.perf_counter())

    def complete(self, source: Source) -> None:
        source.inflight -= 1
        self.remaining -= 1
        if self.remaining <= 0:
            self._finish()
        elif self.rate is None:
            self.pump(source)

    def _finish(self) -> None:
        self.finished = time.perf_counter()
        if not self.done.done():
            self.done.set_result(None)

    def stop_issuing(self) -> None:
        """Closed loop: fire nothing more; the run ends when what is in flight is done."""
        for source in self.sources:
            self.remaining -= source.count - source.next
            source.count = source.next
        if self.remaining <= 0:
            self._finish()

    def fail(self, text: str) -> None:
        self.errors.append(text)
        if not self.done.done():
            self.done.set_exception(RuntimeError(text))

    async def run(self, timeout: float, duration: float | None = None) -> None:
        """Until every message is done; with ``duration`` (closed loop only), stop
        issuing after that many seconds."""
        self.started = time.perf_counter()
        if self.remaining <= 0:
            return
        if duration is not None:
            assert self.rate is None
            asyncio.get_running_loop().call_later(duration, self.stop_issuing)
        if self.rate is None:
            for source in self.sources:
                self.pump(source)
        else:
            pacer = asyncio.create_task(self._pace(self.rate))
        try:
            await asyncio.wait_for(asyncio.shield(self.done), timeout)
        finally:
            if self.rate is not None:
                pacer.cancel()

    async def _pace(self, rate: float) -> None:
        order = collections.deque(s for s in self.sources if s.count > 0)
        waiting: collections.deque[tuple[float, Source]] = collections.deque()
        start = self.started
        k = 0
        cap = min(self.window, proto.MAX_PENDING_SENDS)
        while (order or waiting) and not self.done.done():
            now = time.perf_counter()
            for _ in range(len(waiting)):
                stamp, source = waiting.popleft()
                if source.inflight < cap:
                    source.inflight += 1
                    source.fire(stamp)
                else:
                    waiting.append((stamp, source))
            while order and start + k / rate <= now:
                source = order.popleft()
                stamp = start + k / rate
                k += 1
                source.scheduled += 1
                if source.inflight < cap:
                    source.inflight += 1
                    source.fire(stamp)
                else:
                    waiting.append((stamp, source))
                if source.scheduled < source.count:
                    order.append(source)
            await asyncio.sleep(_TICK)


async def ack_all(streams: Iterable[Stream]) -> None:
    """Acknowledge everything delivered, and let the frames leave."""
    for stream in streams:
        stream.ack()
    await asyncio.sleep(0.05)


async def ack_sweep(streams: list[Stream]) -> None:
    """Rule 3's sweep: acknowledge what has waited ``ACK_DELAY``, on each stream."""
    while True:
        await asyncio.sleep(ACK_SWEEP)
        due = time.perf_counter() - ACK_DELAY
        for stream in streams:
            if (
                stream.link is not None
                and stream.last_delivered > stream.last_acked
                and stream.unacked_since <= due
            ):
                stream.ack()


# --- routing (and the backlog fill) ----------------------------------------------------------


class _Device(Source):
    __slots__ = ("engine", "job", "lane", "stream")

    def __init__(self, job: RoutingJob, stream: Stream, lane: Lane | None, count: int):
        super().__init__(count)
        self.job = job
        self.stream = stream
        self.lane = lane

    def fire(self, stamp: float) -> None:
        lane = self.lane
        assert lane is not None
        if self.job.live:
            message_id, frame = lane.encrypt(self.job.text)
        else:
            message_id, frame = lane.frames[self.next]
        self.next += 1
        self.job.pending[message_id] = [stamp, 0, self]
        self.stream.send(frame)


class RoutingJob(Job):
    """Devices that send ``lane.frames`` (or live-encrypted text) to their peers.

    ``lanes`` are this worker's sending lanes; ``receivers`` maps each receiving device to
    the lanes it decrypts with (live mode), keyed by sender device id.  With
    ``need_delivery`` false (the backlog fill) a message is done once accepted.
    """

    def __init__(
        self,
        url: str,
        lanes: list[tuple[Lane, int]],
        receivers: list[tuple[Identity, dict[str, Lane]]],
        *,
        window: int,
        rate: float | None = None,
        live: bool = False,
        text: str = "",
        ack_every: int = ACK_EVERY,
        need_delivery: bool = True,
        timeout: float = 600.0,
    ) -> None:
        self.url = url
        self.plan = lanes
        self.receivers = receivers
        self.window = window
        self.rate = rate
        self.live = live
        self.text = text
        self.ack_every = ack_every
        self.need = 3 if need_delivery else 1
        self.timeout = timeout
        self.pending: dict[bytes, list[Any]] = {}
        self.streams: dict[str, Stream] = {}
        self.decrypt: dict[str, dict[str, Lane]] = {}
        self.engine: Engine | None = None

    async def connect(self) -> None:
        wanted: dict[str, Identity] = {}
        for lane, _ in self.plan:
            wanted[lane.sender.device_id] = lane.sender
        for identity, lanes in self.receivers:
            wanted[identity.device_id] = identity
            self.decrypt[identity.device_id] = lanes
        self.streams = await open_streams(
            self.url, list(wanted.values()), self._on_frame
        )

    async def run(self) -> Result:
        sources = [
            _Device(self, self.streams[lane.sender.device_id], lane, count)
            for lane, count in self.plan
        ]
        for source in sources:
            source.stream.owner = source
        self.engine = engine = Engine(sources, self.window, self.rate)
        sweeper = asyncio.create_task(ack_sweep(list(self.streams.values())))
        cpu = time.process_time()
        try:
            await engine.run(self.timeout)
        except (RuntimeError, TimeoutError) as exc:
            engine.errors.append(str(exc) or "timed out")
        finally:
            sweeper.cancel()
        cpu = time.process_time() - cpu
        await ack_all(self.streams.values())
        done = sum(s.count for s in sources) - engine.remaining
        return Result(
            started=engine.started,
            finished=engine.finished or time.perf_counter(),
            completed=done,
            latencies=engine.latencies.tobytes(),
            cpu_seconds=cpu,
            verified=engine.verified,
            errors=engine.errors[:5],
        )

    def _mark(self, message_id: bytes, bit: int) -> None:
        entry = self.pending.get(message_id)
        if entry is None:
            return
        entry[1] |= bit
        if entry[1] & self.need == self.need:
            del self.pending[message_id]
            assert self.engine is not None
            self.engine.complete(entry[2])

    def _on_frame(self, stream: Stream, frame: proto.ServerFrame) -> None:
        kind = type(frame)
        if kind is proto.Accepted:
            assert isinstance(frame, proto.Accepted)
            self._mark(frame.id, 1)
        elif kind is proto.Deliver:
            assert isinstance(frame, proto.Deliver)
            entry = self.pending.get(frame.id)
            engine = self.engine
            assert engine is not None
            if entry is not None and not entry[1] & 2:
                engine.latencies.append(time.perf_counter() - entry[0])
            if self.live:
                lane = self.decrypt[stream.identity.device_id].get(frame.sender)
                if lane is not None and lane.open(frame):
                    engine.verified += 1
                else:
                    engine.errors.append(f"delivery {frame.id.hex()} did not verify")
            self._mark(frame.id, 2)
            stream.delivered(frame.seq, self.ack_every)
        elif kind is proto.Error:
            assert isinstance(frame, proto.Error)
            assert self.engine is not None
            self.engine.fail(f"server refused: {frame.code}: {frame.detail}")

    def close(self) -> None:
        for stream in self.streams.values():
            stream.close()


# --- the backlog drain ------------------------------------------------------------------------


class BacklogDrain(Job):
    """One device connects to find ``expect`` envelopes waiting, and reads them all."""

    def __init__(
        self,
        url: str,
        identity: Identity,
        expect: int,
        decrypt: dict[str, Lane] | None,
        ack_every: int,
        timeout: float = 600.0,
    ) -> None:
        self.url = url
        self.identity = identity
        self.expect = expect
        self.decrypt = decrypt
        self.ack_every = ack_every
        self.timeout = timeout
        self.got = 0
        self.verified = 0
        self.errors: list[str] = []
        self.last = 0.0
        self.done: asyncio.Future[None] | None = None
        self.stream: Stream | None = None

    async def connect(self) -> None:
        self.done = asyncio.get_running_loop().create_future()

    async def run(self) -> Result:
        assert self.done is not None
        cpu = time.process_time()
        started = time.perf_counter()
        self.stream = stream = Stream(self.identity, self._on_frame)
        welcome = await stream.open(self.url)
        if welcome.pending < self.expect:
            self.errors.append(f"only {welcome.pending} envelopes were waiting")
        sweeper = asyncio.create_task(ack_sweep([stream]))
        try:
            await asyncio.wait_for(self.done, self.timeout)
        except TimeoutError:
            self.errors.append(f"timed out after {self.got} envelopes")
        finally:
            sweeper.cancel()
        await ack_all([stream])
        return Result(
            started=started,
            finished=self.last or time.perf_counter(),
            completed=self.got,
            cpu_seconds=time.process_time() - cpu,
            verified=self.verified,
            errors=self.errors[:5],
        )

    def _on_frame(self, stream: Stream, frame: proto.ServerFrame) -> None:
        if isinstance(frame, proto.Deliver):
            self.got += 1
            if self.decrypt is not None:
                lane = self.decrypt.get(frame.sender)
                if lane is not None and lane.open(frame):
                    self.verified += 1
                else:
                    self.errors.append(f"delivery {frame.id.hex()} did not verify")
            stream.delivered(frame.seq, self.ack_every)
            if self.got >= self.expect and self.done is not None:
                self.last = time.perf_counter()
                if not self.done.done():
                    self.done.set_result(None)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


# --- idle connections -------------------------------------------------------------------------


class IdleJob(Job):
    """``count`` authenticated streams (or bare echo connections) that send nothing."""

    hold = True

    def __init__(
        self, url: str, identities: list[Identity], count: int, bare: bool = False
    ) -> None:
        self.url = url
        self.identities = identities
        self.count = count
        self.bare = bare
        self.links: list[Link] = []
        self.streams: list[Stream] = []
        self.errors: list[str] = []

    async def connect(self) -> None:
        async def one(index: int) -> None:
            try:
                if self.bare:
                    self.links.append(await open_link(self.url, lambda data: None))
                else:
                    identity = self.identities[index % len(self.identities)]
                    stream = Stream(identity, lambda s, f: None)
                    await stream.open(self.url)
                    self.streams.append(stream)
            except (OSError, TimeoutError, RuntimeError) as exc:
                if len(self.errors) < 5:
                    self.errors.append(f"{type(exc).__name__}: {exc}")

        await _gather_limited(
            [lambda i=i: one(i) for i in range(self.count)],  # type: ignore[misc]
            256,
        )

    async def run(self) -> Result:
        closed = sum(
            1 for s in self.streams if s.link is not None and s.link.closed.done()
        )
        closed += sum(1 for link in self.links if link.closed.done())
        alive = len(self.streams) + len(self.links) - closed
        return Result(connected=alive, completed=alive, errors=self.errors)

    def close(self) -> None:
        for stream in self.streams:
            stream.close()
        for link in self.links:
            link.close()


# --- the echo ceiling -------------------------------------------------------------------------


class _EchoConn(Source):
    __slots__ = ("engine", "frame", "link", "sent")

    def __init__(self, count: int, frame: bytes) -> None:
        super().__init__(count)
        self.frame = frame
        self.sent: collections.deque[float] = collections.deque()
        self.link: Link | None = None
        self.engine: Engine | None = None

    def fire(self, stamp: float) -> None:
        assert self.link is not None
        self.next += 1
        self.sent.append(stamp)
        self.link.send(self.frame)

    def on_message(self, data: bytes) -> None:
        engine = self.engine
        assert engine is not None
        engine.latencies.append(time.perf_counter() - self.sent.popleft())
        engine.complete(self)


class EchoJob(Job):
    """``connections`` bare WebSockets, each sending ``count`` frames of ``size`` bytes."""

    def __init__(
        self,
        url: str,
        connections: int,
        count: int,
        size: int,
        *,
        window: int,
        rate: float | None = None,
        timeout: float = 600.0,
    ) -> None:
        self.url = url
        self.conns = [_EchoConn(count, bytes(size)) for _ in range(connections)]
        self.window = window
        self.rate = rate
        self.timeout = timeout

    async def connect(self) -> None:
        async def one(conn: _EchoConn) -> None:
            conn.link = await open_link(self.url, conn.on_message)

        await _gather_limited(
            [lambda c=c: one(c) for c in self.conns],  # type: ignore[misc]
            128,
        )

    async def run(self) -> Result:
        engine = Engine(list(self.conns), self.window, self.rate)
        for conn in self.conns:
            conn.engine = engine
        cpu = time.process_time()
        try:
            await engine.run(self.timeout)
        except (RuntimeError, TimeoutError) as exc:
            engine.errors.append(str(exc) or "timed out")
        total = sum(c.count for c in self.conns)
        return Result(
            started=engine.started,
            finished=engine.finished or time.perf_counter(),
            completed=total - engine.remaining,
            latencies=engine.latencies.tobytes(),
            cpu_seconds=time.process_time() - cpu,
            errors=engine.errors[:5],
        )

    def close(self) -> None:
        for conn in self.conns:
            if conn.link is not None:
                conn.link.close()
