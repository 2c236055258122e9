"""PostgreSQL's group commit: the hot path's writes, from every caller, in one transaction.

Rules:

1. ``accept`` and ``ack`` queue here; one task runs everything waiting in one transaction,
   and a caller's future resolves only after COMMIT returned.
2. The fast path is two statements whatever the batch's size: every plain accept in the
   batch is one statement (``_ACCEPT_ALL``), every ack one more (``_ACK_ALL``).  Other
   queued writes (an accept naming attachments, say) run after them as their own
   functions, without savepoints.  If anything fails, the transaction is rolled back and
   the batch runs again the careful way: each write's own function inside its own
   SAVEPOINT, so one caller's failure never fails another's.
3. Sequence numbers stay in ``device_seqs``, which is what keeps them gap-free and in
   commit order across nodes: a batch first locks every counter row it will touch, in
   device-id order (so two nodes' batches never deadlock), and holds the locks until
   COMMIT.  Within a batch, copies are numbered in batch order, so any two devices see
   any two envelopes in the same order.
4. A batch whose connection dies fails as a whole, with a ``StoreError`` saying the
   database is unreachable; callers retry (``accept`` and ``ack`` are idempotent).
5. asyncpg and socket exceptions are mapped here (``map_error``).
6. Up to ``_IN_FLIGHT`` batches commit at once, each on its own connection, so that one
   batch fills while another waits for its COMMIT.  Rule 3's locks order them where they
   touch the same devices (and cannot deadlock them); where they do not, they are
   independent.  Their results may come back in either order, so a stream may be told
   of a higher seq first: ``server._delivery`` then reads the store (its rule 2).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from strongroom.errors import ConflictError, StoreError

from ._rows import AcceptResult

__all__ = [
    "DRIVER_ERRORS",
    "UNREACHABLE",
    "Accept",
    "Ack",
    "Batcher",
    "map_error",
]

T = TypeVar("T")
Work = Callable[[asyncpg.Connection], Awaitable[T]]

_MAX_BATCH = 256
_IN_FLIGHT = 2

# A dead connection or a server that will not talk to us now: retrying later may work.
UNREACHABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    OSError,
    TimeoutError,
)
DRIVER_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *UNREACHABLE)


def map_error(exc: BaseException, where: str) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return ConflictError("that already exists")
    if isinstance(exc, UNREACHABLE):
        return StoreError(
            f"the database at {where} is unreachable ({type(exc).__name__})"
        )
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return StoreError(f"the database at {where} refused our credentials")
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return StoreError(f"there is no database at {where}")
    return StoreError(f"database error: {type(exc).__name__}")


# Rule 3.  FOR NO KEY UPDATE is the lock the UPDATE of next_seq takes anyway.
_LOCK_DEVICES = (
    "SELECT device_id FROM device_seqs WHERE device_id = ANY($1::text[]) "
    "ORDER BY device_id FOR NO KEY UPDATE"
)

# Rule 2: every accept of a batch in one round trip.  ``s`` is one row per send (k is its
# place in the batch), ``c`` one row per copy (i is its place).  Sends whose id is new
# (``fresh``) have their copies numbered per device in batch order from the device's
# next_seq, which moves by the number of copies; unknown and revoked devices have no
# counter row and so get no copy.  A shared body is stored once, if any copy refers to it.
# The result names the fresh sends (seq NULL) and every stored copy.
_ACCEPT_ALL = """
WITH s AS (
    SELECT * FROM unnest($1::text[], $2::bytea[], $3::bigint[], $4::bigint[], $5::bytea[])
    WITH ORDINALITY AS s(sender, envelope_id, at, expires_at, shared, k)
), fresh AS (
    INSERT INTO sends(sender, envelope_id, at) SELECT sender, envelope_id, at FROM s
    ON CONFLICT DO NOTHING
    RETURNING sender, envelope_id
), c AS (
    SELECT c.i, c.device_id, c.body, s.sender, s.envelope_id, s.at, s.expires_at
    FROM unnest($6::bigint[], $7::text[], $8::bytea[])
        WITH ORDINALITY AS c(k, device_id, body, i)
    JOIN s USING (k) JOIN fresh USING (sender, envelope_id)
), bump AS (
    UPDATE device_seqs d SET next_seq = d.next_seq + n.copies
    FROM (SELECT device_id, count(*) AS copies FROM c GROUP BY device_id) n
    WHERE d.device_id = n.device_id
    RETURNING d.device_id, d.next_seq - n.copies AS base
), stored AS (
    INSERT INTO inbox(device_id, seq, envelope_id, sender, at, body, expires_at)
    SELECT c.device_id, bump.base + row_number() OVER (PARTITION BY c.device_id ORDER BY c.i),
        c.envelope_id, c.sender, c.at, c.body, c.expires_at
    FROM c JOIN bump USING (device_id)
    RETURNING device_id, seq, sender, envelope_id
), bodies AS (
    INSERT INTO shared_bodies(sender, envelope_id, at, body)
    SELECT s.sender, s.envelope_id, s.at, s.shared FROM s JOIN fresh USING (sender, envelope_id)
    WHERE s.shared IS NOT NULL AND EXISTS (
        SELECT 1 FROM stored WHERE stored.sender = s.sender
        AND stored.envelope_id = s.envelope_id)
)
SELECT sender, envelope_id, NULL::text, NULL::bigint FROM fresh
UNION ALL
SELECT sender, envelope_id, device_id, seq FROM stored
"""

_ACK_ALL = (
    "DELETE FROM inbox i USING unnest($1::text[], $2::bigint[]) AS a(device_id, upto) "
    "WHERE i.device_id = a.device_id AND i.seq <= a.upto"
)


class Accept:
    """One ``accept``/``accept_shared`` for the fast path: ``shared`` is the one body of
    a shared send (its copies' bodies are None)."""

    __slots__ = ("at", "copies", "envelope_id", "expires_at", "sender", "shared")

    def __init__(
        self,
        sender: str,
        envelope_id: bytes,
        copies: Sequence[tuple[str, bytes | None]],
        at: int,
        expires_at: int | None,
        shared: bytes | None,
    ) -> None:
        self.sender = sender
        self.envelope_id = envelope_id
        self.copies = copies
        self.at = at
        self.expires_at = expires_at
        self.shared = shared


class Ack:
    __slots__ = ("device_id", "upto")

    def __init__(self, device_id: str, upto: int) -> None:
        self.device_id = device_id
        self.upto = upto


class _Write:
    __slots__ = ("devices", "fast", "fn", "future")

    def __init__(
        self,
        fn: Work[Any],
        devices: list[str],
        fast: Accept | Ack | None,
        future: asyncio.Future[Any],
    ) -> None:
        self.fn = fn
        self.devices = devices
        self.fast = fast
        self.future = future

    def settle(self, result: Any, error: BaseException | None) -> None:
        if self.future.done():  # the caller gave up waiting
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)


