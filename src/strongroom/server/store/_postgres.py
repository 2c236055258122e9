"""PostgreSQL, for several server nodes sharing one database.

Rules (how this backend keeps the ``Store`` rules):

1. ``accept`` and ``ack``, the hot path, are group-committed (``_pg_batch``): callers
   queue their writes and one task per store runs everything waiting in one transaction,
   in two statements when all goes well; one caller's failure rolls back only that
   caller.  A caller's future resolves only after COMMIT returned.  Other writes go
   straight through the pool, one transaction each.
2. Sequence numbers come from ``device_seqs`` (``UPDATE ... RETURNING``), a narrow
   row per live device kept apart from ``devices`` so that its updates stay HOT (schema
   6).  The row lock that update takes is held until COMMIT, so a device's writers, on
   any node, take turns: seqs are gap-free and in commit order.  A rolled-back SAVEPOINT
   or batch undoes its increments with it.
3. A batch first locks every counter row it will touch in device-id order.  Two nodes'
   batches then meet in one order and never deadlock, whatever order their copies name
   the devices in.  Writes outside the batch lock at most one counter row
   (``revoke_device`` deletes it, first, so that a batch in flight commits before the
   device's inbox is emptied) and so cannot close a cycle with them.
4. Migrations run under a transaction-scoped advisory lock, one transaction per version,
   so nodes that start together migrate once and never see half a schema.
5. asyncpg and socket exceptions are mapped (``_pg_batch.map_error``): integrity violations ->
   ``ConflictError``; a lost or refused connection -> ``StoreError`` saying the database
   is unreachable; the rest -> ``StoreError``.  The pool replaces dead connections by
   itself; a write in flight when its connection died fails and its caller retries
   (``accept`` and ``ack`` are idempotent); a read is tried once more on a new one.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from strongroom.errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    SchemaError,
    StoreError,
)

from ._fleet import FleetQueries
from ._migrations import SCHEMA_VERSION, statements
from ._pg_batch import DRIVER_ERRORS as _DRIVER_ERRORS
from ._pg_batch import UNREACHABLE as _UNREACHABLE
from ._pg_batch import Accept, Ack, Batcher
from ._pg_batch import map_error as _map_error
from ._rows import (
    AcceptResult,
    ActivationRow,
    BlobRow,
    CodeRow,
    DeviceRow,
    GroupChangeRow,
    InboxRow,
    StoredKey,
    UserRow,
)
from ._shared import (
    BLOB_GRACE_MS,
    SEND_ID_RETENTION_MS,
    SHARED_GRACE_MS,
    UPLOAD_TTL_MS,
    blob_refused,
    check_blob_progress,
    check_group_head,
)

__all__ = ["PostgresStore"]

T = TypeVar("T")
Work = Callable[[asyncpg.Connection], Awaitable[T]]

_POOL_MIN = 2
_POOL_MAX = 10
_CONNECT_TIMEOUT_S = 10.0
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

_DEVICE_COLUMNS = (
    "device_id, user_id, name, ed25519, curve25519, certificate, created_at, last_seen,"
    " revoked_at, revocation, client_version"
)
_CODE_COLUMNS = "code_id, user_id, password, created_at, expires_at, failures, state"

# One round trip stores every copy: bump each named live device's next_seq by its number
# of copies, then number its copies from the old value.  Unknown and revoked devices
# have no counter row and so get no copy.
_STORE_COPIES = """
WITH copies AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::bytea[]) AS c(device_id, n, body)
), bump AS (
    UPDATE device_seqs d SET next_seq = d.next_seq + k.copies
    FROM (SELECT device_id, count(*) AS copies FROM copies GROUP BY device_id) k
    WHERE d.device_id = k.device_id
    RETURNING d.device_id, d.next_seq - k.copies AS base
)
INSERT INTO inbox(device_id, seq, envelope_id, sender, at, body, expires_at)
SELECT copies.device_id, bump.base + copies.n, $4, $5, $6, copies.body, $7
FROM copies JOIN bump USING (device_id)
RETURNING device_id, seq
"""

_PRUNE_SHARED = (
    "DELETE FROM shared_bodies WHERE at < $1 AND NOT EXISTS (SELECT 1 FROM inbox i "
    "WHERE i.sender = shared_bodies.sender AND i.envelope_id = shared_bodies.envelope_id)"
)

# Complete blobs no waiting inbox row names, orphaned and untouched for the grace
# period; and stalled uploads.  Then mark the newly orphaned.  SKIP LOCKED: a blob that
# a send is naming right now is locked by that send's UPDATE (touched_at, orphaned_at),
# so pruning passes it by instead of waiting; it never waits on the accept batch, so
# the two cannot deadlock.  A send that commits first has moved touched_at, which the
# recheck of the locked row sees; a send that comes second finds the blob gone and is
# refused.
_NOBODY_WAITS = """NOT EXISTS (
    SELECT 1 FROM blob_refs r JOIN inbox i
    ON i.sender = r.sender AND i.envelope_id = r.envelope_id
    WHERE r.blob_id = blobs.blob_id)"""
_PRUNE_BLOBS = f"""
WITH doomed AS (
    SELECT blob_id FROM blobs
    WHERE (complete = 1 AND orphaned_at < $1 AND touched_at < $1 AND {_NOBODY_WAITS})
    OR (complete = 0 AND touched_at < $2)
    FOR UPDATE SKIP LOCKED
)
DELETE FROM blobs USING doomed WHERE blobs.blob_id = doomed.blob_id
RETURNING blobs.blob_id
"""
_MARK_ORPHANS = f"""
UPDATE blobs SET orphaned_at = $1 WHERE blob_id IN (
    SELECT blob_id FROM blobs
    WHERE complete = 1 AND orphaned_at IS NULL AND {_NOBODY_WAITS}
    FOR UPDATE SKIP LOCKED)
