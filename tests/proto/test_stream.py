"""The stream state machine, tested as a pair of ends on a fake wire.

A client ``StreamConnection`` and a server ``StreamConnection`` talk through their own
``send``/``receive``: bytes one end returns from ``send`` are what the other end
``receive``s.  A misbehaving peer is simulated by encoding a frame directly with
``encode_frame`` and feeding it to the victim, bypassing the peer's own checks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from strongroom import proto
from strongroom.errors import LocalProtocolError, RemoteProtocolError
from strongroom.proto import MAX_PENDING_SENDS, Role, State, StreamConnection

Frame = proto.ServerFrame | proto.ClientFrame
Snapshot = tuple[State, int, int, frozenset[bytes], int]

DEVICE = "abcdefghijklmnop"
PEER = "qrstuvwxyz234567"


def eid(n: int) -> bytes:
    """An envelope id (16 bytes) numbered ``n``."""
    return n.to_bytes(16, "big")


def challenge() -> proto.Challenge:
    return proto.Challenge(nonce=bytes(range(32)), server="strongroom.test")


def hello() -> proto.Hello:
    return proto.Hello(device_id=DEVICE, signature=bytes(64), client_version="test")


def welcome() -> proto.Welcome:
    return proto.Welcome(device_id=DEVICE, user="alice", otk_count=5, server_time=1)


def deliver(seq: int) -> proto.Deliver:
    return proto.Deliver(seq=seq, id=eid(1000 + seq), sender=PEER, at=seq, body=b"ct")


def send(n: int) -> proto.Send:
    return proto.Send(id=eid(n), copies=[proto.Copy(device=PEER, body=b"ct")])


def accepted(n: int) -> proto.Accepted:
    return proto.Accepted(id=eid(n), at=0)


def refused(n: int) -> proto.Error:
    return proto.Error(code="not_authorized", detail="no", ref=eid(n))


def fatal() -> proto.Error:
    return proto.Error(code="auth_failed", detail="bad signature")


def snapshot(end: StreamConnection) -> Snapshot:
    return (
        end.state,
        end.last_delivered,
        end.last_acked,
        frozenset(end.pending_sends),
        end.unacked,
    )


class Wire:
    """A client and a server end joined back to back."""

    def __init__(self) -> None:
        self.client = StreamConnection(Role.CLIENT)
        self.server = StreamConnection(Role.SERVER)

    def end(self, role: Role) -> StreamConnection:
        return self.client if role is Role.CLIENT else self.server

    def peer(self, role: Role) -> StreamConnection:
        return self.server if role is Role.CLIENT else self.client

    def carry(self, sender: Role, frame: Frame) -> Frame:
        """``sender`` sends ``frame``; the other end receives the bytes."""
        return self.peer(sender).receive(self.end(sender).send(frame))

    def to_client(self, frame: proto.ServerFrame) -> Frame:
        return self.carry(Role.SERVER, frame)

    def to_server(self, frame: proto.ClientFrame) -> Frame:
        return self.carry(Role.CLIENT, frame)

    def handshake(self) -> None:
        self.to_client(challenge())
        self.to_server(hello())
        self.to_client(welcome())


def both(w: Wire) -> set[State]:
    """The states of the two ends (one element when they agree)."""
    return {w.client.state, w.server.state}


@pytest.fixture
def wire() -> Wire:
    return Wire()


@pytest.fixture
def open_wire() -> Wire:
    w = Wire()
    w.handshake()
    return w


def assert_refuses(
    end: StreamConnection, frame: Frame, code: str = "bad_frame"
) -> None:
    """A rogue peer's ``frame`` is refused with ``code`` and changes nothing."""
    before = snapshot(end)
    with pytest.raises(RemoteProtocolError) as info:
        end.receive(proto.encode_frame(frame))
    assert info.value.code == code
    assert snapshot(end) == before


def assert_cannot_send(
    end: StreamConnection, frame: Frame, code: str = "bad_frame"
) -> None:
    """Our own caller's misuse: ``LocalProtocolError`` and nothing changes."""
    before = snapshot(end)
    with pytest.raises(LocalProtocolError) as info:
        end.send(frame)
    assert not isinstance(info.value, RemoteProtocolError)
    assert info.value.code == code
    assert snapshot(end) == before


