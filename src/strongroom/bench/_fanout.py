"""Group fan-out: one sender, N member devices, one ciphertext stored once and delivered N times.

Rules:

1. A group is its sender and its N member devices, all in one load-generator process, so
   that every member's delivery is timed on the sender's clock and the sender knows when
   the last member has a message (``--workers`` does not split a group).
2. Traffic is what the SDK's ``GroupDevice.seal`` sends: one distinct Megolm ciphertext
   per message (a ``proto.GroupPayload`` in a ``proto.MegolmEnvelope``), encrypted before
   the clock starts, in a ``SendShared`` that names the member devices in sorted order.
   The group's membership chain is not posted: the server does not read it on the send
   path.  Members check what the server answers for: the envelope id, the ``shared``
   flag, the sender and the body's bytes; they do not decrypt (the load generator would
   be measured instead of the server).
3. A message is *done* when the sender has ``Accepted`` and every member has its
   ``Deliver``; its *span* is from the write of the ``SendShared`` to the last member's
   delivery.  Phase one sends ``repeat`` messages one at a time, each ``pause`` after the
   previous one was done, so that the members' acknowledgement sweep has answered it and
   every message meets a quiet server.  Phase two is closed loop, at most ``window``
   messages in flight, for ``sustain`` seconds; the messages in flight then finish.
4. A delivery of an envelope this job did not send (left unacknowledged by an earlier
   workload on a device used again) is acknowledged and not counted.
"""

from __future__ import annotations

import asyncio
import os
import time
from array import array
from collections.abc import Sequence

from strongroom import crypto, proto
from strongroom.client import ACK_DELAY, ACK_EVERY

from ._drive import (
    ACK_SWEEP,
    Engine,
    Job,
    Result,
    Source,
    ack_all,
    ack_sweep,
    open_streams,
)
from ._fleet import filler_text
from ._wire import Identity, Stream

__all__ = ["FanoutJob", "GroupTraffic", "group_traffic"]


class GroupTraffic:
    """A group and its pre-encrypted messages, as (envelope id, ``SendShared``, body)."""

    def __init__(
        self,
        sender: Identity,
        members: Sequence[Identity],
        messages: list[tuple[bytes, bytes, bytes]],
    ) -> None:
        self.sender = sender
        self.members = list(members)
        self.messages = messages

    @property
    def body_size(self) -> int:
        return len(self.messages[0][2]) if self.messages else 0

    @property
    def frame_size(self) -> int:
        return len(self.messages[0][1]) if self.messages else 0


def group_traffic(
    sender: Identity, members: Sequence[Identity], count: int, size: int
) -> GroupTraffic:
    """``count`` group messages of ``size`` bytes of text, from ``sender`` to ``members``."""
    now = time.time_ns() // 1_000_000
    session = crypto.OutboundGroupSession.create(now)
    group = proto.new_group_id(os.urandom(16))
    # Stands in for the chain head the sender verified; only members would read it.
    head = proto.ChainHead(seq=1, hash=os.urandom(32))
    devices = sorted(m.device_id for m in members)
    content = proto.Text(body=filler_text(size))
    messages: list[tuple[bytes, bytes, bytes]] = []
    for _ in range(count):
        message_id = os.urandom(16)
        payload = proto.GroupPayload(
            sender_user=sender.user,
            sender_device=sender.device_id,
            group=group,
            message_id=message_id,
            sent_at=now,
            head=head,
            content=content,
        )
        ciphertext = session.encrypt(proto.encode(payload))
        body = proto.encode(proto.MegolmEnvelope(session.session_id, ciphertext))
        send = proto.SendShared(id=message_id, devices=devices, body=body)
        messages.append((message_id, proto.encode_frame(send), body))
    return GroupTraffic(sender, members, messages)


class _Post:
    """One group message on its way (rule 3)."""

    __slots__ = ("accepted", "body", "last", "left", "stamp")

    def __init__(self, stamp: float, members: int, body: bytes) -> None:
        self.stamp = stamp
        self.left = members
        self.body = body
        self.accepted = False
        self.last = 0.0


class _Sender(Source):
    __slots__ = ("job",)

    def __init__(self, job: FanoutJob, count: int) -> None:
        super().__init__(count)
        self.job = job

    def fire(self, stamp: float) -> None:
        self.next += 1
        self.job.post(stamp)