"""
_BLOB_COLUMNS = (
    "blob_id, owner, size, received, complete, created_at, completed_at, touched_at,"
    " orphaned_at"
)


def _blob(row: Any) -> BlobRow:
    return BlobRow(
        blob_id=row[0],
        owner=row[1],
        size=row[2],
        received=row[3],
        complete=bool(row[4]),
        created_at=row[5],
        completed_at=row[6],
        touched_at=row[7],
        orphaned_at=row[8],
    )


def _device(row: Any) -> DeviceRow:
    return DeviceRow(
        device_id=row[0],
        user=row[1],
        name=row[2],
        ed25519=row[3],
        curve25519=row[4],
        certificate=bytes(row[5]),
        created_at=row[6],
        last_seen=row[7],
        revoked_at=row[8],
        revocation=None if row[9] is None else bytes(row[9]),
        client_version=row[10],
    )


def _code(row: Any) -> CodeRow:
    return CodeRow(
        code_id=row[0],
        user=row[1],
        password=bytes(row[2]),
        created_at=row[3],
        expires_at=row[4],
        failures=row[5],
        state=row[6],
    )


class _Target:
    """What a Strongroom PostgreSQL URL names, split into what asyncpg takes."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schemas = [value for key, value in query if key == "schema"]
        if len(schemas) > 1:
            raise ConfigError("the database URL names more than one schema")
        self.schema = schemas[0] if schemas else None
        if self.schema is not None and (
            not _SCHEMA_NAME.fullmatch(self.schema) or self.schema.startswith("pg_")
        ):
            raise ConfigError(
                f"bad schema name {self.schema!r} in the database URL: use 1 to 63 "
                "lower-case letters, digits and underscores, not starting with a digit "
                "or pg_"
            )
        names = [value for key, value in query if key == "application_name"]
        rest = [(k, v) for k, v in query if k not in ("schema", "application_name")]
        self.dsn = urlunsplit(parts._replace(query=urlencode(rest)))
        self.settings = {
            "application_name": names[-1] if names else "strongroom",
            # The hot path's statements take arrays whose length is the whole story (one
            # copy or a thousand); a generic plan, which PostgreSQL switches to after five
            # runs of a prepared statement, cannot know it and made a 1,000-member group
            # message's accept 70 ms instead of 15 (decision 0005).
            "plan_cache_mode": "force_custom_plan",
        }
        if self.schema is not None:
            self.settings["search_path"] = self.schema
        # for messages: never the credentials
        self.where = parts.netloc.rpartition("@")[2] + parts.path
        digest = hashlib.sha256(f"strongroom migrate {self.schema}".encode()).digest()
        self.lock_key = int.from_bytes(digest[:8], "big", signed=True)