# --- the happy paths --------------------------------------------------------------


def test_fresh_ends_start_empty(wire: Wire) -> None:
    for end in (wire.client, wire.server):
        assert snapshot(end) == (State.START, 0, 0, frozenset(), 0)


def test_handshake(wire: Wire) -> None:
    assert wire.to_client(challenge()) == challenge()
    assert both(wire) == {State.CHALLENGED}
    assert wire.to_server(hello()) == hello()
    assert both(wire) == {State.HELLO_SENT}
    assert wire.to_client(welcome()) == welcome()
    assert both(wire) == {State.OPEN}


def test_deliveries_and_cumulative_acks(open_wire: Wire) -> None:
    w = open_wire
    for seq in (1, 2, 3, 7):  # strictly increasing; gaps are allowed on a connection
        assert w.to_client(deliver(seq)) == deliver(seq)
    for end in (w.client, w.server):
        assert (end.last_delivered, end.last_acked, end.unacked) == (7, 0, 4)
    w.to_server(proto.Ack(upto=2))
    for end in (w.client, w.server):
        assert (end.last_delivered, end.last_acked, end.unacked) == (7, 2, 2)
    w.to_client(deliver(8))
    w.to_server(proto.Ack(upto=8))  # one ack covers everything up to 8
    for end in (w.client, w.server):
        assert (end.last_delivered, end.last_acked, end.unacked) == (8, 8, 0)


def test_ack_between_delivered_seqs_is_cumulative(open_wire: Wire) -> None:
    w = open_wire
    w.to_client(deliver(3))
    w.to_client(deliver(9))
    w.to_server(proto.Ack(upto=5))  # covers 3 but not 9
    assert w.client.unacked == w.server.unacked == 1
    assert w.client.last_acked == w.server.last_acked == 5


def test_sends_are_answered_by_accepted_or_error_with_ref(open_wire: Wire) -> None:
    w = open_wire
    for n in (1, 2, 3):
        assert w.to_server(send(n)) == send(n)
    assert w.client.pending_sends == w.server.pending_sends == {eid(1), eid(2), eid(3)}
    assert w.to_client(accepted(1)) == accepted(1)
    assert w.to_client(refused(2)) == refused(2)
    assert w.client.pending_sends == w.server.pending_sends == {eid(3)}
    # an Error with a ref answers one send and leaves the stream open
    assert both(w) == {State.OPEN}


def test_send_id_may_be_reused_once_answered(open_wire: Wire) -> None:
    w = open_wire
    w.to_server(send(1))
    w.to_client(accepted(1))
    w.to_server(send(1))
    assert w.client.pending_sends == w.server.pending_sends == {eid(1)}


def test_ping_pong(open_wire: Wire) -> None:
    assert open_wire.to_server(proto.Ping(n=4)) == proto.Ping(n=4)
    assert open_wire.to_client(proto.Pong(n=4)) == proto.Pong(n=4)
    assert both(open_wire) == {State.OPEN}


def test_error_without_ref_closes_both_ends(open_wire: Wire) -> None:
    w = open_wire
    w.to_server(send(1))
    assert w.to_client(fatal()) == fatal()
    assert both(w) == {State.CLOSED}
    # after close nothing more is sent ...
    with pytest.raises(LocalProtocolError):
        w.client.send(proto.Ping(n=1))
    with pytest.raises(LocalProtocolError):
        w.server.send(accepted(1))
    # ... or read
    with pytest.raises(RemoteProtocolError):
        w.client.receive(proto.encode_frame(proto.Pong(n=1)))
    with pytest.raises(RemoteProtocolError):
        w.server.receive(proto.encode_frame(proto.Ping(n=1)))


@pytest.mark.parametrize("after_hello", [False, True])
def test_error_during_handshake_closes(wire: Wire, after_hello: bool) -> None:
    wire.to_client(challenge())
    if after_hello:
        wire.to_server(hello())
    wire.to_client(fatal())
    assert both(wire) == {State.CLOSED}
    assert_cannot_send(wire.server, welcome())
    assert_refuses(wire.client, welcome())


