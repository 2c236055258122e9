"""The embedded default: one SQLite file in WAL mode.

Rules (how this backend keeps the ``Store`` rules):

1. One writer thread owns the write connection and commits every write waiting in one
   transaction (group commit); one caller's failure rolls back only that caller's work,
   and a caller's future resolves only after COMMIT returned (``_sqlite_writer``).
   Sequence numbers are counted there, in memory, and written back in the same
   transaction.
2. Reads run on a second thread with its own connection; WAL lets them proceed while the
   writer commits, and they see only committed data.
3. ``sqlite3`` exceptions are mapped here and in ``_sqlite_writer``: IntegrityError ->
   ``ConflictError``, the rest -> ``StoreError``.  Nothing above this module knows it is
   talking to SQLite.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from strongroom.errors import ConflictError, NotFoundError, SchemaError, StoreError

from ._fleet import FleetQueries
from ._migrations import SCHEMA_VERSION, statements
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
from ._sqlite_writer import Seqs, Writer, map_error

__all__ = ["SqliteStore"]

T = TypeVar("T")
_PRUNE_SHARED = (
    "DELETE FROM shared_bodies WHERE at < ? AND NOT EXISTS (SELECT 1 FROM inbox i "
    "WHERE i.sender = shared_bodies.sender AND i.envelope_id = shared_bodies.envelope_id)"
)

# Complete blobs no waiting inbox row names, orphaned and untouched for the grace
# period; and uploads that stalled.  Then mark the newly orphaned.  Runs after expired
# inbox rows are gone, in the same transaction.
_NOBODY_WAITS = (
    "NOT EXISTS (SELECT 1 FROM blob_refs r JOIN inbox i "
    "ON i.sender = r.sender AND i.envelope_id = r.envelope_id "
    "WHERE r.blob_id = blobs.blob_id)"
)
_PRUNE_BLOBS = (
    "DELETE FROM blobs WHERE (complete = 1 AND orphaned_at < ? AND touched_at < ? "
    f"AND {_NOBODY_WAITS}) OR (complete = 0 AND touched_at < ?) RETURNING blob_id"
)
_MARK_ORPHANS = (
    "UPDATE blobs SET orphaned_at = ? "
    f"WHERE complete = 1 AND orphaned_at IS NULL AND {_NOBODY_WAITS}"
)
_BLOB_COLUMNS = (
    "blob_id, owner, size, received, complete, created_at, completed_at, touched_at,"
    " orphaned_at"
)

_DEVICE_COLUMNS = (
    "device_id, user_id, name, ed25519, curve25519, certificate, created_at, last_seen,"
    " revoked_at, revocation, client_version"
)


def _device(row: tuple[Any, ...]) -> DeviceRow:
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


def _code(row: tuple[Any, ...]) -> CodeRow:
    return CodeRow(
        code_id=row[0],
        user=row[1],
        password=bytes(row[2]),
        created_at=row[3],
        expires_at=row[4],
        failures=row[5],
        state=row[6],
    )


_CODE_COLUMNS = "code_id, user_id, password, created_at, expires_at, failures, state"


class SqliteStore(FleetQueries):
    """``Store`` on one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: Writer | None = None
        self._seqs = Seqs()
        self._reader: ThreadPoolExecutor | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._version = 0

    # --- plumbing -----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    async def open(self, *, migrate: bool = False) -> None:
        try:
            conn = self._connect()
            try:
                self._version = self._check_schema(conn, migrate)
            except BaseException:
                conn.close()
                raise
            self._read_conn = self._connect()
            self._reader = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="sqlite-read"
            )
        except sqlite3.Error as exc:
            raise map_error(exc) from exc
        self._seqs = Seqs()
        self._writer = Writer(conn, self._seqs)

    def _check_schema(self, conn: sqlite3.Connection, migrate: bool) -> int:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)"
        )
        row = conn.execute(
            "SELECT value FROM meta WHERE key='schema_version'"
        ).fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"the database has schema version {version}, but this build knows only up to "
                f"{SCHEMA_VERSION}: run a newer Strongroom"
            )
        if version < SCHEMA_VERSION and not migrate:
            raise SchemaError(
                f"the database has schema version {version}, this build needs "
                f"{SCHEMA_VERSION}: run `strongroom migrate` first"
            )
        for number in range(version, SCHEMA_VERSION):
            conn.execute("BEGIN IMMEDIATE")
            for statement in statements(number, "sqlite", "BLOB"):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (str(number + 1),),
            )
            conn.execute("COMMIT")
        return SCHEMA_VERSION

    async def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await writer.close()
        if self._reader is not None and self._read_conn is not None:
            conn = self._read_conn
            await asyncio.get_running_loop().run_in_executor(self._reader, conn.close)
            self._reader.shutdown(wait=True)
        self._read_conn = None
        self._reader = None

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(fn)

    def _submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        if self._writer is None:
            raise StoreError("the store is not open")
        return self._writer.submit(fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._read_conn
        reader = self._reader
        if conn is None or reader is None:
            raise StoreError("the store is not open")

        def run() -> T:
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                raise map_error(exc) from exc

        return await asyncio.get_running_loop().run_in_executor(reader, run)

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    async def _sql_rows(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        return await self._read(lambda c: c.execute(sql, args).fetchall())

    async def _sql_exec(self, sql: str, args: tuple[Any, ...]) -> None:
        await self._write(lambda c: c.execute(sql, args) and None)

    async def schema_version(self) -> int:
        return self._version

    # --- users -------------------------------------------------------------------------

    async def add_user(self, user: str, name: str, at: int) -> UserRow:
        def fn(c: sqlite3.Connection) -> UserRow:
            c.execute(
                "INSERT INTO users(user_id, name, created_at) VALUES (?, ?, ?)",
                (user, name, at),
            )
            return UserRow(user, name, at)

        return await self._write(fn)

    async def get_user(self, user: str) -> UserRow | None:
        def fn(c: sqlite3.Connection) -> UserRow | None:
            row = c.execute(
                "SELECT user_id, name, created_at, disabled FROM users WHERE user_id=?",
                (user,),
            ).fetchone()
            return (
                None if row is None else UserRow(row[0], row[1], row[2], bool(row[3]))
            )

        return await self._read(fn)

    async def list_users(self) -> list[UserRow]:
        def fn(c: sqlite3.Connection) -> list[UserRow]:
            rows = c.execute(
                "SELECT user_id, name, created_at, disabled FROM users ORDER BY user_id"
            ).fetchall()
            return [UserRow(r[0], r[1], r[2], bool(r[3])) for r in rows]

        return await self._read(fn)

    # --- activation codes -----------------------------------------------------------------

    async def add_code(
        self, code_id: str, user: str, password: bytes, at: int, expires_at: int
    ) -> CodeRow:
        def fn(c: sqlite3.Connection) -> CodeRow:
            if (
                c.execute("SELECT 1 FROM users WHERE user_id=?", (user,)).fetchone()
                is None
            ):
                raise NotFoundError(f"no user {user!r}")
            c.execute(
                "UPDATE activation_codes SET state='replaced' WHERE user_id=? AND state='live'",
                (user,),
            )
            c.execute(
                f"INSERT INTO activation_codes({_CODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, 0, 'live')",
                (code_id, user, password, at, expires_at),
            )
            return CodeRow(code_id, user, password, at, expires_at, 0, "live")

        return await self._write(fn)

    async def latest_code(self, user: str) -> CodeRow | None:
        def fn(c: sqlite3.Connection) -> CodeRow | None:
            row = c.execute(
                f"SELECT {_CODE_COLUMNS} FROM activation_codes WHERE user_id=? "
                "ORDER BY created_at DESC, rowid DESC LIMIT 1",
                (user,),
            ).fetchone()
            return None if row is None else _code(row)

        return await self._read(fn)

    async def code_failed(self, code_id: str, burn_after: int) -> CodeRow:
        def fn(c: sqlite3.Connection) -> CodeRow:
            c.execute(
                "UPDATE activation_codes SET failures = failures + 1, "
                "state = CASE WHEN failures + 1 >= ? AND state='live' THEN 'burned' "
                "ELSE state END WHERE code_id=?",
                (burn_after, code_id),
            )
            row = c.execute(
                f"SELECT {_CODE_COLUMNS} FROM activation_codes WHERE code_id=?",
                (code_id,),
            ).fetchone()
            if row is None:
                raise NotFoundError("no such code")
            return _code(row)

        return await self._write(fn)

    async def put_activation(self, row: ActivationRow) -> None:
        def fn(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO activation_sessions(session_id, user_id, code_id, shared, "
                "expires_at, reason) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    row.session_id,
                    row.user,
                    row.code_id,
                    row.shared,
                    row.expires_at,
                    row.reason,
                ),
            )

        await self._write(fn)

    async def take_activation(self, session_id: str, now: int) -> ActivationRow | None:
        def fn(c: sqlite3.Connection) -> ActivationRow | None:
            row = c.execute(
                "DELETE FROM activation_sessions WHERE session_id=? RETURNING "
                "session_id, user_id, code_id, shared, expires_at, reason",
                (session_id,),
            ).fetchone()
            if row is None or row[4] < now:
                return None
            return ActivationRow(row[0], row[1], row[2], bytes(row[3]), row[4], row[5])

        return await self._write(fn)

    # --- devices -------------------------------------------------------------------------

    async def add_device(
        self, row: DeviceRow, code_id: str, now: int, keys: list[StoredKey]
    ) -> None:
        def fn(c: sqlite3.Connection) -> None:
            used = c.execute(
                "UPDATE activation_codes SET state='used' "
                "WHERE code_id=? AND user_id=? AND state='live' AND expires_at >= ?",
                (code_id, row.user, now),
            )
            if used.rowcount != 1:
                raise ConflictError("the activation code is no longer live")
            c.execute(
                f"INSERT INTO devices({_DEVICE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
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
                ),
            )
            if row.revoked_at is None:
                c.execute(
                    "INSERT INTO device_seqs(device_id, next_seq) VALUES (?, 0)",
                    (row.device_id,),
                )
            _insert_keys(c, row.device_id, keys)

        await self._write(fn)

    async def get_device(self, device_id: str) -> DeviceRow | None:
        def fn(c: sqlite3.Connection) -> DeviceRow | None:
            row = c.execute(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id=?", (device_id,)
            ).fetchone()
            return None if row is None else _device(row)

        return await self._read(fn)

    async def list_devices(self, user: str | None = None) -> list[DeviceRow]:
        def fn(c: sqlite3.Connection) -> list[DeviceRow]:
            if user is None:
                rows = c.execute(
                    f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY user_id, created_at"
                ).fetchall()
            else:
                rows = c.execute(
                    f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE user_id=? ORDER BY created_at",
                    (user,),
                ).fetchall()
            return [_device(r) for r in rows]

        return await self._read(fn)

    async def revoke_device(
        self, device_id: str, revocation: bytes, at: int
    ) -> DeviceRow:
        seqs = self._seqs

        def fn(c: sqlite3.Connection) -> DeviceRow:
            c.execute(
                "UPDATE devices SET revoked_at=?, revocation=? "
                "WHERE device_id=? AND revoked_at IS NULL",
                (at, revocation, device_id),
            )
            c.execute("DELETE FROM device_seqs WHERE device_id=?", (device_id,))
            c.execute("DELETE FROM one_time_keys WHERE device_id=?", (device_id,))
            c.execute("DELETE FROM inbox WHERE device_id=?", (device_id,))
            seqs.forget(device_id)  # revoked: no more copies
            row = c.execute(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id=?", (device_id,)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no device {device_id!r}")
            return _device(row)

        return await self._write(fn)

    async def touch_device(self, device_id: str, at: int, client_version: str) -> None:
        def fn(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE devices SET last_seen=?, client_version=? WHERE device_id=?",
                (at, client_version, device_id),
            )

        await self._write(fn)

    # --- one-time keys -------------------------------------------------------------------

    async def add_keys(self, device_id: str, keys: list[StoredKey]) -> int:
        def fn(c: sqlite3.Connection) -> int:
            _insert_keys(c, device_id, keys)
            return _count_keys(c, device_id)

        return await self._write(fn)

    async def claim_key(self, device_id: str) -> StoredKey | None:
        def fn(c: sqlite3.Connection) -> StoredKey | None:
            row = c.execute(
                "DELETE FROM one_time_keys WHERE rowid = (SELECT rowid FROM one_time_keys "
                "WHERE device_id=? AND fallback=0 LIMIT 1) "
                "RETURNING key_id, key, signature, fallback",
                (device_id,),
            ).fetchone()
            if row is None:
                row = c.execute(
                    "SELECT key_id, key, signature, fallback FROM one_time_keys "
                    "WHERE device_id=? AND fallback=1",
                    (device_id,),
                ).fetchone()
            if row is None:
                return None
            return StoredKey(row[0], row[1], bytes(row[2]), bool(row[3]))

        return await self._write(fn)

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
        seqs = self._seqs

        def fn(c: sqlite3.Connection) -> AcceptResult:
            result = _store_copies(c, seqs, sender, envelope_id, copies, at, expires_at)
            if blobs and not result.duplicate:
                _ref_blobs(c, sender, envelope_id, blobs, at)
            return result

        return self._submit(fn)

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
        seqs = self._seqs

        def fn(c: sqlite3.Connection) -> AcceptResult:
            result = _store_copies(c, seqs, sender, envelope_id, copies, at, expires_at)
            if blobs and not result.duplicate:
                _ref_blobs(c, sender, envelope_id, blobs, at)
            if result.delivered_to:
                c.execute(
                    "INSERT INTO shared_bodies(sender, envelope_id, at, body) "
                    "VALUES (?, ?, ?, ?)",
                    (sender, envelope_id, at, body),
                )
            return result

        return self._submit(fn)

    async def fetch(self, device_id: str, after: int, limit: int) -> list[InboxRow]:
        def fn(c: sqlite3.Connection) -> list[InboxRow]:
            rows = c.execute(
                "SELECT i.seq, i.envelope_id, i.sender, i.at, "
                "COALESCE(i.body, s.body), i.body IS NULL FROM inbox i "
                "LEFT JOIN shared_bodies s "
                "ON i.body IS NULL AND s.sender = i.sender "
                "AND s.envelope_id = i.envelope_id "
                "WHERE i.device_id=? AND i.seq>? ORDER BY i.seq LIMIT ?",
                (device_id, after, limit),
            ).fetchall()
            return [
                InboxRow(r[0], bytes(r[1]), r[2], r[3], bytes(r[4]), bool(r[5]))
                for r in rows
            ]

        return await self._read(fn)

    async def pending(self, device_id: str) -> int:
        def fn(c: sqlite3.Connection) -> int:
            row = c.execute(
                "SELECT COUNT(*) FROM inbox WHERE device_id=?", (device_id,)
            )
            return int(row.fetchone()[0])

        return await self._read(fn)

    def ack(self, device_id: str, upto: int) -> asyncio.Future[None]:
        def fn(c: sqlite3.Connection) -> None:
            c.execute(
                "DELETE FROM inbox WHERE device_id=? AND seq<=?", (device_id, upto)
            )

        return self._submit(fn)

    def group_commits(self) -> tuple[int, int]:
        writer = self._writer
        return (0, 0) if writer is None else (writer.commits, writer.writes)

    async def inbox_depth(self) -> int:
        def fn(c: sqlite3.Connection) -> int:
            return int(c.execute("SELECT COUNT(*) FROM inbox").fetchone()[0])

        return await self._read(fn)

    async def prune(
        self,
        now: int,
        *,
        blob_grace_ms: int = BLOB_GRACE_MS,
        upload_ttl_ms: int = UPLOAD_TTL_MS,
    ) -> list[str]:
        def fn(c: sqlite3.Connection) -> list[str]:
            c.execute("DELETE FROM activation_sessions WHERE expires_at < ?", (now,))
            c.execute("DELETE FROM sends WHERE at < ?", (now - SEND_ID_RETENTION_MS,))
            c.execute("DELETE FROM inbox WHERE expires_at < ?", (now,))
            c.execute(_PRUNE_SHARED, (now - SHARED_GRACE_MS,))
            grace, stalled = now - blob_grace_ms, now - upload_ttl_ms
            rows = c.execute(_PRUNE_BLOBS, (grace, grace, stalled)).fetchall()
            removed = [str(r[0]) for r in rows]
            c.executemany(
                "DELETE FROM blob_refs WHERE blob_id=?", [(b,) for b in removed]
            )
            c.execute(_MARK_ORPHANS, (now,))
            return removed

        return await self._write(fn)

    # --- attachments -------------------------------------------------------------------

    async def create_blob(
        self, blob_id: str, owner: str, size: int, at: int
    ) -> BlobRow:
        def fn(c: sqlite3.Connection) -> BlobRow:
            c.execute(
                "INSERT INTO blobs(blob_id, owner, size, created_at, touched_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (blob_id, owner, size, at, at),
            )
            return BlobRow(blob_id, owner, size, 0, False, at, None, at)

        return await self._write(fn)

    async def get_blob(self, blob_id: str) -> BlobRow | None:
        def fn(c: sqlite3.Connection) -> BlobRow | None:
            row = c.execute(
                f"SELECT {_BLOB_COLUMNS} FROM blobs WHERE blob_id=?", (blob_id,)
            ).fetchone()
            return None if row is None else _blob(row)

        return await self._read(fn)

    async def blob_progress(
        self, blob_id: str, offset: int, length: int, at: int
    ) -> BlobRow:
        def fn(c: sqlite3.Connection) -> BlobRow:
            row = c.execute(
                "SELECT size, received, complete FROM blobs WHERE blob_id=?",
                (blob_id,),
            ).fetchone()
            check_blob_progress(blob_id, offset, length, row)
            complete = offset + length == row[0]
            updated = c.execute(
                "UPDATE blobs SET received=?, complete=?, completed_at=?, touched_at=? "
                f"WHERE blob_id=? RETURNING {_BLOB_COLUMNS}",
                (offset + length, int(complete), at if complete else None, at, blob_id),
            ).fetchone()
            return _blob(updated)

        return await self._write(fn)

    # --- groups ----------------------------------------------------------------------------

    async def append_group_change(
        self, group_id: str, seq: int, prev: bytes, entry: bytes, hash: bytes, at: int
    ) -> None:
        def fn(c: sqlite3.Connection) -> None:
            head = c.execute(
                "SELECT seq, hash FROM group_changes WHERE group_id=? "
                "ORDER BY seq DESC LIMIT 1",
                (group_id,),
            ).fetchone()
            check_group_head(group_id, seq, prev, head)
            c.execute(
                "INSERT INTO group_changes(group_id, seq, entry, hash, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (group_id, seq, entry, hash, at),
            )

        await self._write(fn)

    async def group_changes(
        self, group_id: str, after: int, limit: int
    ) -> list[GroupChangeRow]:
        def fn(c: sqlite3.Connection) -> list[GroupChangeRow]:
            rows = c.execute(
                "SELECT seq, entry, hash, at FROM group_changes "
                "WHERE group_id=? AND seq>? ORDER BY seq LIMIT ?",
                (group_id, after, limit),
            ).fetchall()
            return [GroupChangeRow(r[0], bytes(r[1]), bytes(r[2]), r[3]) for r in rows]

        return await self._read(fn)


def _store_copies(
    c: sqlite3.Connection,
    seqs: Seqs,
    sender: str,
    envelope_id: bytes,
    copies: Sequence[tuple[str, bytes | None]],
    at: int,
    expires_at: int | None,
) -> AcceptResult:
    """Number and store each copy; a None body refers to the shared body."""
    fresh = c.execute(
        "INSERT INTO sends(sender, envelope_id, at) VALUES (?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        (sender, envelope_id, at),
    )
    if fresh.rowcount == 0:
        return AcceptResult([], [], duplicate=True)
    delivered: list[str] = []
    skipped: list[str] = []
    rows: list[tuple[str, int, bytes, str, int, bytes | None, int | None]] = []
    for device_id, body in copies:
        seq = seqs.take(c, device_id)
        if seq is None:
            skipped.append(device_id)
            continue
        delivered.append(device_id)
        rows.append((device_id, seq, envelope_id, sender, at, body, expires_at))
    c.executemany(
        "INSERT INTO inbox(device_id, seq, envelope_id, sender, at, body, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    return AcceptResult(delivered, skipped, seqs=[row[1] for row in rows])


def _ref_blobs(
    c: sqlite3.Connection,
    sender: str,
    envelope_id: bytes,
    blobs: Sequence[str],
    at: int,
) -> None:
    """Tie the named blobs to this send; each must be a complete upload of the sender."""
    for blob_id in dict.fromkeys(blobs):
        touched = c.execute(
            "UPDATE blobs SET touched_at=?, orphaned_at=NULL "
            "WHERE blob_id=? AND owner=? AND complete=1",
            (at, blob_id, sender),
        )
        if touched.rowcount != 1:
            raise blob_refused(blob_id)
        c.execute(
            "INSERT INTO blob_refs(blob_id, sender, envelope_id) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (blob_id, sender, envelope_id),
        )


def _blob(row: tuple[Any, ...]) -> BlobRow:
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


def _insert_keys(c: sqlite3.Connection, device_id: str, keys: list[StoredKey]) -> None:
    if any(k.fallback for k in keys):
        c.execute(
            "DELETE FROM one_time_keys WHERE device_id=? AND fallback=1", (device_id,)
        )
    c.executemany(
        "INSERT INTO one_time_keys(device_id, key_id, key, signature, fallback) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        [(device_id, k.key_id, k.key, k.signature, int(k.fallback)) for k in keys],
    )


def _count_keys(c: sqlite3.Connection, device_id: str) -> int:
    row = c.execute(
        "SELECT COUNT(*) FROM one_time_keys WHERE device_id=? AND fallback=0",
        (device_id,),
    ).fetchone()
    return int(row[0])
