"""The console's sessions and sign-in lock-out, on a clock the test moves."""

from __future__ import annotations

from strongroom.server._console_guard import (
    ADDRESS_LOCK_SECONDS,
    IDLE_SECONDS,
    MAX_AGE_SECONDS,
    OVERALL_LOCK_SECONDS,
    WINDOW_SECONDS,
    Lockout,
    Sessions,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_ends_when_idle_or_old_or_signed_out() -> None:
    clock = Clock()
    sessions = Sessions(clock)
    first = sessions.create("10.0.0.1")
    assert len(first.id) >= 43 and len(first.csrf) >= 43 and first.id != first.csrf
    assert sessions.get(first.id) is first
    assert sessions.get("made-up") is None and sessions.get(None) is None

    clock.now += IDLE_SECONDS - 1
    assert sessions.get(first.id) is first  # touched: idle time starts again
    clock.now += IDLE_SECONDS - 1
    assert sessions.get(first.id) is first
    clock.now += IDLE_SECONDS + 1
    assert sessions.get(first.id) is None

    busy = sessions.create("10.0.0.1")
    for _ in range(int(MAX_AGE_SECONDS // (IDLE_SECONDS / 2)) + 1):
        clock.now += IDLE_SECONDS / 2
        sessions.get(busy.id)
    assert sessions.get(busy.id) is None  # even a busy session ends

    other = sessions.create("10.0.0.2")
    sessions.end(other.id)
    assert sessions.get(other.id) is None
    assert sessions.create("x").id != sessions.create("x").id


def test_five_failures_lock_an_address_for_fifteen_minutes() -> None:
    clock = Clock()
    lockout = Lockout(clock)
    for _ in range(4):
        assert lockout.failed("10.0.0.1") is None
        assert lockout.refused_for("10.0.0.1") == 0
    assert lockout.failed("10.0.0.1") == "address"
    assert lockout.refused_for("10.0.0.1") == ADDRESS_LOCK_SECONDS
    assert lockout.refused_for("10.0.0.2") == 0

    clock.now += ADDRESS_LOCK_SECONDS - 1
    assert lockout.refused_for("10.0.0.1") == 1
    clock.now += 1
    assert lockout.refused_for("10.0.0.1") == 0
    assert lockout.failed("10.0.0.1") is None  # a fresh count after the lock


def test_failures_age_out_and_success_forgets_them() -> None:
    clock = Clock()
    lockout = Lockout(clock)
    for _ in range(4):
        lockout.failed("10.0.0.1")
    clock.now += WINDOW_SECONDS + 1
    assert lockout.failed("10.0.0.1") is None  # the four are outside the window

    for _ in range(3):
        lockout.failed("10.0.0.3")
    lockout.succeeded("10.0.0.3")
    for _ in range(4):
        assert lockout.failed("10.0.0.3") is None


def test_twenty_failures_from_anywhere_lock_everyone_for_five_minutes() -> None:
    clock = Clock()
    lockout = Lockout(clock)
    results = [lockout.failed(f"10.0.{n // 4}.1") for n in range(20)]
    assert results[:19] == [None] * 19 and results[19] == "all"
    assert lockout.refused_for("192.0.2.1") == OVERALL_LOCK_SECONDS
    clock.now += OVERALL_LOCK_SECONDS
    assert lockout.refused_for("192.0.2.1") == 0