def test_close_is_local_and_final(open_wire: Wire) -> None:
    open_wire.client.close()
    assert open_wire.client.state is State.CLOSED
    assert open_wire.server.state is State.OPEN
    assert_cannot_send(open_wire.client, proto.Ping(n=1))
    with pytest.raises(RemoteProtocolError):
        open_wire.client.receive(proto.encode_frame(deliver(1)))


def test_max_pending_sends_is_flow_control(open_wire: Wire) -> None:
    w = open_wire
    for n in range(MAX_PENDING_SENDS):
        w.to_server(send(n))
    assert len(w.client.pending_sends) == len(w.server.pending_sends) == 256
    extra = send(MAX_PENDING_SENDS)
    assert_cannot_send(w.client, extra, code="rate_limited")
    assert_refuses(w.server, extra, code="rate_limited")
    # an answer frees a slot
    w.to_client(accepted(0))
    w.to_server(extra)
    assert len(w.client.pending_sends) == len(w.server.pending_sends) == 256


# --- the server refuses what a client may not send --------------------------------


def test_server_refuses_hello_before_challenge(wire: Wire) -> None:
    assert_refuses(wire.server, hello())


@pytest.mark.parametrize("after_hello", [False, True])
@pytest.mark.parametrize(
    "frame", [send(1), proto.Ack(upto=1), proto.Ping(n=1)], ids=["send", "ack", "ping"]
)
def test_server_refuses_stream_frames_before_welcome(
    wire: Wire, frame: proto.ClientFrame, after_hello: bool
) -> None:
    wire.to_client(challenge())
    if after_hello:
        wire.to_server(hello())
    assert_refuses(wire.server, frame)


def test_server_refuses_a_second_hello(wire: Wire) -> None:
    wire.to_client(challenge())
    wire.to_server(hello())
    assert_refuses(wire.server, hello())
    wire.to_client(welcome())
    assert_refuses(wire.server, hello())


def test_server_refuses_ack_of_nothing_delivered(open_wire: Wire) -> None:
    assert_refuses(open_wire.server, proto.Ack(upto=1))


def test_server_refuses_ack_beyond_last_delivered(open_wire: Wire) -> None:
    open_wire.to_client(deliver(1))
    open_wire.to_client(deliver(2))
    assert_refuses(open_wire.server, proto.Ack(upto=3))


@pytest.mark.parametrize("upto", [1, 2], ids=["backwards", "repeated"])
def test_server_refuses_ack_that_does_not_advance(open_wire: Wire, upto: int) -> None:
    for seq in (1, 2, 3):
        open_wire.to_client(deliver(seq))
    open_wire.to_server(proto.Ack(upto=2))
    assert_refuses(open_wire.server, proto.Ack(upto=upto))


def test_server_refuses_duplicate_pending_send_id(open_wire: Wire) -> None:
    open_wire.to_server(send(1))
    assert_refuses(open_wire.server, send(1))


@pytest.mark.parametrize(
    "frame",
    [challenge(), welcome(), deliver(1), accepted(1), fatal(), proto.Pong(n=1)],
    ids=lambda f: type(f).__name__,
)
def test_server_refuses_server_frames(
    open_wire: Wire, frame: proto.ServerFrame
) -> None:
    assert_refuses(open_wire.server, frame)


# --- the client refuses what a server may not send --------------------------------


@pytest.mark.parametrize(
    "frame",
    [welcome(), deliver(1), accepted(1), refused(1), proto.Pong(n=1)],
    ids=lambda f: type(f).__name__,
)
def test_client_refuses_anything_but_challenge_first(
    wire: Wire, frame: proto.ServerFrame
) -> None:
    assert_refuses(wire.client, frame)


def test_client_refuses_a_second_challenge(wire: Wire) -> None:
    wire.to_client(challenge())
    assert_refuses(wire.client, challenge())
    wire.to_server(hello())
    assert_refuses(wire.client, challenge())


def test_client_refuses_welcome_before_hello(wire: Wire) -> None:
    wire.to_client(challenge())
    assert_refuses(wire.client, welcome())


@pytest.mark.parametrize(
    "frame",
    [deliver(1), accepted(1), refused(1), proto.Pong(n=1)],
    ids=lambda f: type(f).__name__,
)
def test_client_refuses_stream_frames_before_welcome(
    wire: Wire, frame: proto.ServerFrame
) -> None:
    wire.to_client(challenge())
    wire.to_server(hello())
    assert_refuses(wire.client, frame)