Outcome = tuple[_Write, Any, BaseException | None]


class Batcher:
    """The queue and the one task that commits it (rule 1)."""

    def __init__(self, where: str) -> None:
        self._where = where
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0  # batches committed, and the writes they carried
        self.writes = 0

    def start(self, pool: Any) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._loop(pool))

    @property
    def running(self) -> bool:
        return self._task is not None

    async def close(self) -> None:
        """Commit every write queued so far, then stop."""
        task, self._task = self._task, None
        if task is not None:
            self._queue.put_nowait(None)
            await task

    def submit(
        self, fn: Work[T], devices: list[str], fast: Accept | Ack | None = None
    ) -> asyncio.Future[T]:
        """Queue ``fn`` (which locks no device row outside ``devices``); the future
        resolves after the COMMIT that includes it.

        ``fast`` describes the same write for the fast path; ``fn`` must do exactly
        what the fast path does for it.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(fn, devices, fast, future))
        return future

    async def _loop(self, pool: Any) -> None:
        running: set[asyncio.Task[None]] = set()
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is None:
                break
            if len(running) >= _IN_FLIGHT:  # rule 6; what queues meanwhile joins
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            batch = [first]
            while len(batch) < _MAX_BATCH and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stop = True
                    break
                batch.append(item)
            task = asyncio.create_task(self._run(pool, batch))
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.wait(running)

    async def _run(self, pool: Any, batch: list[_Write]) -> None:
        batch = [write for write in batch if not write.future.done()]
        if not batch:
            return
        devices = sorted({device for write in batch for device in write.devices})
        try:
            try:
                outcomes = await self._transaction(pool, devices, batch, fast=True)
            except UNREACHABLE:
                raise
            except Exception:  # rule 2: again, each write alone
                outcomes = await self._transaction(pool, devices, batch, fast=False)
        except Exception as exc:  # the whole batch is lost, and none of it committed
            failure = (
                map_error(exc, self._where)
                if isinstance(exc, (StoreError, *DRIVER_ERRORS))
                else StoreError("write failed")
            )
            for write in batch:
                write.settle(None, failure)
            return
        self.commits += 1
        self.writes += len(batch)
        for write, result, error in outcomes:
            write.settle(result, error)

    async def _transaction(
        self, pool: Any, devices: list[str], batch: list[_Write], *, fast: bool
    ) -> list[Outcome]:
        async with pool.acquire() as conn, conn.transaction():
            if devices:
                await conn.execute(_LOCK_DEVICES, devices)
            if fast:
                return await _fast(conn, batch)
            if len(batch) == 1:  # the transaction is the savepoint
                return [(batch[0], await batch[0].fn(conn), None)]
            return [await self._savepoint(conn, write) for write in batch]

    async def _savepoint(self, conn: asyncpg.Connection, write: _Write) -> Outcome:
        try:
            async with conn.transaction():
                return write, await write.fn(conn), None
        except UNREACHABLE:
            raise  # the connection is gone, and the batch with it
        except (StoreError, asyncpg.PostgresError) as exc:
            return write, None, map_error(exc, self._where)
        except Exception:  # a bug in one write must not fail the others
            return write, None, StoreError("write failed")


async def _fast(conn: asyncpg.Connection, batch: list[_Write]) -> list[Outcome]:
    """Rule 2's fast path: raises if anything fails (the caller retries carefully)."""
    accepts: list[tuple[_Write, Accept]] = []
    acks: list[tuple[_Write, Ack]] = []
    rest: list[_Write] = []
    for write in batch:
        if isinstance(write.fast, Accept):
            accepts.append((write, write.fast))
        elif isinstance(write.fast, Ack):
            acks.append((write, write.fast))
        else:
            rest.append(write)
    outcomes: list[Outcome] = []
    if accepts:
        outcomes += await _accept_all(conn, accepts)
    if acks:
        await conn.execute(
            _ACK_ALL, [a.device_id for _, a in acks], [a.upto for _, a in acks]
        )
        outcomes += [(write, None, None) for write, _ in acks]
    for write in rest:
        outcomes.append((write, await write.fn(conn), None))
    return outcomes


