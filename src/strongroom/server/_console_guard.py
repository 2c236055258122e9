"""The web console's door: signed-in sessions and the sign-in lock-out, in memory.

Rules:

1. A session is a random id (256 bits) that only the browser's cookie and this node's
   memory hold.  It ends after ``IDLE_SECONDS`` without a request, after
   ``MAX_AGE_SECONDS`` in any case, and at sign-out.  Sessions are per server node: a
   node that restarts, or a request that lands on another node, signs the admin out.
2. Every session has its own CSRF token, fixed for its life; every form carries it and
   every POST must return it (checked in ``_console``).
3. Lock-out counts failed sign-ins in a sliding window of ``WINDOW_SECONDS``: an address
   with ``PER_ADDRESS`` failures is refused for ``ADDRESS_LOCK_SECONDS``; ``OVERALL``
   failures from anywhere refuse every address for ``OVERALL_LOCK_SECONDS``.  While
   refused, no password is checked, so the answer says nothing about it.  A successful
   sign-in forgets its address's failures (not the overall count).
4. Memory is bounded: at most ``MAX_SESSIONS`` sessions and ``MAX_ADDRESSES`` tracked
   addresses; expired entries go first, then the oldest.

Time comes from an injected monotonic clock (seconds), so the rules are tested without
waiting.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Lockout", "Session", "Sessions"]

IDLE_SECONDS = 30 * 60
MAX_AGE_SECONDS = 12 * 3600
MAX_SESSIONS = 1000

WINDOW_SECONDS = 15 * 60
PER_ADDRESS = 5
ADDRESS_LOCK_SECONDS = 15 * 60
OVERALL = 20
OVERALL_LOCK_SECONDS = 5 * 60
MAX_ADDRESSES = 10_000


@dataclass
class Session:
    id: str
    csrf: str
    address: str
    created: float
    seen: float
    #: One-shot notices for the next page ("user alice added").
    notices: list[str] = field(default_factory=list)


class Sessions:
    """The signed-in sessions of this node (rule 1)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        idle: float = IDLE_SECONDS,
        max_age: float = MAX_AGE_SECONDS,
    ) -> None:
        self._clock = clock
        self._idle = idle
        self._max_age = max_age
        self._live: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._live)

    def create(self, address: str) -> Session:
        now = self._clock()
        self._prune(now)
        while len(self._live) >= MAX_SESSIONS:
            oldest = min(self._live.values(), key=lambda s: s.seen)
            del self._live[oldest.id]
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            address=address,
            created=now,
            seen=now,
        )
        self._live[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id, touched; None if unknown or expired."""
        if not session_id:
            return None
        session = self._live.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if self._expired(session, now):
            del self._live[session_id]
            return None
        session.seen = now
        return session

    def end(self, session_id: str) -> None:
        self._live.pop(session_id, None)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.seen > self._idle or now - session.created > self._max_age

    def _prune(self, now: float) -> None:
        for sid in [s.id for s in self._live.values() if self._expired(s, now)]:
            del self._live[sid]


class Lockout:
    """Failed sign-ins and who is refused because of them (rule 3)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._overall: deque[float] = deque()
        self._locked: dict[str, float] = {}  # address -> until
        self._all_locked_until = 0.0

    def refused_for(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 if it may now."""
        now = self._clock()
        until = max(self._locked.get(address, 0.0), self._all_locked_until)
        return max(0.0, until - now)

    def failed(self, address: str) -> str | None:
        """Count a failure; returns what it locked (``"address"`` or ``"all"``), if any."""
        now = self._clock()
        self._trim(now)
        mine = self._failures.setdefault(address, deque())
        mine.append(now)
        self._overall.append(now)
        if len(self._overall) >= OVERALL:
            self._all_locked_until = now + OVERALL_LOCK_SECONDS
            self._overall.clear()
            return "all"
        if len(mine) >= PER_ADDRESS:
            self._locked[address] = now + ADDRESS_LOCK_SECONDS
            del self._failures[address]
            return "address"
        return None

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

    def _trim(self, now: float) -> None:
        horizon = now - WINDOW_SECONDS
        while self._overall and self._overall[0] <= horizon:
            self._overall.popleft()
        for address in list(self._failures):
            times = self._failures[address]
            while times and times[0] <= horizon:
                times.popleft()
            if not times:
                del self._failures[address]
        for address in [a for a, t in self._locked.items() if t <= now]:
            del self._locked[address]
        # An attacker with many addresses must not grow this without bound: forget
        # the addresses whose last failure is oldest (the overall count still holds).
        while len(self._failures) >= MAX_ADDRESSES:
            stalest = min(self._failures, key=lambda a: self._failures[a][-1])
            del self._failures[stalest]
        while len(self._locked) >= MAX_ADDRESSES:
            soonest = min(self._locked, key=lambda a: self._locked[a])
            del self._locked[soonest]