def test_client_refuses_a_second_welcome(open_wire: Wire) -> None:
    assert_refuses(open_wire.client, welcome())


@pytest.mark.parametrize("seq", [1, 4], ids=["backwards", "repeated"])
def test_client_refuses_non_increasing_deliver(open_wire: Wire, seq: int) -> None:
    open_wire.to_client(deliver(2))
    open_wire.to_client(deliver(4))
    assert_refuses(open_wire.client, deliver(seq))
    assert open_wire.client.last_delivered == 4


def test_client_refuses_answers_to_sends_not_pending(open_wire: Wire) -> None:
    w = open_wire
    assert_refuses(w.client, accepted(1))
    assert_refuses(w.client, refused(1))
    w.to_server(send(1))
    assert_refuses(w.client, accepted(2))
    w.to_client(accepted(1))
    assert_refuses(w.client, accepted(1))  # answered already
    assert_refuses(w.client, refused(1))


@pytest.mark.parametrize(
    "frame",
    [hello(), send(1), proto.Ack(upto=1), proto.Ping(n=1)],
    ids=lambda f: type(f).__name__,
)
def test_client_refuses_client_frames(
    open_wire: Wire, frame: proto.ClientFrame
) -> None:
    assert_refuses(open_wire.client, frame)


def test_garbage_is_refused_with_a_protocol_error(open_wire: Wire) -> None:
    for end in (open_wire.client, open_wire.server):
        with pytest.raises(RemoteProtocolError) as info:
            end.receive(b"\x00garbage")
        assert info.value.code == "bad_frame"
        assert end.state is State.OPEN


# --- local misuse -----------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [challenge(), welcome(), deliver(1), accepted(1), fatal(), proto.Pong(n=1)],
    ids=lambda f: type(f).__name__,
)
def test_client_cannot_send_server_frames(open_wire: Wire, frame: Frame) -> None:
    assert_cannot_send(open_wire.client, frame)


@pytest.mark.parametrize(
    "frame",
    [hello(), send(1), proto.Ack(upto=1), proto.Ping(n=1)],
    ids=lambda f: type(f).__name__,
)
def test_server_cannot_send_client_frames(open_wire: Wire, frame: Frame) -> None:
    assert_cannot_send(open_wire.server, frame)


def test_handshake_order_is_enforced_locally(wire: Wire) -> None:
    assert_cannot_send(wire.client, hello())
    assert_cannot_send(wire.server, welcome())
    assert_cannot_send(wire.server, deliver(1))
    wire.to_client(challenge())
    assert_cannot_send(wire.server, challenge())
    assert_cannot_send(wire.server, welcome())
    assert_cannot_send(wire.client, send(1))
    wire.to_server(hello())
    assert_cannot_send(wire.client, hello())
    assert_cannot_send(wire.server, deliver(1))


def test_sequence_rules_are_enforced_locally(open_wire: Wire) -> None:
    w = open_wire
    assert_cannot_send(w.client, proto.Ack(upto=1))
    w.to_client(deliver(5))
    assert_cannot_send(w.server, deliver(5))
    assert_cannot_send(w.server, deliver(4))
    assert_cannot_send(w.client, proto.Ack(upto=6))
    w.to_server(proto.Ack(upto=5))
    assert_cannot_send(w.client, proto.Ack(upto=5))
    assert_cannot_send(w.server, accepted(1))
    assert_cannot_send(w.server, refused(1))
    w.to_server(send(1))
    assert_cannot_send(w.client, send(1))


# --- regressions ------------------------------------------------------------------


def test_error_with_empty_ref_is_not_an_answer(open_wire: Wire) -> None:
    # ``ref=b""`` is a ref (not None): it must name a pending send like any other.
    empty_ref = proto.Error(code="x", detail="y", ref=b"")
    assert_refuses(open_wire.client, empty_ref)
    assert_cannot_send(open_wire.server, empty_ref)


