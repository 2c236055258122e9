"""The SQLite backend's writer: one connection, group commit, COMMIT in a thread.

Rules:

1. One writer owns the write connection.  Writes from every caller queue up and the
   writer runs all that are waiting in one transaction: one fsync (``synchronous=FULL``)
   for the whole batch.  A caller's future resolves only after COMMIT returned.  The
   writer's statements run on the event loop's own thread: they are short (no fsync, and
   never a wait for another connection's lock: ``busy_timeout`` is 0, and a BEGIN that
   finds the database locked waits in a thread).  Only COMMIT, which waits for the disk,
   runs in a thread ("sqlite-commit"), so the writer does not take the GIL from the event
   loop statement by statement, and while one batch commits the next one gathers.
2. One caller's failure never fails another's.  A batch runs first without savepoints
   (they cost two statements per write); if any write raises, the transaction is rolled
   back and the batch runs again with each write inside its own SAVEPOINT, so that only
   the failing write is undone.  Writes are functions of the connection and may run twice.
3. Per-device sequence numbers are counted in memory (``Seqs``): the first copy for a
   device in a while reads ``device_seqs`` (a row per live device), later ones only add
   one.  The counters of every device a batch used are written back there before its
   COMMIT, in the same transaction, so the database always holds them.  What a rolled-back
   write or batch counted is undone with it.  The cache is trusted only while this
   connection is the database's only writer: at the start of every batch (holding the
   write lock) ``PRAGMA data_version`` tells whether another connection committed since,
   and if one did, the cache is dropped.
4. ``sqlite3`` exceptions are mapped here (``map_error``): IntegrityError ->
   ``ConflictError``, the rest -> ``StoreError``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from strongroom.errors import ConflictError, StoreError

__all__ = ["Seqs", "Writer", "map_error"]

T = TypeVar("T")
_MAX_BATCH = 512
_BUSY_TIMEOUT_MS = 5000
_CACHE_KIB = 64 * 1024

Outcome = tuple["_Write", Any, BaseException | None]


def map_error(exc: sqlite3.Error) -> StoreError:
    if isinstance(exc, sqlite3.IntegrityError):
        return ConflictError("that already exists")
    return StoreError(f"database error: {type(exc).__name__}")


def _failure(exc: Exception) -> StoreError:
    """What the caller of a failed write gets."""
    if isinstance(exc, sqlite3.Error):
        return map_error(exc)
    # a bug in one write must not stop the writer, nor tell the caller its details
    return exc if isinstance(exc, StoreError) else StoreError("write failed")


class _Write:
    __slots__ = ("fn", "future")

    def __init__(
        self, fn: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any]
    ) -> None:
        self.fn = fn
        self.future = future


def _resolve(outcomes: list[Outcome]) -> None:
    for write, result, error in outcomes:
        if write.future.done():
            continue
        if error is not None:
            write.future.set_exception(error)
        else:
            write.future.set_result(result)


class Seqs:
    """Rule 3: the next seq per live device (used on the event loop's thread only)."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}  # device -> last seq given out
        self._undo: list[tuple[str, int | None]] = []  # this transaction's changes
        self._used: set[str] = set()

    def take(self, c: sqlite3.Connection, device_id: str) -> int | None:
        """The seq for one more copy to the device; None if it is unknown or revoked."""
        last = self._next.get(device_id)
        if last is None:
            row = c.execute(
                "SELECT next_seq FROM device_seqs WHERE device_id=?",
                (device_id,),
            ).fetchone()
            if row is None:
                return None
            last = int(row[0])
        self._undo.append((device_id, self._next.get(device_id)))
        self._next[device_id] = last + 1
        self._used.add(device_id)
        return last + 1

    def forget(self, device_id: str) -> None:
        """The device changed under the cache (revoked): read it again next time."""
        self._undo.append((device_id, self._next.pop(device_id, None)))

    def mark(self) -> int:
        return len(self._undo)

    def undo(self, mark: int = 0) -> None:
        """Take back what was counted since ``mark`` (a rolled-back savepoint)."""
        while len(self._undo) > mark:
            device_id, last = self._undo.pop()
            if last is None:
                self._next.pop(device_id, None)
            else:
                self._next[device_id] = last

    def write_back(self, c: sqlite3.Connection) -> None:
        """Store the counters this transaction moved; call just before COMMIT."""
        c.executemany(
            "UPDATE device_seqs SET next_seq=? WHERE device_id=?",
            [(self._next[d], d) for d in self._used if d in self._next],
        )

    def committed(self) -> None:
        self._undo.clear()
        self._used.clear()

    def clear(self) -> None:
        self._next.clear()
        self.committed()


class Writer:
    """The writer (rules 1 to 3)."""

    def __init__(self, conn: sqlite3.Connection, seqs: Seqs) -> None:
        self.seqs = seqs
        self._conn = conn
        # rule 1: statements on the loop never wait for another writer's lock
        conn.execute("PRAGMA busy_timeout=0")
        # Inbox rows are written and deleted again within seconds: a checkpoint every
        # 10,000 pages (not 1,000) copies each hot page to the database file once for
        # many changes, and the cache keeps the inbox's pages in memory.  Durability is
        # the WAL's fsync at every COMMIT, unchanged.
        conn.execute("PRAGMA wal_autocheckpoint=10000")
        conn.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        self._waiting: list[_Write] = []
        self._drain: asyncio.Task[None] | None = None
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-commit")
        self._data_version = -1
        self._closed = False
        self.commits = 0  # batches committed, and the writes they carried
        self.writes = 0

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``fn``; the future resolves after the COMMIT that includes it."""
        if self._closed:
            raise StoreError("the store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._waiting.append(_Write(fn, future))
        if self._drain is None:
            # starts on the next turn: every write queued in this one joins the batch
            self._drain = loop.create_task(self._run_waiting())
        return future

    async def close(self) -> None:
        """Commit every write queued so far, then close the connection."""
        self._closed = True
        if self._drain is not None:
            await asyncio.shield(self._drain)
        await asyncio.get_running_loop().run_in_executor(
            self._committer, self._conn.close
        )
        self._committer.shutdown(wait=True)

    async def _run_waiting(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[:_MAX_BATCH]
                del self._waiting[:_MAX_BATCH]
                try:
                    outcomes = await self._run(batch)
                except Exception:  # a bug here must not leave callers waiting
                    self.seqs.clear()
                    outcomes = [(w, None, StoreError("write failed")) for w in batch]
                _resolve(outcomes)
        finally:
            self._drain = None

    async def _run(self, batch: list[_Write]) -> list[Outcome]:
        conn = self._conn
        try:
            await self._begin()
            try:
                outcomes: list[Outcome] = [(w, w.fn(conn), None) for w in batch]
            except Exception as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self.seqs.undo()
                if len(batch) == 1:
                    return [(batch[0], None, _failure(exc))]
                # rule 2: find out whose it was, and undo that one alone
                await self._begin()
                outcomes = [self._in_savepoint(write) for write in batch]
            self.seqs.write_back(conn)
            await self._in_thread(conn.execute, "COMMIT")
            self.seqs.committed()
            self.commits += 1
            self.writes += len(batch)
            return outcomes
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self.seqs.clear()
            failure = map_error(exc)
            return [(write, None, failure) for write in batch]

    async def _begin(self) -> None:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                raise
            await self._in_thread(self._begin_waiting)  # rule 1: someone else writes
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:  # rule 3: someone else wrote
            self.seqs.clear()
            self._data_version = version

    def _begin_waiting(self) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        finally:
            conn.execute("PRAGMA busy_timeout=0")

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            self._committer, fn, *args
        )

    def _in_savepoint(self, write: _Write) -> Outcome:
        conn = self._conn
        mark = self.seqs.mark()
        conn.execute("SAVEPOINT w")
        try:
            result = write.fn(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO w")
            conn.execute("RELEASE w")
            self.seqs.undo(mark)
            return write, None, _failure(exc)
        conn.execute("RELEASE w")
        return write, result, None