def _numbered(sql: str) -> str:
    """Portable ``?`` placeholders as PostgreSQL's ``$1, $2, ...``."""
    count = iter(range(1, sql.count("?") + 1))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


class PostgresStore(FleetQueries):
    """``Store`` on a PostgreSQL database, in the schema the URL's ``schema=`` names.

    Raises ``ConfigError`` for a malformed schema name; connects only in ``open``.
    """

    def __init__(self, url: str) -> None:
        self._target = _Target(url)
        self._pool: Any = None
        self._batcher = Batcher(self._target.where)
        self._version = 0

    # --- plumbing -----------------------------------------------------------------------

    async def open(self, *, migrate: bool = False) -> None:
        target = self._target
        try:
            pool = await asyncpg.create_pool(
                target.dsn,
                min_size=_POOL_MIN,
                max_size=_POOL_MAX,
                timeout=_CONNECT_TIMEOUT_S,
                server_settings=target.settings,
                reset=_keep_session,
            )
        except _DRIVER_ERRORS as exc:
            raise _map_error(exc, target.where) from exc
        try:
            async with pool.acquire() as conn:
                self._version = await self._check_schema(conn, migrate)
        except BaseException as exc:
            pool.terminate()
            if isinstance(exc, _DRIVER_ERRORS):
                raise _map_error(exc, target.where) from exc
            raise
        self._pool = pool
        self._batcher.start(pool)

    async def _check_schema(self, conn: asyncpg.Connection, migrate: bool) -> int:
        version = await _stored_version(conn)
        _refuse_newer(version)
        if version < SCHEMA_VERSION and not migrate:
            raise SchemaError(
                f"the database has schema version {version}, this build needs "
                f"{SCHEMA_VERSION}: run `strongroom migrate` first"
            )
        schema = self._target.schema
        while version < SCHEMA_VERSION:
            async with conn.transaction():
                # Rule 4: whoever holds the lock re-reads the version and does the next
                # step; the others find it done.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1)", self._target.lock_key
                )
                if schema is not None and not await conn.fetchval(
                    "SELECT 1 FROM pg_namespace WHERE nspname = $1", schema
                ):
                    await conn.execute(f'CREATE SCHEMA "{schema}"')
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)"
                )
                version = await _stored_version(conn)
                _refuse_newer(version)
                if version == SCHEMA_VERSION:
                    break
                for statement in statements(version, "postgresql", "BYTEA"):
                    await conn.execute(statement)
                version += 1
                await conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', $1) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    str(version),
                )
        return version

    async def close(self) -> None:
        await self._batcher.close()  # after every write already queued
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), _CONNECT_TIMEOUT_S)
            except _DRIVER_ERRORS:
                pool.terminate()

    def _live_pool(self) -> Any:
        if self._pool is None or not self._batcher.running:
            raise StoreError("the store is not open")
        return self._pool

    async def _write(self, fn: Work[T]) -> T:
        """One transaction of its own, straight through the pool."""
        pool = self._live_pool()
        try:
            async with pool.acquire() as conn, conn.transaction():
                return await fn(conn)
        except _DRIVER_ERRORS as exc:
            raise _map_error(exc, self._target.where) from exc

    async def _statement(self, fn: Work[T]) -> T:
        """Autocommit, for methods whose one write is one statement (atomic by itself).

        Two round trips cheaper than wrapping it in BEGIN ... COMMIT.
        """
        pool = self._live_pool()
        try:
            async with pool.acquire() as conn:
                return await fn(conn)
        except _DRIVER_ERRORS as exc:
            raise _map_error(exc, self._target.where) from exc

    async def _read(self, fn: Work[T]) -> T:
        """Reads only: safe to run twice."""
        try:
            return await self._statement(fn)
        except StoreError as exc:
            if not isinstance(exc.__cause__, _UNREACHABLE):
                raise
        # The pool hands out a connection the server dropped until it notices; the pool
        # has replaced it by now, so the second try tells a dead connection from a dead
        # database.
        return await self._statement(fn)

    async def ping(self) -> None:
        await self._read(lambda c: c.fetchval("SELECT 1"))

    async def _sql_rows(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        query = _numbered(sql)
        return await self._read(lambda c: c.fetch(query, *args))

    async def _sql_exec(self, sql: str, args: tuple[Any, ...]) -> None:
        query = _numbered(sql)
        await self._statement(lambda c: c.execute(query, *args))

    async def schema_version(self) -> int:
        return self._version

    # --- users -------------------------------------------------------------------------

    async def add_user(self, user: str, name: str, at: int) -> UserRow:
        async def fn(c: asyncpg.Connection) -> UserRow:
            await c.execute(
                "INSERT INTO users(user_id, name, created_at) VALUES ($1, $2, $3)",
                user,
                name,
                at,
            )
            return UserRow(user, name, at)

        return await self._statement(fn)

    async def get_user(self, user: str) -> UserRow | None:
        async def fn(c: asyncpg.Connection) -> UserRow | None:
            row = await c.fetchrow(
                "SELECT user_id, name, created_at, disabled FROM users WHERE user_id=$1",
                user,
            )
            return (
                None if row is None else UserRow(row[0], row[1], row[2], bool(row[3]))
            )

        return await self._read(fn)

    async def list_users(self) -> list[UserRow]:
        async def fn(c: asyncpg.Connection) -> list[UserRow]:
            rows = await c.fetch(
                "SELECT user_id, name, created_at, disabled FROM users "
                'ORDER BY user_id COLLATE "C"'
            )
            return [UserRow(r[0], r[1], r[2], bool(r[3])) for r in rows]

        return await self._read(fn)

    # --- activation codes -----------------------------------------------------------------

    async def add_code(
        self, code_id: str, user: str, password: bytes, at: int, expires_at: int
    ) -> CodeRow:
        async def fn(c: asyncpg.Connection) -> CodeRow:
            # the user's row lock makes concurrent add_codes take turns, so the second
            # one sees, and replaces, the first one's code
            if not await c.fetchval(
                "SELECT 1 FROM users WHERE user_id=$1 FOR UPDATE", user
            ):
                raise NotFoundError(f"no user {user!r}")
            await c.execute(
                "UPDATE activation_codes SET state='replaced' "
                "WHERE user_id=$1 AND state='live'",
                user,
            )
            await c.execute(
                f"INSERT INTO activation_codes({_CODE_COLUMNS}) "
                "VALUES ($1, $2, $3, $4, $5, 0, 'live')",
                code_id,
                user,
                password,
                at,
                expires_at,
            )
            return CodeRow(code_id, user, password, at, expires_at, 0, "live")

        return await self._write(fn)

    async def latest_code(self, user: str) -> CodeRow | None:
        async def fn(c: asyncpg.Connection) -> CodeRow | None:
            # Within one millisecond, the code added last is the one no later code
            # replaced (SQLite breaks the tie by rowid; PostgreSQL has none).
            row = await c.fetchrow(
                f"SELECT {_CODE_COLUMNS} FROM activation_codes WHERE user_id=$1 "
                "ORDER BY created_at DESC, state = 'replaced' LIMIT 1",
                user,
            )
            return None if row is None else _code(row)

        return await self._read(fn)

    async def code_failed(self, code_id: str, burn_after: int) -> CodeRow:
        async def fn(c: asyncpg.Connection) -> CodeRow:
            row = await c.fetchrow(
                "UPDATE activation_codes SET failures = failures + 1, "
                "state = CASE WHEN failures + 1 >= $1 AND state='live' THEN 'burned' "
                f"ELSE state END WHERE code_id=$2 RETURNING {_CODE_COLUMNS}",
                burn_after,
                code_id,
            )
            if row is None:
                raise NotFoundError("no such code")
            return _code(row)

        return await self._statement(fn)

    async def put_activation(self, row: ActivationRow) -> None:
        async def fn(c: asyncpg.Connection) -> None:
            await c.execute(
                "INSERT INTO activation_sessions(session_id, user_id, code_id, shared, "
                "expires_at, reason) VALUES ($1, $2, $3, $4, $5, $6)",
                row.session_id,
                row.user,
                row.code_id,
                row.shared,
                row.expires_at,
                row.reason,
            )

        await self._statement(fn)

    async def take_activation(self, session_id: str, now: int) -> ActivationRow | None:
        async def fn(c: asyncpg.Connection) -> ActivationRow | None:
            row = await c.fetchrow(
                "DELETE FROM activation_sessions WHERE session_id=$1 RETURNING "
                "session_id, user_id, code_id, shared, expires_at, reason",
                session_id,
            )
            if row is None or row[4] < now:
                return None
            return ActivationRow(row[0], row[1], row[2], bytes(row[3]), row[4], row[5])

        return await self._statement(fn)

    # --- devices -------------------------------------------------------------------------

    async def add_device(
        self, row: DeviceRow, code_id: str, now: int, keys: list[StoredKey]
    ) -> None:
        async def fn(c: asyncpg.Connection) -> None:
            used = await c.fetchval(
                "UPDATE activation_codes SET state='used' WHERE code_id=$1 "
                "AND user_id=$2 AND state='live' AND expires_at >= $3 RETURNING 1",
                code_id,
                row.user,
                now,
            )
            if used is None:
                raise ConflictError("the activation code is no longer live")
            await c.execute(
                f"INSERT INTO devices({_DEVICE_COLUMNS}) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                row.device_id,
                row.user,
                row.name,
                row.ed25519,
                row.curve25519,
                row.certificate,
                row.created_at,
                row.last_seen,
                row.revoked_at,
                row.revocation,
                row.client_version,
            )
            if row.revoked_at is None:
                await c.execute(
                    "INSERT INTO device_seqs(device_id, next_seq) VALUES ($1, 0)",
                    row.device_id,
                )
            await _insert_keys(c, row.device_id, keys)

        await self._write(fn)

    async def get_device(self, device_id: str) -> DeviceRow | None:
        async def fn(c: asyncpg.Connection) -> DeviceRow | None:
            row = await c.fetchrow(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id=$1", device_id
            )
            return None if row is None else _device(row)

        return await self._read(fn)

    async def list_devices(self, user: str | None = None) -> list[DeviceRow]:
        async def fn(c: asyncpg.Connection) -> list[DeviceRow]:
            if user is None:
                rows = await c.fetch(
                    f"SELECT {_DEVICE_COLUMNS} FROM devices "
                    'ORDER BY user_id COLLATE "C", created_at, device_id'
                )
            else:
                rows = await c.fetch(
                    f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE user_id=$1 "
                    "ORDER BY created_at, device_id",
                    user,
                )
            return [_device(r) for r in rows]

        return await self._read(fn)

    async def revoke_device(
        self, device_id: str, revocation: bytes, at: int
    ) -> DeviceRow:
        async def fn(c: asyncpg.Connection) -> DeviceRow:
            # rule 3: the counter first, so no batch numbers a copy for it after this
            await c.execute("DELETE FROM device_seqs WHERE device_id=$1", device_id)
            await c.execute(
                "UPDATE devices SET revoked_at=$1, revocation=$2 "
                "WHERE device_id=$3 AND revoked_at IS NULL",
                at,
                revocation,
                device_id,
            )
            await c.execute("DELETE FROM one_time_keys WHERE device_id=$1", device_id)
            await c.execute("DELETE FROM inbox WHERE device_id=$1", device_id)
            row = await c.fetchrow(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id=$1", device_id
            )
            if row is None:
                raise NotFoundError(f"no device {device_id!r}")
            return _device(row)

        return await self._write(fn)

    async def touch_device(self, device_id: str, at: int, client_version: str) -> None:
        async def fn(c: asyncpg.Connection) -> None:
            await c.execute(
                "UPDATE devices SET last_seen=$1, client_version=$2 WHERE device_id=$3",
                at,
                client_version,
                device_id,
            )

        await self._statement(fn)

    # --- one-time keys -------------------------------------------------------------------

    async def add_keys(self, device_id: str, keys: list[StoredKey]) -> int:
        async def fn(c: asyncpg.Connection) -> int:
            await _insert_keys(c, device_id, keys)
            return await _count_keys(c, device_id)

        return await self._write(fn)

    async def claim_key(self, device_id: str) -> StoredKey | None:
        async def fn(c: asyncpg.Connection) -> StoredKey | None:
            # SKIP LOCKED: a concurrent claim takes another key instead of waiting for
            # this one and then finding it gone
            row = await c.fetchrow(
                "DELETE FROM one_time_keys WHERE device_id=$1 AND fallback=0 "
                "AND key_id = (SELECT key_id FROM one_time_keys "
                "WHERE device_id=$1 AND fallback=0 LIMIT 1 FOR UPDATE SKIP LOCKED) "
                "RETURNING key_id, key, signature, fallback",
                device_id,
            )
            if row is None:
                row = await c.fetchrow(
                    "SELECT key_id, key, signature, fallback FROM one_time_keys "
                    "WHERE device_id=$1 AND fallback=1",
                    device_id,
                )
            if row is None:
                return None
            return StoredKey(row[0], row[1], bytes(row[2]), bool(row[3]))

        return await self._statement(fn)

    async def count_keys(self, device_id: str) -> int:
        return await self._read(lambda c: _count_keys(c, device_id))

    # --- envelopes -------------------------------------------------------------------------

    def accept(
        self,
        sender: str,
        envelope_id: bytes,
        copies: list[tuple[str, bytes]],
        at: int,
        *,
        expires_at: int | None = None,
        blobs: Sequence[str] = (),
    ) -> asyncio.Future[AcceptResult]:
        return self._accept(sender, envelope_id, copies, at, expires_at, None, blobs)

    def accept_shared(
        self,
        sender: str,
        envelope_id: bytes,
        devices: list[str],
        body: bytes,
        at: int,
        *,
        expires_at: int | None = None,
        blobs: Sequence[str] = (),
    ) -> asyncio.Future[AcceptResult]:
        copies: list[tuple[str, bytes | None]] = [(d, None) for d in devices]
        return self._accept(sender, envelope_id, copies, at, expires_at, body, blobs)

    def _accept(
        self,
        sender: str,
        envelope_id: bytes,
        copies: Sequence[tuple[str, bytes | None]],
        at: int,
        expires_at: int | None,
        shared: bytes | None,
        blobs: Sequence[str] = (),
    ) -> asyncio.Future[AcceptResult]:
        devices = [device_id for device_id, _ in copies]
        numbers: list[int] = []  # the copy's place among the copies for its device
        seen: dict[str, int] = {}
        for device_id in devices:
            seen[device_id] = seen.get(device_id, 0) + 1
            numbers.append(seen[device_id])

        async def fn(c: asyncpg.Connection) -> AcceptResult:
            fresh = await c.fetchval(
                "INSERT INTO sends(sender, envelope_id, at) VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING RETURNING 1",
                sender,
                envelope_id,
                at,
            )
            if fresh is None:
                return AcceptResult([], [], duplicate=True)
            stored: dict[str, list[int]] = {}
            for row in await c.fetch(
                _STORE_COPIES,
                devices,
                numbers,
                [body for _, body in copies],
                envelope_id,
                sender,
                at,
                expires_at,
            ):
                stored.setdefault(row[0], []).append(row[1])
            if shared is not None and stored:
                await c.execute(
                    "INSERT INTO shared_bodies(sender, envelope_id, at, body) "
                    "VALUES ($1, $2, $3, $4)",
                    sender,
                    envelope_id,
                    at,
                    shared,
                )
            if blobs:
                await _ref_blobs(c, sender, envelope_id, blobs, at)
            for seqs in stored.values():
                seqs.sort(reverse=True)  # a device's copies are numbered in order
            return AcceptResult(
                [d for d in devices if d in stored],
                [d for d in devices if d not in stored],
                seqs=[stored[d].pop() for d in devices if d in stored],
            )

        # Sends naming attachments take the careful path: their function alone.
        fast = (
            None
            if blobs
            else Accept(sender, envelope_id, copies, at, expires_at, shared)
        )
        self._live_pool()
        return self._batcher.submit(fn, devices, fast)

    async def fetch(self, device_id: str, after: int, limit: int) -> list[InboxRow]:
        async def fn(c: asyncpg.Connection) -> list[InboxRow]:
            rows = await c.fetch(
                "SELECT i.seq, i.envelope_id, i.sender, i.at, "
                "COALESCE(i.body, s.body), i.body IS NULL FROM inbox i "
                "LEFT JOIN shared_bodies s "
                "ON i.body IS NULL AND s.sender = i.sender "
                "AND s.envelope_id = i.envelope_id "
                "WHERE i.device_id=$1 AND i.seq>$2 ORDER BY i.seq LIMIT $3",
                device_id,
                after,
                limit,
            )
            return [
                InboxRow(r[0], bytes(r[1]), r[2], r[3], bytes(r[4]), bool(r[5]))
                for r in rows
            ]

        return await self._read(fn)

    async def pending(self, device_id: str) -> int:
        async def fn(c: asyncpg.Connection) -> int:
            count = await c.fetchval(
                "SELECT COUNT(*) FROM inbox WHERE device_id=$1", device_id
            )
            return int(count)

        return await self._read(fn)

    def ack(self, device_id: str, upto: int) -> asyncio.Future[None]:
        async def fn(c: asyncpg.Connection) -> None:
            await c.execute(
                "DELETE FROM inbox WHERE device_id=$1 AND seq<=$2", device_id, upto
            )

        self._live_pool()
        return self._batcher.submit(fn, [device_id], Ack(device_id, upto))

    def group_commits(self) -> tuple[int, int]:
        return self._batcher.commits, self._batcher.writes

    async def inbox_depth(self) -> int:
        async def fn(c: asyncpg.Connection) -> int:
            return int(await c.fetchval("SELECT COUNT(*) FROM inbox"))

        return await self._read(fn)

    async def prune(
        self,
        now: int,
        *,
        blob_grace_ms: int = BLOB_GRACE_MS,
        upload_ttl_ms: int = UPLOAD_TTL_MS,
    ) -> list[str]:
        async def fn(c: asyncpg.Connection) -> list[str]:
            await c.execute(
                "DELETE FROM activation_sessions WHERE expires_at < $1", now
            )
            await c.execute(
                "DELETE FROM sends WHERE at < $1", now - SEND_ID_RETENTION_MS
            )
            await c.execute("DELETE FROM inbox WHERE expires_at < $1", now)
            await c.execute(_PRUNE_SHARED, now - SHARED_GRACE_MS)
            rows = await c.fetch(_PRUNE_BLOBS, now - blob_grace_ms, now - upload_ttl_ms)
            removed = [str(r[0]) for r in rows]
            if removed:
                await c.execute(
                    "DELETE FROM blob_refs WHERE blob_id = ANY($1::text[])", removed
                )
            await c.execute(_MARK_ORPHANS, now)
            return removed

        return await self._write(fn)

    # --- attachments -------------------------------------------------------------------

    async def create_blob(
        self, blob_id: str, owner: str, size: int, at: int
    ) -> BlobRow:
        async def fn(c: asyncpg.Connection) -> BlobRow:
            await c.execute(
                "INSERT INTO blobs(blob_id, owner, size, created_at, touched_at) "
                "VALUES ($1, $2, $3, $4, $4)",
                blob_id,
                owner,
                size,
                at,
            )
            return BlobRow(blob_id, owner, size, 0, False, at, None, at)

        return await self._statement(fn)

    async def get_blob(self, blob_id: str) -> BlobRow | None:
        async def fn(c: asyncpg.Connection) -> BlobRow | None:
            row = await c.fetchrow(
                f"SELECT {_BLOB_COLUMNS} FROM blobs WHERE blob_id=$1", blob_id
            )
            return None if row is None else _blob(row)

        return await self._read(fn)

    async def blob_progress(
        self, blob_id: str, offset: int, length: int, at: int
    ) -> BlobRow:
        async def fn(c: asyncpg.Connection) -> BlobRow:
            row = await c.fetchrow(
                "SELECT size, received, complete FROM blobs WHERE blob_id=$1 "
                "FOR UPDATE",
                blob_id,
            )
            check_blob_progress(blob_id, offset, length, row)
            complete = offset + length == row[0]
            updated = await c.fetchrow(
                "UPDATE blobs SET received=$1, complete=$2, completed_at=$3, "
                f"touched_at=$4 WHERE blob_id=$5 RETURNING {_BLOB_COLUMNS}",
                offset + length,
                int(complete),
                at if complete else None,
                at,
                blob_id,
            )
            return _blob(updated)

        return await self._write(fn)

    # --- groups ----------------------------------------------------------------------------

    async def append_group_change(
        self, group_id: str, seq: int, prev: bytes, entry: bytes, hash: bytes, at: int
    ) -> None:
        async def fn(c: asyncpg.Connection) -> None:
            # Serialise appends to one group across nodes: a transaction-scoped lock on
            # the group id (there is no row to lock before the group exists).
            await c.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", group_id
            )
            head = await c.fetchrow(
                "SELECT seq, hash FROM group_changes WHERE group_id=$1 "
                "ORDER BY seq DESC LIMIT 1",
                group_id,
            )
            check_group_head(group_id, seq, prev, None if head is None else tuple(head))
            await c.execute(
                "INSERT INTO group_changes(group_id, seq, entry, hash, at) "
                "VALUES ($1, $2, $3, $4, $5)",
                group_id,
                seq,
                entry,
                hash,
                at,
            )

        await self._write(fn)

    async def group_changes(
        self, group_id: str, after: int, limit: int
    ) -> list[GroupChangeRow]:
        async def fn(c: asyncpg.Connection) -> list[GroupChangeRow]:
            rows = await c.fetch(
                "SELECT seq, entry, hash, at FROM group_changes "
                "WHERE group_id=$1 AND seq>$2 ORDER BY seq LIMIT $3",
                group_id,
                after,
                limit,
            )
            return [GroupChangeRow(r[0], bytes(r[1]), bytes(r[2]), r[3]) for r in rows]

        return await self._read(fn)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset, run on every release: nothing to undo.

    The default reset costs a round trip per use to drop session state (LISTEN,
    advisory locks, SET) that this module never creates; asyncpg still rolls back an
    open transaction first.
    """


async def _stored_version(conn: asyncpg.Connection) -> int:
    if await conn.fetchval("SELECT to_regclass('meta')") is None:
        return 0
    value = await conn.fetchval("SELECT value FROM meta WHERE key='schema_version'")
    return 0 if value is None else int(value)


def _refuse_newer(version: int) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"the database has schema version {version}, but this build knows only up to "
            f"{SCHEMA_VERSION}: run a newer Strongroom"
        )


async def _ref_blobs(
    c: asyncpg.Connection,
    sender: str,
    envelope_id: bytes,
    blobs: Sequence[str],
    at: int,
) -> None:
    """Tie the named blobs to this send; each must be a complete upload of the sender.

    The UPDATE locks each blob's row until COMMIT (see ``_PRUNE_BLOBS``), in id order
    like the device rows of rule 3.
    """
    wanted = sorted(set(blobs))
    rows = await c.fetch(
        "UPDATE blobs SET touched_at=$1, orphaned_at=NULL "
        "WHERE blob_id = ANY($2::text[]) "
        "AND owner=$3 AND complete=1 RETURNING blob_id",
        at,
        wanted,
        sender,
    )
    touched = {str(r[0]) for r in rows}
    for blob_id in wanted:
        if blob_id not in touched:
            raise blob_refused(blob_id)
    await c.execute(
        "INSERT INTO blob_refs(blob_id, sender, envelope_id) "
        "SELECT unnest($1::text[]), $2, $3 ON CONFLICT DO NOTHING",
        wanted,
        sender,
        envelope_id,
    )


async def _insert_keys(
    c: asyncpg.Connection, device_id: str, keys: list[StoredKey]
) -> None:
    if any(k.fallback for k in keys):
        await c.execute(
            "DELETE FROM one_time_keys WHERE device_id=$1 AND fallback=1", device_id
        )
    if keys:
        await c.execute(
            "INSERT INTO one_time_keys(device_id, key_id, key, signature, fallback) "
            "SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bytea[], $5::int[]) "
            "ON CONFLICT DO NOTHING",
            device_id,
            [k.key_id for k in keys],
            [k.key for k in keys],
            [k.signature for k in keys],
            [int(k.fallback) for k in keys],
        )


async def _count_keys(c: asyncpg.Connection, device_id: str) -> int:
    count = await c.fetchval(
        "SELECT COUNT(*) FROM one_time_keys WHERE device_id=$1 AND fallback=0",
        device_id,
    )
    return int(count)