def test_oversized_send_changes_nothing(open_wire: Wire) -> None:
    # Nothing is sent, so nothing may change: the id must not be left pending.
    big = proto.Send(
        id=eid(1),
        copies=[proto.Copy(device=PEER, body=b"x" * proto.MAX_BODY_BYTES)] * 20,
    )
    assert_cannot_send(open_wire.client, big, code="frame_too_large")
    open_wire.to_server(send(1))  # the same id, now small enough, still goes
    assert open_wire.client.pending_sends == open_wire.server.pending_sends == {eid(1)}


def test_oversized_closing_error_does_not_close(open_wire: Wire) -> None:
    big = proto.Error(code="internal", detail="x" * proto.MAX_FRAME_BYTES)
    assert_cannot_send(open_wire.server, big, code="frame_too_large")
    assert both(open_wire) == {State.OPEN}


# --- stateful: random operations through the pair ---------------------------------

_FROM = {
    Role.SERVER: (
        proto.Challenge,
        proto.Welcome,
        proto.Deliver,
        proto.Accepted,
        proto.Error,
        proto.Pong,
    ),
    Role.CLIENT: (proto.Hello, proto.Send, proto.Ack, proto.Ping),
}
_ORDER = [State.START, State.CHALLENGED, State.HELLO_SENT, State.OPEN, State.CLOSED]


@dataclass(frozen=True)
class Model:
    """The rules of ``strongroom.proto._stream``'s docstring, written independently."""

    state: State = State.START
    last_delivered: int = 0
    last_acked: int = 0
    pending: frozenset[bytes] = frozenset()
    unacked: tuple[int, ...] = ()

    def snapshot(self) -> Snapshot:
        return (
            self.state,
            self.last_delivered,
            self.last_acked,
            self.pending,
            len(self.unacked),
        )

    def step(self, sender: Role, frame: Frame) -> Model | None:
        """The model after ``sender`` sends ``frame``, or None if that is not allowed."""
        if not isinstance(frame, _FROM[sender]) or self.state is State.CLOSED:
            return None
        state = self.state
        if isinstance(frame, proto.Challenge):
            return (
                replace(self, state=State.CHALLENGED) if state is State.START else None
            )
        if isinstance(frame, proto.Hello):
            ok = state is State.CHALLENGED
            return replace(self, state=State.HELLO_SENT) if ok else None
        if isinstance(frame, proto.Welcome):
            return (
                replace(self, state=State.OPEN) if state is State.HELLO_SENT else None
            )
        if isinstance(frame, proto.Error) and frame.ref is None:
            return None if state is State.START else replace(self, state=State.CLOSED)
        if state is not State.OPEN:
            return None
        if isinstance(frame, proto.Deliver):
            if frame.seq <= self.last_delivered:
                return None
            return replace(
                self, last_delivered=frame.seq, unacked=(*self.unacked, frame.seq)
            )
        if isinstance(frame, proto.Ack):
            if not self.last_acked < frame.upto <= self.last_delivered:
                return None
            left = tuple(seq for seq in self.unacked if seq > frame.upto)
            return replace(self, last_acked=frame.upto, unacked=left)
        if isinstance(frame, proto.Send):
            if frame.id in self.pending or len(self.pending) >= MAX_PENDING_SENDS:
                return None
            return replace(self, pending=self.pending | {frame.id})
        if isinstance(frame, proto.Accepted | proto.Error):
            ref = frame.id if isinstance(frame, proto.Accepted) else frame.ref
            if ref not in self.pending:
                return None
            return replace(self, pending=self.pending - {ref})
        return self  # Ping, Pong


def mostly(role: Role) -> st.SearchStrategy[Role]:
    """Usually the role that may send the frame, sometimes the other one."""
    other = Role.CLIENT if role is Role.SERVER else Role.SERVER
    return st.sampled_from([role, role, role, other])


send_ids = st.integers(min_value=1, max_value=4)
deltas = st.integers(min_value=-1, max_value=2)


