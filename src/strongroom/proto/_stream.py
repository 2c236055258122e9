"""The stream state machine: one implementation, both ends.

Rules (everything that affects the stream's state lives in this file):

1. The machine does no I/O.  ``send(frame) -> bytes`` checks that *we* may send the frame
   now and returns its encoding; ``receive(bytes) -> frame`` decodes and checks that the
   *peer* may send it now.  Our mistakes raise ``LocalProtocolError`` (nothing was sent);
   the peer's raise ``RemoteProtocolError`` (the connection is done).
2. Handshake: server sends ``Challenge``; client answers ``Hello``; server answers
   ``Welcome`` (or an ``Error`` that closes).  Nothing else may travel before ``Welcome``.
3. Deliveries: ``Deliver.seq`` strictly increases on a connection.  ``Ack.upto`` is
   cumulative and strictly increases; it never names a seq not yet delivered.
4. Sends: a ``Send`` (or ``SendShared``) may not reuse the id of a send still pending; it stays pending until an
   ``Accepted`` or an ``Error`` with that id as ``ref`` answers it.  At most
   ``MAX_PENDING_SENDS`` are pending at once: that is the sender's flow control.
5. An ``Error`` without ``ref`` closes the stream; after close nothing more is sent or read.

The transition table below is the whole handshake; the sequence rules are in ``_check``.
"""

from __future__ import annotations

import collections
import enum

from strongroom.errors import LocalProtocolError, RemoteProtocolError

from ._frames import (
    Accepted,
    Ack,
    Challenge,
    ClientFrame,
    Control,
    Deliver,
    Enforcing,
    Error,
    Hello,
    Ping,
    Pong,
    Send,
    SendShared,
    ServerFrame,
    Welcome,
    Wiped,
    decode_client_frame,
    decode_server_frame,
    encode_frame,
)

__all__ = ["MAX_PENDING_SENDS", "Role", "State", "StreamConnection"]

MAX_PENDING_SENDS = 256

Frame = ServerFrame | ClientFrame


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class State(enum.Enum):
    START = "start"
    CHALLENGED = "challenged"
    HELLO_SENT = "hello-sent"
    OPEN = "open"
    CLOSED = "closed"


_FROM_SERVER: frozenset[type] = frozenset(
    {Challenge, Welcome, Deliver, Accepted, Error, Pong, Control}
)
_FROM_CLIENT: frozenset[type] = frozenset(
    {Hello, Send, SendShared, Ack, Ping, Enforcing, Wiped}
)

#: (state, frame type) -> next state.  Frames not listed are not allowed in that state.
TRANSITIONS: dict[tuple[State, type], State] = {
    (State.START, Challenge): State.CHALLENGED,
    (State.CHALLENGED, Hello): State.HELLO_SENT,
    (State.HELLO_SENT, Welcome): State.OPEN,
    (State.HELLO_SENT, Error): State.CLOSED,
    (State.CHALLENGED, Error): State.CLOSED,
    (State.OPEN, Deliver): State.OPEN,
    (State.OPEN, Accepted): State.OPEN,
    (State.OPEN, Error): State.OPEN,  # with ref; without ref see _advance
    (State.OPEN, Pong): State.OPEN,
    (State.OPEN, Send): State.OPEN,
    (State.OPEN, SendShared): State.OPEN,
    (State.OPEN, Ack): State.OPEN,
    (State.OPEN, Ping): State.OPEN,
    (State.OPEN, Control): State.OPEN,
    (State.OPEN, Enforcing): State.OPEN,
    (State.OPEN, Wiped): State.OPEN,
}


class StreamConnection:
    """One end of one stream connection."""

    def __init__(self, role: Role) -> None:
        self.role = role
        self.state = State.START
        self.last_delivered = 0
        self.last_acked = 0
        self.pending_sends: set[bytes] = set()
        self._unacked: collections.deque[int] = collections.deque()

    @property
    def unacked(self) -> int:
        """Deliveries sent (or received) on this connection and not yet acknowledged."""
        return len(self._unacked)

    def send(self, frame: Frame) -> bytes:
        """Check that we may send ``frame`` now; return its bytes.

        Raises ``LocalProtocolError`` when the frame is not ours to send in this state.
        """
        ours = _FROM_SERVER if self.role is Role.SERVER else _FROM_CLIENT
        if type(frame) not in ours:
            raise LocalProtocolError(
                f"{self.role.value} cannot send {type(frame).__name__}"
            )
        data = encode_frame(frame)  # an unencodable frame must not move the state
        self._advance(frame, LocalProtocolError)
        return data

    def receive(self, data: bytes) -> Frame:
        """Decode bytes from the peer and check them against the state.

        Raises ``RemoteProtocolError`` (and nothing else) when the peer broke a rule.
        """
        if self.state is State.CLOSED:
            raise RemoteProtocolError("frame received after the stream closed")
        frame: Frame
        if self.role is Role.SERVER:
            frame = decode_client_frame(data)
        else:
            frame = decode_server_frame(data)
        self._advance(frame, RemoteProtocolError)
        return frame

    def close(self) -> None:
        self.state = State.CLOSED

    def _advance(
        self, frame: Frame, error: type[LocalProtocolError] | type[RemoteProtocolError]
    ) -> None:
        kind = type(frame)
        next_state = TRANSITIONS.get((self.state, kind))
        if next_state is None:
            raise error(f"{kind.__name__} is not allowed in state {self.state.value}")
        self._check(frame, error)
        if isinstance(frame, Error) and frame.ref is None:
            next_state = State.CLOSED
        self.state = next_state

    def _check(
        self, frame: Frame, error: type[LocalProtocolError] | type[RemoteProtocolError]
    ) -> None:
        if isinstance(frame, Deliver):
            if frame.seq <= self.last_delivered:
                raise error(
                    f"delivery seq {frame.seq} does not follow {self.last_delivered}"
                )
            self.last_delivered = frame.seq
            self._unacked.append(frame.seq)
        elif isinstance(frame, Ack):
            if frame.upto <= self.last_acked or frame.upto > self.last_delivered:
                raise error(
                    f"ack {frame.upto} outside ({self.last_acked}, {self.last_delivered}]"
                )
            self.last_acked = frame.upto
            while self._unacked and self._unacked[0] <= frame.upto:
                self._unacked.popleft()
        elif isinstance(frame, Send | SendShared):
            if frame.id in self.pending_sends:
                raise error("send id is already pending on this connection")
            if len(self.pending_sends) >= MAX_PENDING_SENDS:
                raise error(
                    f"more than {MAX_PENDING_SENDS} sends pending", "rate_limited"
                )
            self.pending_sends.add(frame.id)
        elif isinstance(frame, Accepted) or (
            isinstance(frame, Error) and frame.ref is not None
        ):
            ref = frame.id if isinstance(frame, Accepted) else frame.ref
            if ref not in self.pending_sends:
                raise error("answer to a send that is not pending")
            self.pending_sends.discard(ref)