async def _accept_all(
    conn: asyncpg.Connection, accepts: list[tuple[_Write, Accept]]
) -> list[Outcome]:
    sends: list[Accept] = []
    firsts: list[bool] = []  # a send id repeated within the batch is a duplicate
    seen: set[tuple[str, bytes]] = set()
    for _, a in accepts:
        key = (a.sender, a.envelope_id)
        firsts.append(key not in seen)
        if key not in seen:
            seen.add(key)
            sends.append(a)
    ks: list[int] = []
    devices: list[str] = []
    bodies: list[bytes | None] = []
    for k, a in enumerate(sends, start=1):
        for device_id, body in a.copies:
            ks.append(k)
            devices.append(device_id)
            bodies.append(body)
    rows = await conn.fetch(
        _ACCEPT_ALL,
        [a.sender for a in sends],
        [a.envelope_id for a in sends],
        [a.at for a in sends],
        [a.expires_at for a in sends],
        [a.shared for a in sends],
        ks,
        devices,
        bodies,
    )
    fresh: set[tuple[str, bytes]] = set()
    seqs: dict[tuple[str, bytes, str], list[int]] = {}
    for sender, envelope_id, device_id, seq in rows:
        key = (sender, bytes(envelope_id))
        if seq is None:
            fresh.add(key)
        else:
            seqs.setdefault((*key, device_id), []).append(seq)
    for numbered in seqs.values():
        numbered.sort(reverse=True)  # one send's copies to one device, in copy order
    outcomes: list[Outcome] = []
    for (write, a), is_first in zip(accepts, firsts, strict=True):
        key = (a.sender, a.envelope_id)
        if not is_first or key not in fresh:
            outcomes.append((write, AcceptResult([], [], duplicate=True), None))
            continue
        delivered: list[str] = []
        skipped: list[str] = []
        numbers: list[int] = []
        for device_id, _ in a.copies:
            mine = seqs.get((*key, device_id))
            if mine:
                delivered.append(device_id)
                numbers.append(mine.pop())
            else:
                skipped.append(device_id)
        outcomes.append((write, AcceptResult(delivered, skipped, seqs=numbers), None))
    return outcomes