@settings(max_examples=100, stateful_step_count=40, deadline=None)
class StreamPair(RuleBasedStateMachine):
    """Random frames, valid or not, from either end; the ends must stay in lockstep."""

    def __init__(self) -> None:
        super().__init__()
        self.wire = Wire()
        self.model = Model()
        self.rank = 0
        self.accepted = 0
        self.refused = 0

    def exchange(self, sender: Role, frame: Frame) -> None:
        expected = self.model.step(sender, frame)
        own, peer = self.wire.end(sender), self.wire.peer(sender)
        if expected is not None:
            assert peer.receive(own.send(frame)) == frame
            self.model = expected
            self.accepted += 1
            return
        self.refused += 1
        before = (snapshot(own), snapshot(peer))
        with pytest.raises(LocalProtocolError):
            own.send(frame)
        with pytest.raises(RemoteProtocolError):  # the same frame from a rogue peer
            peer.receive(proto.encode_frame(frame))
        assert (snapshot(own), snapshot(peer)) == before

    @initialize(steps=st.sampled_from([0, 1, 2, 3, 3, 3, 3]))
    def start_part_way(self, steps: int) -> None:
        """Most runs begin with the handshake done, so the open stream gets the steps."""
        handshake: list[tuple[Role, Frame]] = [
            (Role.SERVER, challenge()),
            (Role.CLIENT, hello()),
            (Role.SERVER, welcome()),
        ]
        for sender, frame in handshake[:steps]:
            self.exchange(sender, frame)

    @rule(sender=mostly(Role.SERVER))
    def challenge(self, sender: Role) -> None:
        self.exchange(sender, challenge())

    @rule(sender=mostly(Role.CLIENT))
    def hello(self, sender: Role) -> None:
        self.exchange(sender, hello())

    @rule(sender=mostly(Role.SERVER))
    def welcome(self, sender: Role) -> None:
        self.exchange(sender, welcome())

    @rule(sender=mostly(Role.SERVER), delta=deltas)
    def deliver(self, sender: Role, delta: int) -> None:
        self.exchange(sender, deliver(self.model.last_delivered + delta))

    @rule(sender=mostly(Role.CLIENT), delta=deltas, from_delivered=st.booleans())
    def ack(self, sender: Role, delta: int, from_delivered: bool) -> None:
        base = self.model.last_delivered if from_delivered else self.model.last_acked
        self.exchange(sender, proto.Ack(upto=base + delta))

    @rule()
    def deliver_next(self) -> None:
        """The common case, so that acks have something to acknowledge."""
        self.exchange(Role.SERVER, deliver(self.model.last_delivered + 1))

    @rule()
    def ack_all(self) -> None:
        self.exchange(Role.CLIENT, proto.Ack(upto=self.model.last_delivered))

    @rule(sender=mostly(Role.CLIENT), n=send_ids)
    def send(self, sender: Role, n: int) -> None:
        self.exchange(sender, send(n))

    @rule(sender=mostly(Role.SERVER), n=send_ids)
    def accept(self, sender: Role, n: int) -> None:
        self.exchange(sender, accepted(n))

    @rule(sender=mostly(Role.SERVER), n=send_ids)
    def refuse(self, sender: Role, n: int) -> None:
        self.exchange(sender, refused(n))

    @rule(sender=mostly(Role.SERVER), n=st.integers(min_value=0, max_value=5))
    def close(self, sender: Role, n: int) -> None:
        if n == 0:  # rarely, so that most runs get far into the open stream
            self.exchange(sender, fatal())

    @rule(sender=mostly(Role.CLIENT))
    def ping(self, sender: Role) -> None:
        self.exchange(sender, proto.Ping(n=1))

    @rule(sender=mostly(Role.SERVER))
    def pong(self, sender: Role) -> None:
        self.exchange(sender, proto.Pong(n=1))

    @invariant()
    def ends_agree_with_each_other_and_the_model(self) -> None:
        assert snapshot(self.wire.client) == snapshot(self.wire.server)
        assert snapshot(self.wire.client) == self.model.snapshot()

    @invariant()
    def state_never_goes_back(self) -> None:
        rank = _ORDER.index(self.wire.client.state)
        assert rank >= self.rank
        self.rank = rank

    @invariant()
    def counters_are_consistent(self) -> None:
        end = self.wire.server
        assert 0 <= end.last_acked <= end.last_delivered
        assert end.unacked <= end.last_delivered - end.last_acked
        assert len(end.pending_sends) <= MAX_PENDING_SENDS


TestStreamPair = StreamPair.TestCase
