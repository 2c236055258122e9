"""What one stream delivers next: from memory while it is caught up, from the store when not.

The store is the truth; memory is a shortcut.  ``accept`` hands each committed copy to
the recipient's streams on this node (``push``), so a stream that is caught up sends it
at once instead of reading back what was just written.  A stream reads the store
(``fetch`` from its cursor) only when it may be *behind*: just connected, a wake-up from
another node, a gap in what was pushed, or more pushed than it will hold.

Rules:

1. Deliveries leave in strictly increasing seq order (the protocol's rule), and at most
   ``window`` are unacknowledged (``room``).
2. A pushed row goes out from memory only if its seq is exactly one past the cursor.
   Nothing is ever skipped on memory's word: a seq missing between the cursor and the
   next pushed row may be another node's envelope whose wake-up is still on its way, and
   skipping it would let the device's cumulative ack delete it unseen.
3. While behind, every delivery comes from the store; pushes are only held (at most
   ``_HOLD``, beyond that they are dropped and read later).  A fetch that returns fewer
   rows than asked, with no wake-up heard while it ran, proves that the store held no
   other row up to ``known``, the last row held when it started: those rows were
   committed before the fetch began, and seqs commit in order per device (store rule 3).
   So the cursor moves past ``known`` (rows held but not returned were acknowledged on
   another connection, expired or revoked), and the stream is caught up when the held
   rows continue from the cursor.
4. Pushes are of committed rows only, so anything sent from memory is durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from .store import InboxRow

__all__ = ["Deliveries"]

log = logging.getLogger("strongroom.server.stream")

_FETCH = 256  # rows per store read
_HOLD = 1024  # rows held in memory per stream before falling back to the store

Fetch = Callable[[int, int], Awaitable[list[InboxRow]]]


class Deliveries:
    """One stream's delivery state.

    ``send(row)`` writes a ``Deliver`` (synchronously); ``room()`` is how many more the
    window takes; ``fetch(after, limit)`` reads the store; ``fail(exc)`` ends the stream
    when a store read fails.
    """

    def __init__(
        self,
        send: Callable[[InboxRow], None],
        room: Callable[[], int],
        fetch: Fetch,
        fail: Callable[[BaseException], None],
    ) -> None:
        self._send = send
        self._room = room
        self._fetch = fetch
        self._fail = fail
        self.cursor = 0  # the last seq delivered, or proven absent (rule 3)
        self._held: deque[InboxRow] = deque()  # pushed, in seq order, contiguous
        self._behind = True  # the store may hold rows > cursor that were not pushed
        self._woken = False  # a wake-up arrived while a fetch ran
        self._reader: asyncio.Task[None] | None = None
        self.closed = False

    # --- events -------------------------------------------------------------------------

    def push(self, row: InboxRow) -> None:
        """A row the store just committed for this device."""
        if self.closed or row.seq <= self.cursor:
            return
        held = self._held
        if held:
            last = held[-1].seq
            if row.seq <= last:
                return
            if row.seq != last + 1 or len(held) >= _HOLD:
                held.clear()  # a gap among pushes, or too much: the store has them
                self._behind = True
        held.append(row)
        self.pump()

    def wake(self) -> None:
        """Something was committed for this device elsewhere: read the store."""
        if self.closed:
            return
        self._behind = True
        self._woken = True
        self.pump()

    def close(self) -> None:
        """Deliver nothing more (revoked, or the stream ended)."""
        self.closed = True
        self._held.clear()
        if self._reader is not None:
            self._reader.cancel()

    async def wait_reader(self) -> None:
        """Let a store read in flight finish (the stream is ending)."""
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    # --- delivering ---------------------------------------------------------------------

    def pump(self) -> None:
        """Send what may go now; start a store read if one is due (call after acks)."""
        if self.closed:
            return
        if not self._behind:
            self._from_memory()
        if self._behind and self._reader is None and self._room() > 0:
            self._reader = asyncio.get_running_loop().create_task(self._catch_up())

    def _from_memory(self) -> None:
        held = self._held
        while held and self._room() > 0:
            row = held[0]
            if row.seq <= self.cursor:
                held.popleft()
            elif row.seq == self.cursor + 1:  # rule 2
                held.popleft()
                self.cursor = row.seq
                try:
                    self._send(row)
                except Exception as exc:  # a bug; it must not reach the pusher
                    self.close()
                    self._fail(exc)
                    return
            else:
                self._behind = True
                return

    async def _catch_up(self) -> None:
        try:
            while self._behind and not self.closed:
                room = self._room()
                if room <= 0:
                    return  # the next acknowledgement pumps again
                limit = min(_FETCH, room)
                known = self._held[-1].seq if self._held else self.cursor
                self._woken = False
                rows = await self._fetch(self.cursor, limit)
                if self.closed:
                    return
                for row in rows:
                    if row.seq > self.cursor:
                        self.cursor = row.seq
                        self._send(row)
                if len(rows) < limit and not self._woken:  # rule 3
                    self.cursor = max(self.cursor, known)
                    self._behind = False
                    self._from_memory()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(exc)
        finally:
            self._reader = None