class FanoutJob(Job):
    """One group: ``repeat`` messages one at a time, then ``sustain`` seconds of traffic.

    Each phase's ``Result``: ``sent`` group messages, ``completed`` of them done,
    ``verified`` member deliveries checked, ``spans`` (per message) and, in phase one,
    ``latencies`` (per member delivery).
    """

    phases = 2

    def __init__(
        self,
        url: str,
        traffic: GroupTraffic,
        *,
        repeat: int,
        sustain: float,
        window: int,
        pause: float = ACK_DELAY + 2 * ACK_SWEEP,
        ack_every: int = ACK_EVERY,
        timeout: float = 60.0,
    ) -> None:
        self.url = url
        self.traffic = traffic
        self.repeat = repeat
        self.sustain = sustain
        self.window = window
        self.pause = pause
        self.ack_every = ack_every
        self.timeout = timeout
        self.streams: dict[str, Stream] = {}
        self.sender: Stream | None = None
        self.posts: dict[bytes, _Post] = {}
        self.next = 0  # the next message of ``traffic`` to send
        self.phase = -1  # the phase running: 0 one at a time, 1 sustained
        self.engine: Engine | None = None
        self.waiting: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.latencies: array[float] = array("d")
        self.spans: array[float] = array("d")
        self.delivered = 0
        self.sent = 0
        self.errors: list[str] = []

    async def connect(self) -> None:
        group = [self.traffic.sender, *self.traffic.members]
        self.streams = await open_streams(self.url, group, self._on_frame)
        self.sender = self.streams[self.traffic.sender.device_id]

    async def run(self) -> Result:
        self.phase += 1
        self._reset()
        streams = list(self.streams.values())
        sweeper = asyncio.create_task(ack_sweep(streams))
        cpu = time.process_time()
        started = time.perf_counter()
        finished = 0.0
        completed = 0
        try:
            if self.phase == 0:
                started, finished, completed = await self._one_at_a_time()
            else:
                started, finished, completed = await self._sustained()
        except (RuntimeError, TimeoutError) as exc:
            self.errors.append(str(exc) or f"timed out after {self.sent} messages")
        finally:
            sweeper.cancel()
        cpu = time.process_time() - cpu
        await ack_all(streams)
        return Result(
            started=started,
            finished=finished or time.perf_counter(),
            completed=completed,
            latencies=self.latencies.tobytes(),
            cpu_seconds=cpu,
            verified=self.delivered,
            errors=self.errors[:5],
            sent=self.sent,
            spans=self.spans.tobytes(),
        )

    async def _one_at_a_time(self) -> tuple[float, float, int]:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        for done in range(self.repeat):
            await asyncio.sleep(self.pause)
            self.waiting = loop.create_future()
            self.post(time.perf_counter())
            try:
                await asyncio.wait_for(self.waiting, self.timeout)
            except TimeoutError as exc:
                raise TimeoutError(
                    f"message {done + 1} of {self.repeat} not done in {self.timeout}s"
                ) from exc
        return started, time.perf_counter(), self.repeat

    async def _sustained(self) -> tuple[float, float, int]:
        source = _Sender(self, len(self.traffic.messages) - self.next)
        self.engine = engine = Engine([source], self.window, None)
        try:
            await engine.run(self.timeout + self.sustain, duration=self.sustain)
        finally:
            self.engine = None
        return engine.started, engine.finished, source.count - engine.remaining

    def post(self, stamp: float) -> None:
        """Write the next group message."""
        assert self.sender is not None
        message_id, frame, body = self.traffic.messages[self.next]
        self.next += 1
        self.sent += 1
        self.posts[message_id] = _Post(stamp, len(self.traffic.members), body)
        self.sender.send(frame)

    def _done(self, message_id: bytes, post: _Post) -> None:
        if not post.accepted or post.left > 0:
            return
        del self.posts[message_id]
        self.spans.append(post.last - post.stamp)
        if self.engine is not None:
            self.engine.complete(self.engine.sources[0])
        elif self.waiting is not None and not self.waiting.done():
            self.waiting.set_result(None)

    def _fail(self, text: str) -> None:
        self.errors.append(text)
        if self.engine is not None:
            self.engine.fail(text)
        elif self.waiting is not None and not self.waiting.done():
            self.waiting.set_exception(RuntimeError(text))

    def _on_frame(self, stream: Stream, frame: proto.ServerFrame) -> None:
        kind = type(frame)
        if kind is proto.Deliver:
            assert isinstance(frame, proto.Deliver)
            post = self.posts.get(frame.id)
            if post is not None and stream is not self.sender:
                now = time.perf_counter()
                if self.phase == 0:
                    self.latencies.append(now - post.stamp)
                if (
                    frame.shared
                    and frame.sender == self.traffic.sender.device_id
                    and frame.body == post.body
                ):
                    self.delivered += 1
                elif len(self.errors) < 5:
                    self.errors.append(
                        f"delivery {frame.id.hex()} is not what was sent"
                    )
                post.left -= 1
                if post.left == 0:
                    post.last = now
                    self._done(frame.id, post)
            stream.delivered(frame.seq, self.ack_every)
        elif kind is proto.Accepted:
            assert isinstance(frame, proto.Accepted)
            post = self.posts.get(frame.id)
            if post is not None:
                if frame.skipped:
                    self._fail(f"the server skipped {len(frame.skipped)} members")
                post.accepted = True
                self._done(frame.id, post)
        elif kind is proto.Error:
            assert isinstance(frame, proto.Error)
            self._fail(f"server refused: {frame.code}: {frame.detail}")

    def close(self) -> None:
        for stream in self.streams.values():
            stream.close()
