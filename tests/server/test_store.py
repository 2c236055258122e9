"""Storage conformance suite: the executable form of the rules of ``Store``.

Every backend must pass every test here unchanged.  ``_backend`` is the only place
that knows which backends exist; test bodies see nothing but the ``Store`` interface
(and, for the schema-version check, the two raw operations a ``Backend`` offers).  To
add a backend, add its name to ``BACKENDS`` and a branch in ``_backend`` that builds a
new store object on one fresh, empty database per test.

PostgreSQL runs against the local test database (``tests/_services.py``), one fresh
schema per test, dropped afterwards; it skips when the database is not reachable
(outside CI).  The tests at the end are PostgreSQL's own: killed connections, several
server nodes on one database, and its URL.

The rules are in ``strongroom/server/store/_protocol.py``.  The store is async and
pytest here is not: each test is an ``async def`` taking an open ``Store``, and
the ``@scenario`` decorator turns it into a plain test that runs it with
``asyncio.run`` on a freshly opened store.  Tests that must close and reopen the
store (durability) take the ``store`` factory directly and run themselves with
``arun``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import secrets
import sqlite3
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg
import msgspec
import pytest

from _services import POSTGRES_URL, postgres_placeholders, postgres_schema
from strongroom.errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    SchemaError,
    StoreError,
)
from strongroom.server.store import (
    SCHEMA_VERSION,
    AcceptResult,
    ActivationRow,
    AuditRecord,
    BlobRow,
    CodeRow,
    DeviceRow,
    FleetRow,
    GroupChangeRow,
    InboxRow,
    PolicyChangeRow,
    PostgresStore,
    SqliteStore,
    Store,
    StoredKey,
    UserRow,
    store_from_url,
)
from strongroom.server.store._migrations import statements

T = TypeVar("T")

# A hung store fails its test quickly instead of waiting for pytest-timeout.
SCENARIO_TIMEOUT_S = 10.0

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z; every time is in milliseconds
MINUTE = 60_000
HOUR = 60 * MINUTE


# --- the fixture: one fresh database per test, per backend ----------------------------


class OpenStore(Protocol):
    """Opens a new store object on this test's database; closes it on exit."""

    def __call__(
        self, *, migrate: bool = True
    ) -> AbstractAsyncContextManager[Store]: ...


class Backend(NamedTuple):
    """One fresh database of one backend, and raw access to it.

    ``sql`` runs statements in one transaction, as whoever holds the database could:
    ``?`` placeholders and ``{blob}`` are spelt for the backend; it returns the rows of
    the last statement.  ``dialect`` is the backend as ``_migrations.statements`` names it.
    """

    make: Callable[[], Store]
    set_schema_version: Callable[[int], Awaitable[None]]
    tables: Callable[[], Awaitable[set[str]]]
    sql: Callable[[list[tuple[str, tuple[Any, ...]]]], Awaitable[list[tuple[Any, ...]]]]
    dialect: str


BACKENDS = ["sqlite", "postgres"]


@contextmanager
def _backend(name: str, tmp_path: Path) -> Iterator[Backend]:
    if name == "sqlite":
        path = tmp_path / "s.db"
        yield Backend(
            lambda: SqliteStore(path),
            functools.partial(_set_sqlite_schema_version, path),
            functools.partial(_sqlite_tables, path),
            functools.partial(_sqlite_sql, path),
            "sqlite",
        )
    elif name == "postgres":
        with postgres_schema() as url:  # dropped on exit
            yield Backend(
                lambda: PostgresStore(url),
                functools.partial(_set_pg_schema_version, url),
                functools.partial(_pg_tables, url),
                functools.partial(_pg_sql, url),
                "postgresql",
            )
    else:
        raise AssertionError(f"unknown store backend {name!r}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with _backend(request.param, tmp_path) as made:
        yield made


@pytest.fixture
def store(backend: Backend) -> OpenStore:
    @asynccontextmanager
    async def opened(*, migrate: bool = True) -> AsyncIterator[Store]:
        s = backend.make()
        await s.open(migrate=migrate)
        try:
            yield s
        finally:
            await s.close()

    return opened


Failure = type[Exception] | None


def arun(main: Coroutine[Any, Any, None]) -> None:
    """Run one async scenario to completion, failing it if it hangs."""

    async def bounded() -> None:
        async with asyncio.timeout(SCENARIO_TIMEOUT_S):
            await main

    asyncio.run(bounded())


def scenario(
    body: Callable[[Store], Coroutine[Any, Any, None]],
) -> Callable[[OpenStore], None]:
    """Make ``async def test_x(s: Store)`` a plain test on a freshly opened store."""

    def test(store: OpenStore) -> None:
        async def main() -> None:
            async with store() as s:
                await body(s)

        arun(main())

    test.__name__ = test.__qualname__ = body.__name__
    test.__doc__ = body.__doc__
    return test


# --- plausible data -------------------------------------------------------------------


def _raw(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def _b64(raw: bytes) -> str:
    """Unpadded standard base64, as vodozemac spells public keys."""
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def device_row(user: str, name: str = "phone", *, at: int = T0) -> DeviceRow:
    """A device as activation stores it; the id is derived from the Ed25519 key."""
    ed25519 = _raw(f"ed25519 {user} {name}")
    device_id = base64.b32encode(hashlib.sha256(ed25519).digest()).decode().lower()
    return DeviceRow(
        device_id=device_id[:16],
        user=user,
        name=name,
        ed25519=_b64(ed25519),
        curve25519=_b64(_raw(f"curve25519 {user} {name}")),
        certificate=b"\x82\xa6signed" + ed25519 + b"\xa9signature" + _raw(name) * 2,
        created_at=at,
        client_version="strongroom/0.1.0",
    )


def otk(n: int, *, fallback: bool = False) -> StoredKey:
    label = f"{'fallback' if fallback else 'one-time'} key {n}"
    return StoredKey(
        key_id=_b64(n.to_bytes(8, "big")),
        key=_b64(_raw(label)),
        signature=_raw(label + " signature") * 2,
        fallback=fallback,
    )


def envelope_id(n: int) -> bytes:
    return _raw(f"envelope {n}")[:16]


def code_password(code_id: str) -> bytes:
    return _raw(f"password for {code_id}")


async def enrol(
    s: Store,
    user: str,
    name: str = "phone",
    *,
    keys: Sequence[StoredKey] = (),
    at: int = T0,
) -> DeviceRow:
    """Add the user if new, issue a code and activate one device with it."""
    if await s.get_user(user) is None:
        await s.add_user(user, user.title(), at)
    code_id = f"code-{user}-{name}"
    await s.add_code(code_id, user, code_password(code_id), at, at + HOUR)
    row = device_row(user, name, at=at)
    await s.add_device(row, code_id, at + MINUTE, list(keys))
    return row


async def all_inbox(s: Store, device_id: str) -> list[InboxRow]:
    return await s.fetch(device_id, 0, 10_000)


async def seqs(s: Store, device_id: str) -> list[int]:
    return [row.seq for row in await all_inbox(s, device_id)]


# --- opening and the schema -----------------------------------------------------------


def test_open_reports_schema_version_and_reopens_without_migrate(
    store: OpenStore,
) -> None:
    async def main() -> None:
        async with store() as s:
            assert await s.schema_version() == SCHEMA_VERSION
            await s.ping()
            await s.add_user("amir", "Amir", T0)
        async with store(migrate=False) as s:
            assert await s.schema_version() == SCHEMA_VERSION
            await s.ping()
            assert await s.get_user("amir") == UserRow("amir", "Amir", T0)

    arun(main())


def test_closed_store_raises_store_error(store: OpenStore) -> None:
    async def main() -> None:
        async with store() as s:
            await s.add_user("amir", "Amir", T0)
        with pytest.raises(StoreError):
            await s.ping()
        with pytest.raises(StoreError):
            await s.get_user("amir")
        with pytest.raises(StoreError):
            await s.add_user("bo", "Bo", T0)

    arun(main())


async def _set_sqlite_schema_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)"
            )
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (str(version),),
            )
    finally:
        conn.close()


async def _sqlite_tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        return {str(row[0]) for row in rows}
    finally:
        conn.close()


async def _sqlite_sql(
    path: Path, statements: list[tuple[str, tuple[Any, ...]]]
) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        with conn:
            rows: list[tuple[Any, ...]] = []
            for statement, params in statements:
                cursor = conn.execute(statement.format(blob="BLOB"), params)
                rows = [tuple(r) for r in cursor.fetchall()]
            return rows
    finally:
        conn.close()


async def _pg_sql(
    url: str, statements: list[tuple[str, tuple[Any, ...]]]
) -> list[tuple[Any, ...]]:
    conn = await _pg_connect(url)
    try:
        async with conn.transaction():
            rows: list[tuple[Any, ...]] = []
            for statement, params in statements:
                text = postgres_placeholders(statement.format(blob="BYTEA"))
                rows = [tuple(r) for r in await conn.fetch(text, *params)]
            return rows
    finally:
        await conn.close()


def _pg_schema(url: str) -> str:
    return parse_qs(urlsplit(url).query)["schema"][0]


async def _pg_connect(url: str) -> asyncpg.Connection:
    """A plain connection to the test database, searching ``url``'s schema."""
    return await asyncpg.connect(
        POSTGRES_URL, server_settings={"search_path": _pg_schema(url)}
    )


async def _set_pg_schema_version(url: str, version: int) -> None:
    conn = await _pg_connect(url)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)"
        )
        await conn.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', $1) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            str(version),
        )
    finally:
        await conn.close()


async def _pg_tables(url: str) -> set[str]:
    conn = await _pg_connect(url)
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1", _pg_schema(url)
        )
        return {str(row[0]) for row in rows}
    finally:
        await conn.close()


def test_schema_version_check(backend: Backend) -> None:
    """The version lives in ``meta.schema_version``; the raw helpers set it."""

    async def main() -> None:
        # newer than this build: refused, with or without migrate
        await backend.set_schema_version(SCHEMA_VERSION + 1)
        for migrate in (False, True):
            with pytest.raises(SchemaError) as refused:
                await backend.make().open(migrate=migrate)
            message = str(refused.value)
            assert str(SCHEMA_VERSION + 1) in message
            assert str(SCHEMA_VERSION) in message
        assert await backend.tables() == {"meta"}

        # older than this build (0: nothing migrated yet): refused unless migrate=True,
        # and the message names the command that fixes it
        await backend.set_schema_version(0)
        with pytest.raises(SchemaError, match="strongroom migrate"):
            await backend.make().open()
        assert await backend.tables() == {"meta"}  # refusing changed nothing

        s = backend.make()
        await s.open(migrate=True)
        try:
            assert await s.schema_version() == SCHEMA_VERSION
            await s.add_user("amir", "Amir", T0)
            assert await s.get_user("amir") is not None
        finally:
            await s.close()

        s = backend.make()
        await s.open()  # now current: no migrate needed
        await s.close()

    arun(main())


# --- users ----------------------------------------------------------------------------


@scenario
async def test_add_user_and_get_user(s: Store) -> None:
    added = await s.add_user("amir", "Amir Haddad", T0)
    assert added == UserRow("amir", "Amir Haddad", T0, disabled=False)
    assert await s.get_user("amir") == added
    assert await s.get_user("bo") is None


@scenario
async def test_add_user_twice_conflicts_and_keeps_the_first(s: Store) -> None:
    await s.add_user("amir", "Amir Haddad", T0)
    with pytest.raises(ConflictError):
        await s.add_user("amir", "Someone Else", T0 + MINUTE)
    assert await s.get_user("amir") == UserRow("amir", "Amir Haddad", T0)
    assert [u.user for u in await s.list_users()] == ["amir"]


@scenario
async def test_list_users_is_sorted_by_user(s: Store) -> None:
    assert await s.list_users() == []
    for i, user in enumerate(["mila", "amir", "zoe", "bo.k", "ana"]):
        await s.add_user(user, user.title(), T0 + i)
    users = await s.list_users()
    assert [u.user for u in users] == ["amir", "ana", "bo.k", "mila", "zoe"]
    assert users[0] == UserRow("amir", "Amir", T0 + 1)


# --- activation codes -----------------------------------------------------------------


@scenario
async def test_add_code_and_latest_code(s: Store) -> None:
    await s.add_user("amir", "Amir", T0)
    assert await s.latest_code("amir") is None
    assert await s.latest_code("nobody") is None
    code = await s.add_code("c1", "amir", b"\x01" * 32, T0, T0 + HOUR)
    assert code == CodeRow("c1", "amir", b"\x01" * 32, T0, T0 + HOUR, 0, "live")
    assert await s.latest_code("amir") == code


@scenario
async def test_add_code_replaces_the_earlier_live_code(s: Store) -> None:
    await s.add_user("amir", "Amir", T0)
    await s.add_user("bo", "Bo", T0)
    await s.add_code("bo-1", "bo", b"b" * 32, T0, T0 + HOUR)
    await s.add_code("c1", "amir", b"1" * 32, T0, T0 + HOUR)
    second = await s.add_code("c2", "amir", b"2" * 32, T0 + MINUTE, T0 + HOUR)

    assert await s.latest_code("amir") == second
    assert second.state == "live"
    # the first code is now 'replaced': failing it reports that, and never burns it
    first = await s.code_failed("c1", burn_after=1)
    assert (first.code_id, first.state) == ("c1", "replaced")
    # ... and it can no longer activate a device
    with pytest.raises(ConflictError):
        await s.add_device(device_row("amir"), "c1", T0 + 2 * MINUTE, [])
    assert await s.get_device(device_row("amir").device_id) is None
    # another user's code is untouched
    other = await s.latest_code("bo")
    assert other is not None
    assert (other.code_id, other.state) == ("bo-1", "live")


@scenario
async def test_latest_code_is_the_last_added_within_one_millisecond(s: Store) -> None:
    await s.add_user("amir", "Amir", T0)
    await s.add_code("c1", "amir", b"1" * 32, T0, T0 + HOUR)
    second = await s.add_code("c2", "amir", b"2" * 32, T0, T0 + HOUR)
    assert await s.latest_code("amir") == second


@scenario
async def test_add_code_for_unknown_user_is_not_found(s: Store) -> None:
    with pytest.raises(NotFoundError):
        await s.add_code("c1", "nobody", b"1" * 32, T0, T0 + HOUR)
    assert await s.latest_code("nobody") is None
    assert await s.get_user("nobody") is None


@scenario
async def test_add_code_failure_changes_nothing(s: Store) -> None:
    """Atomicity: a code id clash must not leave the user's live code 'replaced'."""
    await s.add_user("amir", "Amir", T0)
    await s.add_user("bo", "Bo", T0)
    await s.add_code("shared-id", "amir", b"a" * 32, T0, T0 + HOUR)
    bo_code = await s.add_code("bo-1", "bo", b"b" * 32, T0, T0 + HOUR)
    with pytest.raises(ConflictError):
        await s.add_code("shared-id", "bo", b"c" * 32, T0 + MINUTE, T0 + HOUR)
    assert await s.latest_code("bo") == bo_code


@scenario
async def test_code_failed_counts_and_burns_at_burn_after(s: Store) -> None:
    await s.add_user("amir", "Amir", T0)
    await s.add_code("c1", "amir", b"1" * 32, T0, T0 + HOUR)
    states = [await s.code_failed("c1", burn_after=3) for _ in range(4)]
    assert [(c.failures, c.state) for c in states] == [
        (1, "live"),
        (2, "live"),
        (3, "burned"),
        (4, "burned"),
    ]
    assert await s.latest_code("amir") == states[-1]
    with pytest.raises(ConflictError):
        await s.add_device(device_row("amir"), "c1", T0 + MINUTE, [])
    assert await s.list_devices("amir") == []


@scenario
async def test_code_failed_for_unknown_code_is_not_found(s: Store) -> None:
    with pytest.raises(NotFoundError):
        await s.code_failed("no-such-code", burn_after=3)


# --- activation sessions --------------------------------------------------------------


def session(
    session_id: str,
    expires_at: int,
    *,
    code_id: str | None = "c1",
    reason: str | None = None,
) -> ActivationRow:
    return ActivationRow(
        session_id=session_id,
        user="amir",
        code_id=code_id,
        shared=_raw(session_id),
        expires_at=expires_at,
        reason=reason,
    )


@scenario
async def test_take_activation_returns_the_session_once(s: Store) -> None:
    row = session("s-1", T0 + 5 * MINUTE)
    dead = session("s-2", T0 + 5 * MINUTE, code_id=None, reason="none")
    await s.put_activation(row)
    await s.put_activation(dead)
    assert await s.take_activation("s-1", T0 + MINUTE) == row
    assert await s.take_activation("s-1", T0 + MINUTE) is None
    assert await s.take_activation("s-2", T0 + MINUTE) == dead
    assert await s.take_activation("s-2", T0 + MINUTE) is None
    assert await s.take_activation("unknown", T0) is None


@scenario
async def test_take_activation_after_expiry_returns_none(s: Store) -> None:
    await s.put_activation(session("s-1", T0 + 5 * MINUTE))
    assert await s.take_activation("s-1", T0 + 5 * MINUTE + 1) is None
    assert await s.take_activation("s-1", T0 + 5 * MINUTE + 2) is None


@scenario
async def test_prune_forgets_expired_activation_sessions(s: Store) -> None:
    short = session("short", T0 + MINUTE)
    long = session("long", T0 + HOUR)
    await s.put_activation(short)
    await s.put_activation(long)
    await s.prune(T0 + 10 * MINUTE)
    # asking with an earlier clock proves the expired one was deleted, not just hidden
    assert await s.take_activation("short", T0) is None
    assert await s.take_activation("long", T0 + 10 * MINUTE) == long


@scenario
async def test_prune_keeps_live_data(s: Store) -> None:
    amir = await enrol(s, "amir", keys=[otk(1)])
    bo = await enrol(s, "bo")
    await s.put_activation(session("s-1", T0 + HOUR))
    await s.accept(amir.device_id, envelope_id(1), [(bo.device_id, b"hi")], T0)
    await s.prune(T0)
    assert await s.pending(bo.device_id) == 1
    assert await s.count_keys(amir.device_id) == 1
    assert await s.take_activation("s-1", T0) is not None
    # a send id from right now is not old: a retry is still recognised
    again = await s.accept(amir.device_id, envelope_id(1), [(bo.device_id, b"hi")], T0)
    assert again.duplicate
    assert await s.pending(bo.device_id) == 1


# --- devices --------------------------------------------------------------------------


@scenario
async def test_add_device_stores_it_and_uses_up_the_code(s: Store) -> None:
    await s.add_user("amir", "Amir", T0)
    await s.add_code("c1", "amir", b"1" * 32, T0, T0 + HOUR)
    phone = device_row("amir", "phone", at=T0 + MINUTE)
    await s.add_device(
        phone, "c1", T0 + MINUTE, [otk(1), otk(2), otk(3, fallback=True)]
    )

    assert await s.get_device(phone.device_id) == phone
    code = await s.latest_code("amir")
    assert code is not None
    assert (code.code_id, code.state) == ("c1", "used")
    # the count is of one-time keys; the fallback key is not one of them
    assert await s.count_keys(phone.device_id) == 2

    laptop = device_row("amir", "laptop", at=T0 + 2 * MINUTE)
    with pytest.raises(ConflictError):
        await s.add_device(laptop, "c1", T0 + 2 * MINUTE, [otk(9)])
    assert await s.get_device(laptop.device_id) is None
    assert await s.count_keys(laptop.device_id) == 0
    assert await s.list_devices("amir") == [phone]


@scenario
async def test_add_device_with_the_same_code_concurrently_adds_one(s: Store) -> None:
    await s.add_user("amir", "Amir", T0)
    await s.add_code("c1", "amir", b"1" * 32, T0, T0 + HOUR)
    rows = [device_row("amir", f"device {i}") for i in range(8)]
    outcomes = await asyncio.gather(
        *(s.add_device(row, "c1", T0 + MINUTE, []) for row in rows),
        return_exceptions=True,
    )
    assert sum(o is None for o in outcomes) == 1
    assert all(o is None or isinstance(o, ConflictError) for o in outcomes)
    assert len(await s.list_devices("amir")) == 1


@scenario
async def test_add_device_with_an_expired_code_conflicts(s: Store) -> None:
    await s.add_user("amir", "Amir", T0)
    await s.add_code("c1", "amir", b"1" * 32, T0, T0 + HOUR)
    phone = device_row("amir")
    with pytest.raises(ConflictError):
        await s.add_device(phone, "c1", T0 + HOUR + 1, [otk(1)])
    assert await s.get_device(phone.device_id) is None
    assert await s.list_devices() == []
    assert await s.count_keys(phone.device_id) == 0


@scenario
async def test_add_device_with_an_unknown_code_conflicts(s: Store) -> None:
    await s.add_user("amir", "Amir", T0)
    with pytest.raises(ConflictError):
        await s.add_device(device_row("amir"), "no-such-code", T0, [])
    assert await s.list_devices() == []


@scenario
async def test_add_existing_device_conflicts_and_leaves_the_code_live(s: Store) -> None:
    phone = await enrol(s, "amir", "phone")
    await s.add_code("c2", "amir", b"2" * 32, T0 + MINUTE, T0 + HOUR)
    again = device_row("amir", "phone", at=T0 + 2 * MINUTE)
    with pytest.raises(ConflictError):
        await s.add_device(again, "c2", T0 + 2 * MINUTE, [])
    assert await s.get_device(phone.device_id) == phone
    code = await s.latest_code("amir")
    assert code is not None
    assert (code.code_id, code.state) == ("c2", "live")  # atomic: not used up
    laptop = device_row("amir", "laptop", at=T0 + 3 * MINUTE)
    await s.add_device(laptop, "c2", T0 + 3 * MINUTE, [])
    assert await s.get_device(laptop.device_id) == laptop


@scenario
async def test_get_and_list_devices(s: Store) -> None:
    assert await s.list_devices() == []
    phone = await enrol(s, "amir", "phone", at=T0)
    laptop = await enrol(s, "amir", "laptop", at=T0 + MINUTE)
    tablet = await enrol(s, "bo", "tablet", at=T0 + 2 * MINUTE)

    assert await s.get_device(phone.device_id) == phone
    assert await s.get_device("aaaaaaaaaaaaaaaa") is None

    def by_id(rows: list[DeviceRow]) -> list[DeviceRow]:
        return sorted(rows, key=lambda r: r.device_id)

    assert by_id(await s.list_devices()) == by_id([phone, laptop, tablet])
    assert by_id(await s.list_devices("amir")) == by_id([phone, laptop])
    assert await s.list_devices("bo") == [tablet]
    assert await s.list_devices("nobody") == []


@scenario
async def test_revoke_device(s: Store) -> None:
    amir = await enrol(s, "amir", keys=[otk(1), otk(2, fallback=True)])
    phone = await enrol(s, "bo", "phone", keys=[otk(1), otk(2, fallback=True)])
    laptop = await enrol(s, "bo", "laptop", keys=[otk(1)])
    copies = [(phone.device_id, b"to phone"), (laptop.device_id, b"to laptop")]
    await s.accept(amir.device_id, envelope_id(1), copies, T0 + HOUR)

    revoked = await s.revoke_device(phone.device_id, b"revocation 1", T0 + 2 * HOUR)
    expected = msgspec.structs.replace(
        phone, revoked_at=T0 + 2 * HOUR, revocation=b"revocation 1"
    )
    assert revoked == expected
    assert await s.get_device(phone.device_id) == expected
    # its inbox and keys (the fallback too) are gone
    assert await s.pending(phone.device_id) == 0
    assert await all_inbox(s, phone.device_id) == []
    assert await s.count_keys(phone.device_id) == 0
    assert await s.claim_key(phone.device_id) is None
    # the user's other device is untouched
    assert await s.pending(laptop.device_id) == 1
    assert await s.count_keys(laptop.device_id) == 1
    assert await s.get_device(laptop.device_id) == laptop

    # revoking twice keeps the first revocation
    twice = await s.revoke_device(phone.device_id, b"revocation 2", T0 + 3 * HOUR)
    assert twice == expected
    assert await s.get_device(phone.device_id) == expected


@scenario
async def test_revoke_unknown_device_is_not_found(s: Store) -> None:
    with pytest.raises(NotFoundError):
        await s.revoke_device("aaaaaaaaaaaaaaaa", b"revocation", T0)


@scenario
async def test_touch_device_records_last_seen_and_client_version(s: Store) -> None:
    phone = await enrol(s, "amir")
    other = await enrol(s, "bo")
    assert phone.last_seen is None
    await s.touch_device(phone.device_id, T0 + HOUR, "strongroom/0.2.0")
    assert await s.get_device(phone.device_id) == msgspec.structs.replace(
        phone, last_seen=T0 + HOUR, client_version="strongroom/0.2.0"
    )
    await s.touch_device(phone.device_id, T0 + 2 * HOUR, "strongroom/0.3.0")
    assert await s.get_device(phone.device_id) == msgspec.structs.replace(
        phone, last_seen=T0 + 2 * HOUR, client_version="strongroom/0.3.0"
    )
    assert await s.get_device(other.device_id) == other


# --- one-time keys --------------------------------------------------------------------


@scenario
async def test_add_keys_and_count_keys(s: Store) -> None:
    phone = await enrol(s, "amir")
    assert await s.count_keys(phone.device_id) == 0
    assert await s.add_keys(phone.device_id, [otk(1), otk(2), otk(3)]) == 3
    assert await s.add_keys(phone.device_id, [otk(4), otk(5, fallback=True)]) == 4
    assert await s.count_keys(phone.device_id) == 4
    assert await s.count_keys("aaaaaaaaaaaaaaaa") == 0


@scenario
async def test_claim_key_gives_each_one_time_key_once_then_the_fallback(
    s: Store,
) -> None:
    phone = await enrol(s, "amir")
    other = await enrol(s, "bo", keys=[otk(1), otk(2, fallback=True)])
    assert await s.claim_key(phone.device_id) is None
    keys = [otk(1), otk(2), otk(3)]
    fallback = otk(4, fallback=True)
    await s.add_keys(phone.device_id, [*keys, fallback])

    claimed = [await s.claim_key(phone.device_id) for _ in keys]
    assert sorted(claimed, key=repr) == sorted(keys, key=repr)
    assert await s.count_keys(phone.device_id) == 0
    for _ in range(3):  # the fallback is handed out again and again, never removed
        assert await s.claim_key(phone.device_id) == fallback
    assert await s.count_keys(phone.device_id) == 0
    # another device's keys are its own
    assert await s.count_keys(other.device_id) == 1
    assert await s.claim_key(other.device_id) == otk(1)


@scenario
async def test_claim_key_for_unknown_device_is_none(s: Store) -> None:
    assert await s.claim_key("aaaaaaaaaaaaaaaa") is None


@scenario
async def test_a_new_fallback_key_replaces_the_old_one(s: Store) -> None:
    phone = await enrol(s, "amir", keys=[otk(1, fallback=True)])
    assert await s.claim_key(phone.device_id) == otk(1, fallback=True)
    await s.add_keys(phone.device_id, [otk(2, fallback=True)])
    assert await s.claim_key(phone.device_id) == otk(2, fallback=True)
    # one-time keys alone leave the fallback in place
    await s.add_keys(phone.device_id, [otk(3)])
    assert await s.claim_key(phone.device_id) == otk(3)
    assert await s.claim_key(phone.device_id) == otk(2, fallback=True)
    assert await s.claim_key(phone.device_id) == otk(2, fallback=True)


# --- envelopes ------------------------------------------------------------------------


@scenario
async def test_accept_stores_one_copy_per_device(s: Store) -> None:
    amir = await enrol(s, "amir")
    phone = await enrol(s, "bo", "phone")
    laptop = await enrol(s, "bo", "laptop")
    copies = [
        (phone.device_id, b"sealed for phone"),
        (laptop.device_id, b"sealed for laptop"),
    ]
    result = await s.accept(amir.device_id, envelope_id(1), copies, T0 + HOUR)
    assert sorted(result.delivered_to) == sorted([phone.device_id, laptop.device_id])
    assert result.skipped == []
    assert not result.duplicate
    for device_id, body in copies:
        assert await all_inbox(s, device_id) == [
            InboxRow(1, envelope_id(1), amir.device_id, T0 + HOUR, body)
        ]
    assert await all_inbox(s, amir.device_id) == []


@scenario
async def test_seq_starts_at_one_and_increases_by_one_per_device(s: Store) -> None:
    amir = await enrol(s, "amir")
    phone = await enrol(s, "bo", "phone")
    laptop = await enrol(s, "bo", "laptop")
    for n in range(1, 6):
        copies = [(phone.device_id, b"p%d" % n)]
        if n % 2 == 0:
            copies.append((laptop.device_id, b"l%d" % n))
        await s.accept(amir.device_id, envelope_id(n), copies, T0 + n)
    got = await all_inbox(s, phone.device_id)
    assert [(r.seq, r.envelope_id, r.body) for r in got] == [
        (n, envelope_id(n), b"p%d" % n) for n in range(1, 6)
    ]
    got = await all_inbox(s, laptop.device_id)
    assert [(r.seq, r.envelope_id, r.body) for r in got] == [
        (1, envelope_id(2), b"l2"),
        (2, envelope_id(4), b"l4"),
    ]


@scenario
async def test_accept_skips_unknown_and_revoked_devices(s: Store) -> None:
    amir = await enrol(s, "amir")
    phone = await enrol(s, "bo", "phone")
    lost = await enrol(s, "bo", "lost")
    await s.revoke_device(lost.device_id, b"revocation", T0 + HOUR)
    unknown = "zzzzzzzzzzzzzzzz"
    copies = [
        (unknown, b"x"),
        (phone.device_id, b"to phone"),
        (lost.device_id, b"to lost"),
    ]
    result = await s.accept(amir.device_id, envelope_id(1), copies, T0 + 2 * HOUR)
    assert result.delivered_to == [phone.device_id]
    assert sorted(result.skipped) == sorted([unknown, lost.device_id])
    assert not result.duplicate
    assert await seqs(s, phone.device_id) == [1]
    assert await all_inbox(s, lost.device_id) == []
    assert await s.pending(lost.device_id) == 0
    assert await all_inbox(s, unknown) == []
    # a device that appears later starts at 1: skipping consumed nothing
    late = device_row("bo", "later")
    await s.add_code("c-late", "bo", b"l" * 32, T0, T0 + 3 * HOUR)
    await s.add_device(late, "c-late", T0 + 2 * HOUR, [])
    await s.accept(amir.device_id, envelope_id(2), [(late.device_id, b"hi")], T0)
    assert await seqs(s, late.device_id) == [1]


@scenario
async def test_accept_with_only_unknown_devices_stores_nothing(s: Store) -> None:
    amir = await enrol(s, "amir")
    result = await s.accept(
        amir.device_id, envelope_id(1), [("zzzzzzzzzzzzzzzz", b"x")], T0
    )
    assert result.delivered_to == []
    assert result.skipped == ["zzzzzzzzzzzzzzzz"]
    assert not result.duplicate


@scenario
async def test_accept_is_idempotent_per_sender_and_envelope_id(s: Store) -> None:
    amir = await enrol(s, "amir")
    cleo = await enrol(s, "cleo")
    bo = await enrol(s, "bo")
    first = await s.accept(amir.device_id, envelope_id(1), [(bo.device_id, b"v1")], T0)
    assert first.delivered_to == [bo.device_id]

    repeat = await s.accept(
        amir.device_id,
        envelope_id(1),
        [(bo.device_id, b"v2"), (cleo.device_id, b"v2")],
        T0 + MINUTE,
    )
    assert repeat.duplicate
    assert (repeat.delivered_to, repeat.skipped) == ([], [])
    assert await all_inbox(s, bo.device_id) == [
        InboxRow(1, envelope_id(1), amir.device_id, T0, b"v1")
    ]
    assert await s.pending(cleo.device_id) == 0

    # the same envelope id from another sender is a different envelope
    other = await s.accept(cleo.device_id, envelope_id(1), [(bo.device_id, b"c")], T0)
    assert not other.duplicate
    assert other.delivered_to == [bo.device_id]
    # and the duplicate consumed no seq
    assert await seqs(s, bo.device_id) == [1, 2]


@scenario
async def test_concurrent_repeats_store_the_envelope_once(s: Store) -> None:
    amir = await enrol(s, "amir")
    bo = await enrol(s, "bo")
    results = await asyncio.gather(
        *(
            s.accept(amir.device_id, envelope_id(1), [(bo.device_id, b"x")], T0)
            for _ in range(10)
        )
    )
    assert sum(not r.duplicate for r in results) == 1
    assert await seqs(s, bo.device_id) == [1]


@scenario
async def test_fetch_after_and_limit_in_seq_order(s: Store) -> None:
    amir = await enrol(s, "amir")
    bo = await enrol(s, "bo")
    for n in range(1, 11):
        await s.accept(amir.device_id, envelope_id(n), [(bo.device_id, b"%d" % n)], T0)
    assert [r.seq for r in await s.fetch(bo.device_id, 0, 3)] == [1, 2, 3]
    page = await s.fetch(bo.device_id, 3, 3)
    assert [(r.seq, r.envelope_id, r.body) for r in page] == [
        (n, envelope_id(n), b"%d" % n) for n in (4, 5, 6)
    ]
    assert [r.seq for r in await s.fetch(bo.device_id, 8, 100)] == [9, 10]
    assert await s.fetch(bo.device_id, 10, 100) == []
    assert await s.fetch(amir.device_id, 0, 100) == []
    assert await s.fetch("zzzzzzzzzzzzzzzz", 0, 100) == []


@scenario
async def test_pending_counts_waiting_envelopes(s: Store) -> None:
    amir = await enrol(s, "amir")
    phone = await enrol(s, "bo", "phone")
    laptop = await enrol(s, "bo", "laptop")
    assert await s.pending(phone.device_id) == 0
    for n in range(1, 4):
        await s.accept(amir.device_id, envelope_id(n), [(phone.device_id, b"p")], T0)
    await s.accept(amir.device_id, envelope_id(9), [(laptop.device_id, b"l")], T0)
    assert await s.pending(phone.device_id) == 3
    assert await s.pending(laptop.device_id) == 1
    assert await s.pending(amir.device_id) == 0
    assert await s.pending("zzzzzzzzzzzzzzzz") == 0


@scenario
async def test_ack_deletes_up_to_and_including_upto(s: Store) -> None:
    amir = await enrol(s, "amir")
    bo = await enrol(s, "bo")
    cleo = await enrol(s, "cleo")
    for n in range(1, 11):
        copies = [(bo.device_id, b"b"), (cleo.device_id, b"c")]
        await s.accept(amir.device_id, envelope_id(n), copies, T0)
    await s.ack(bo.device_id, 4)
    assert await seqs(s, bo.device_id) == [5, 6, 7, 8, 9, 10]
    assert await s.pending(bo.device_id) == 6
    await s.ack(bo.device_id, 2)  # already gone: nothing happens
    assert await s.pending(bo.device_id) == 6
    assert await s.pending(cleo.device_id) == 10  # other devices are untouched
    await s.ack(bo.device_id, 10)
    assert await s.pending(bo.device_id) == 0
    assert await all_inbox(s, bo.device_id) == []


def test_seq_is_never_reused_after_ack(store: OpenStore) -> None:
    async def main() -> None:
        async with store() as s:
            amir = await enrol(s, "amir")
            bo = await enrol(s, "bo")
            for n in range(1, 4):
                await s.accept(
                    amir.device_id, envelope_id(n), [(bo.device_id, b"x")], T0
                )
            await s.ack(bo.device_id, 3)
            assert await s.pending(bo.device_id) == 0
            await s.accept(amir.device_id, envelope_id(4), [(bo.device_id, b"x")], T0)
            assert await seqs(s, bo.device_id) == [4]
            await s.ack(bo.device_id, 4)
        # not even by a new store object on the same database
        async with store() as s:
            await s.accept(amir.device_id, envelope_id(5), [(bo.device_id, b"x")], T0)
            assert await seqs(s, bo.device_id) == [5]

    arun(main())


@scenario
async def test_group_commit_200_concurrent_accepts(s: Store) -> None:
    amir = await enrol(s, "amir")
    devices = [await enrol(s, "bo", f"device {i}") for i in range(4)]
    ids = [d.device_id for d in devices]

    def recipients(n: int) -> list[str]:
        """Envelope n goes to device i when (i + 1) divides n: overlapping subsets."""
        return [d for i, d in enumerate(ids) if n % (i + 1) == 0]

    def body(n: int, device_id: str) -> bytes:
        return b"envelope %d sealed for %s" % (n, device_id.encode())

    commits, writes = s.group_commits()
    results = await asyncio.gather(
        *(
            s.accept(
                amir.device_id,
                envelope_id(n),
                [(d, body(n, d)) for d in recipients(n)],
                T0 + n,
            )
            for n in range(200)
        )
    )
    for n, result in enumerate(results):
        assert not result.duplicate
        assert sorted(result.delivered_to) == sorted(recipients(n))
        assert result.skipped == []
    # ... in a few transactions, not 200 (SQLite: one; PostgreSQL: a few, two at once)
    more_commits, more_writes = s.group_commits()
    assert more_writes - writes == 200
    assert 1 <= more_commits - commits <= 10

    orders: list[list[bytes]] = []
    for device_id in ids:
        inbox = await all_inbox(s, device_id)
        expected = {
            envelope_id(n): body(n, device_id)
            for n in range(200)
            if device_id in recipients(n)
        }
        # distinct, contiguous seqs from 1, one per envelope, each with its own body
        assert [r.seq for r in inbox] == list(range(1, len(expected) + 1))
        assert {r.envelope_id: r.body for r in inbox} == expected
        assert all(r.sender == amir.device_id for r in inbox)
        assert await s.pending(device_id) == len(expected)
        orders.append([r.envelope_id for r in inbox])
    # seq order is commit order, so any two devices see shared envelopes in one order
    for order in orders[1:]:
        shared = set(order)
        assert [e for e in orders[0] if e in shared] == order


def test_a_failing_write_does_not_fail_concurrent_writes(store: OpenStore) -> None:
    async def main() -> None:
        async with store() as s:
            amir = await enrol(s, "amir")
            bo = await enrol(s, "bo")
            await s.add_code("c-spent", "bo", b"s" * 32, T0, T0 + HOUR)
            await s.add_device(device_row("bo", "old"), "c-spent", T0, [])

            def send(n: int) -> Awaitable[object]:
                return s.accept(
                    amir.device_id, envelope_id(n), [(bo.device_id, b"m")], T0
                )

            # each write with the error it must fail with, or None for success
            writes: list[tuple[Awaitable[object], Failure]] = [
                *((s.add_user(f"user{n:03d}", "New", T0), None) for n in range(20)),
                (send(1), None),
                (s.add_user("amir", "Duplicate", T0), ConflictError),
                (send(2), None),
                (s.add_code("c-x", "nobody", b"x" * 32, T0, T0 + HOUR), NotFoundError),
                (send(3), None),
                (
                    s.add_device(device_row("bo", "new"), "c-spent", T0, []),
                    ConflictError,
                ),
                *((s.add_user(f"user{n:03d}", "New", T0), None) for n in range(20, 40)),
                (send(4), None),
            ]
            outcomes = await asyncio.gather(
                *(write for write, _ in writes), return_exceptions=True
            )
            got = [type(o) if isinstance(o, BaseException) else None for o in outcomes]
            assert got == [expected for _, expected in writes]
            await check(s, bo.device_id)

        async with store() as s:  # and what succeeded was committed
            await check(s, bo.device_id)

    async def check(s: Store, bo_device: str) -> None:
        users = {u.user: u for u in await s.list_users()}
        assert len(users) == 2 + 40
        assert users["amir"].name == "Amir"
        assert await seqs(s, bo_device) == [1, 2, 3, 4]
        assert await s.latest_code("nobody") is None
        assert await s.get_device(device_row("bo", "new").device_id) is None

    arun(main())


def test_accepted_envelope_survives_reopening(store: OpenStore) -> None:
    async def main() -> None:
        async with store() as s:
            amir = await enrol(s, "amir")
            bo = await enrol(s, "bo")
            result = await s.accept(
                amir.device_id, envelope_id(1), [(bo.device_id, b"sealed")], T0 + HOUR
            )
            assert result.delivered_to == [bo.device_id]
        async with store() as s:
            assert await all_inbox(s, bo.device_id) == [
                InboxRow(1, envelope_id(1), amir.device_id, T0 + HOUR, b"sealed")
            ]
            # the send id survived too: a retry after a restart is still a duplicate
            again = await s.accept(
                amir.device_id, envelope_id(1), [(bo.device_id, b"sealed")], T0 + HOUR
            )
            assert again.duplicate
            assert await s.pending(bo.device_id) == 1

    arun(main())


# --- PostgreSQL only ------------------------------------------------------------------
#
# What only a shared database server has: connections that die under the store, several
# server nodes on one schema, a schema named in the URL.


def _pg_url_with_name(url: str) -> tuple[str, str]:
    """``url`` with an application name of its own, so a test can find its connections."""
    name = f"sr_test_{secrets.token_hex(6)}"
    return f"{url}{'&' if '?' in url else '?'}application_name={name}", name


async def _terminate(application_name: str) -> int:
    """Kill every connection of that name, as a DBA or a failover would; wait for it."""
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        killed = await conn.fetch(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND application_name = $1",
            application_name,
        )
    finally:
        await conn.close()
    assert all(row[0] for row in killed)
    return len(killed)


async def _until_waiting_for_a_lock(application_name: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        for _ in range(200):
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = $1 AND wait_event_type = 'Lock'",
                application_name,
            )
            if waiting:
                return
            await asyncio.sleep(0.01)
    finally:
        await conn.close()
    raise AssertionError(f"no connection of {application_name} waits for a lock")


async def _until_ok(op: Callable[[], Awaitable[T]], tries: int = 20) -> T:
    """What a caller of the store does after a ``StoreError``: try again, a bit later."""
    for _ in range(tries - 1):
        try:
            return await op()
        except StoreError:
            await asyncio.sleep(0.05)
    return await op()


def test_postgres_recovers_after_its_connections_are_killed() -> None:
    with postgres_schema() as base:
        url, name = _pg_url_with_name(base)

        async def main() -> None:
            s = PostgresStore(url)
            await s.open(migrate=True)
            try:
                amir = await enrol(s, "amir")
                bo = await enrol(s, "bo")

                def send(n: int) -> Awaitable[AcceptResult]:
                    return s.accept(
                        amir.device_id, envelope_id(n), [(bo.device_id, b"%d" % n)], T0
                    )

                for n in range(1, 11):
                    await send(n)
                assert await _terminate(name) >= 2  # the pool keeps two open
                await _until_ok(s.ping)
                assert await seqs(s, bo.device_id) == list(range(1, 11))

                # again, while a batch of writes is in flight: another session holds
                # bo's counter row, so the batch is stuck in its first statement when
                # its connection dies.  Its callers get a StoreError (never an asyncpg
                # one) and retry; accept is idempotent, so the retry finishes the job.
                blocker = await _pg_connect(base)
                try:
                    hold = blocker.transaction()
                    await hold.start()
                    await blocker.execute(
                        "SELECT 1 FROM device_seqs WHERE device_id=$1 FOR UPDATE",
                        bo.device_id,
                    )
                    writes = asyncio.gather(
                        *(send(n) for n in range(11, 51)), return_exceptions=True
                    )
                    await _until_waiting_for_a_lock(name)
                    await _terminate(name)
                    await hold.rollback()
                finally:
                    await blocker.close()
                outcomes = await writes
                failed = [
                    (n, outcome)
                    for n, outcome in zip(range(11, 51), outcomes, strict=True)
                    if isinstance(outcome, BaseException)
                ]
                assert failed  # the batch in flight was lost, and said so
                for n, error in failed:
                    assert isinstance(error, StoreError), repr(error)
                    assert "unreachable" in str(error)
                    await _until_ok(functools.partial(send, n))
                await _until_ok(s.ping)

                # nothing committed was lost, and nothing was stored twice
                inbox = await all_inbox(s, bo.device_id)
                assert [(r.seq, r.body) for r in inbox] == [
                    (n, b"%d" % n) for n in range(1, 51)
                ]
                result = await send(51)
                assert result.delivered_to == [bo.device_id]
                await s.ack(bo.device_id, 51)
                assert await s.pending(bo.device_id) == 0
            finally:
                await s.close()

        arun(main())


def test_postgres_two_nodes_on_one_schema_keep_seqs_gap_free() -> None:
    """Two store objects are two server nodes: their batches interleave per device."""
    with postgres_schema() as url:

        async def main() -> None:
            a, b = PostgresStore(url), PostgresStore(url)
            await a.open(migrate=True)
            await b.open()
            try:
                amir = await enrol(a, "amir")
                ids = [(await enrol(a, "bo", f"d{i}")).device_id for i in range(4)]

                # Node a sends envelope n to device n % 4, walking the devices up from
                # d0; node b walks them down from d2.  Their concurrent batches reach
                # the same devices in crossing orders (rule 3: still no deadlock).
                # Both nodes also send envelopes 200..209 to every device (a client
                # that retried via another node): each must be stored once.
                def recipients(n: int) -> list[str]:
                    if n >= 200:
                        return ids
                    return [ids[n % 4] if n < 100 else ids[(2 - n) % 4]]

                def body(n: int, device_id: str) -> bytes:
                    return b"%d for %s" % (n, device_id.encode())

                def send(node: Store, n: int) -> Awaitable[AcceptResult]:
                    copies = [(d, body(n, d)) for d in recipients(n)]
                    return node.accept(amir.device_id, envelope_id(n), copies, T0)

                sent = [*range(80), *range(100, 180), *range(200, 210)]
                results = await asyncio.gather(
                    *(send(a, n) for n in range(80)),
                    *(send(b, n) for n in range(100, 180)),
                    *(send(a, n) for n in range(200, 210)),
                    *(send(b, n) for n in range(200, 210)),
                )
                assert sum(r.duplicate for r in results) == 10
                for n, r in zip(sent, results, strict=False):
                    assert r.duplicate or sorted(r.delivered_to) == sorted(
                        recipients(n)
                    )

                orders: list[list[bytes]] = []
                for device_id in ids:
                    expected = {
                        envelope_id(n): body(n, device_id)
                        for n in sent
                        if device_id in recipients(n)
                    }
                    for node in (a, b):
                        inbox = await all_inbox(node, device_id)
                        assert [r.seq for r in inbox] == list(
                            range(1, len(expected) + 1)
                        )
                        assert {r.envelope_id: r.body for r in inbox} == expected
                    orders.append([r.envelope_id for r in inbox])
                # seq order is commit order: two devices see shared envelopes in one order
                for order in orders[1:]:
                    shared = set(order) & set(orders[0])
                    assert [e for e in orders[0] if e in shared] == [
                        e for e in order if e in shared
                    ]
            finally:
                await a.close()
                await b.close()

        arun(main())


def test_postgres_nodes_starting_together_migrate_once() -> None:
    with postgres_schema() as url:

        async def main() -> None:
            nodes = [PostgresStore(url) for _ in range(3)]
            await asyncio.gather(*(node.open(migrate=True) for node in nodes))
            try:
                assert [await n.schema_version() for n in nodes] == [SCHEMA_VERSION] * 3
                await nodes[0].add_user("amir", "Amir", T0)
                assert await nodes[2].get_user("amir") == UserRow("amir", "Amir", T0)
            finally:
                for node in nodes:
                    await node.close()

        arun(main())


def test_postgres_migrate_creates_the_schema_and_only_with_migrate() -> None:
    with postgres_schema() as url:

        async def main() -> None:
            conn = await asyncpg.connect(POSTGRES_URL)
            try:
                await conn.execute(f"DROP SCHEMA {_pg_schema(url)}")

                async def exists() -> bool:
                    found = await conn.fetchval(
                        "SELECT 1 FROM pg_namespace WHERE nspname = $1", _pg_schema(url)
                    )
                    return found is not None

                with pytest.raises(SchemaError, match="strongroom migrate"):
                    await PostgresStore(url).open()
                assert not await exists()

                s = PostgresStore(url)
                await s.open(migrate=True)
                try:
                    assert await exists()
                    await s.add_user("amir", "Amir", T0)
                finally:
                    await s.close()
                assert await _pg_tables(url) >= {"meta", "users", "inbox"}
            finally:
                await conn.close()

        arun(main())


@pytest.mark.parametrize(
    "schema",
    ["", "Upper", "1st", "has-dash", "a;drop table users", "x" * 64, "pg_catalog"],
)
def test_postgres_bad_schema_name_is_a_config_error(schema: str) -> None:
    url = f"postgresql://postgres@127.0.0.1:5432/test?schema={schema}"
    with pytest.raises(ConfigError, match="schema"):
        PostgresStore(url)
    with pytest.raises(ConfigError, match="schema"):
        store_from_url(url, Path("."))


def test_postgres_urls_build_a_postgres_store(tmp_path: Path) -> None:
    for url in (
        "postgresql://postgres@127.0.0.1:5432/test?schema=sr_main",
        "postgres://postgres@127.0.0.1/test",
        "postgresql://postgres@127.0.0.1/test?schema=a&schema=b",
    ):
        if url.count("schema=") > 1:
            with pytest.raises(ConfigError, match="more than one schema"):
                store_from_url(url, tmp_path)
        else:
            assert isinstance(store_from_url(url, tmp_path), PostgresStore)
    with pytest.raises(ConfigError) as refused:
        store_from_url("mysql://root:hunter2@db/x", tmp_path)
    assert "hunter2" not in str(refused.value)


def test_postgres_unreachable_database_is_a_store_error() -> None:
    async def main() -> None:
        # port 1: nothing listens there, so the connection is refused at once
        s = PostgresStore("postgresql://postgres:hunter2@127.0.0.1:1/test")
        with pytest.raises(StoreError, match="unreachable") as refused:
            await s.open()
        assert "hunter2" not in str(refused.value)
        with pytest.raises(StoreError, match="not open"):
            await s.ping()

    arun(main())


# --- group messages: one body, many inboxes -------------------------------------------


async def _members(s: Store, n: int) -> list[DeviceRow]:
    return [await enrol(s, f"member{i:03d}") for i in range(n)]


def test_a_group_message_to_200_devices_is_stored_once(
    store: OpenStore, backend: Backend
) -> None:
    async def main() -> None:
        async with store() as s:
            sender = await enrol(s, "amir")
            members = await _members(s, 200)
            body = secrets.token_bytes(4096)
            result = await s.accept_shared(
                sender.device_id,
                envelope_id(1),
                [m.device_id for m in members],
                body,
                T0 + HOUR,
            )
            assert sorted(result.delivered_to) == sorted(m.device_id for m in members)
            for member in (members[0], members[199]):
                assert await all_inbox(s, member.device_id) == [
                    InboxRow(
                        1,
                        envelope_id(1),
                        sender.device_id,
                        T0 + HOUR,
                        body,
                        shared=True,
                    )
                ]
        stored = await backend.sql(
            [("SELECT COUNT(*) FROM shared_bodies", ())],
        )
        per_device = await backend.sql(
            [("SELECT COUNT(*) FROM inbox WHERE body IS NOT NULL", ())]
        )
        rows = await backend.sql([("SELECT COUNT(*) FROM inbox", ())])
        assert (stored[0][0], per_device[0][0], rows[0][0]) == (1, 0, 200)

    arun(main())


@scenario
async def test_shared_and_own_copies_share_one_sequence(s: Store) -> None:
    amir = await enrol(s, "amir")
    bo = await enrol(s, "bo")
    await s.accept(amir.device_id, envelope_id(1), [(bo.device_id, b"olm")], T0)
    await s.accept_shared(amir.device_id, envelope_id(2), [bo.device_id], b"mg", T0)
    await s.accept(amir.device_id, envelope_id(3), [(bo.device_id, b"olm 2")], T0)
    assert [(r.seq, r.body, r.shared) for r in await all_inbox(s, bo.device_id)] == [
        (1, b"olm", False),
        (2, b"mg", True),
        (3, b"olm 2", False),
    ]


@scenario
async def test_accept_shared_is_idempotent_and_skips_unknown_devices(
    s: Store,
) -> None:
    amir = await enrol(s, "amir")
    bo = await enrol(s, "bo")
    first = await s.accept_shared(
        amir.device_id, envelope_id(1), [bo.device_id, "nosuchdevice0000"], b"x", T0
    )
    assert first.delivered_to == [bo.device_id]
    assert first.skipped == ["nosuchdevice0000"]
    again = await s.accept_shared(
        amir.device_id, envelope_id(1), [bo.device_id], b"x", T0
    )
    assert again.duplicate and again.delivered_to == []
    assert await seqs(s, bo.device_id) == [1]
    nobody = await s.accept_shared(
        amir.device_id, envelope_id(2), ["nosuchdevice0000"], b"y", T0
    )
    assert nobody.delivered_to == [] and nobody.skipped == ["nosuchdevice0000"]


def test_prune_collects_shared_bodies_nobody_waits_for(
    store: OpenStore, backend: Backend
) -> None:
    async def shared_count() -> int:
        rows = await backend.sql([("SELECT COUNT(*) FROM shared_bodies", ())])
        return int(rows[0][0])

    async def main() -> None:
        async with store() as s:
            amir = await enrol(s, "amir")
            bo, cy = await enrol(s, "bo"), await enrol(s, "cy")
            devices = [bo.device_id, cy.device_id]
            await s.accept_shared(amir.device_id, envelope_id(1), devices, b"a", T0)
            await s.accept_shared(amir.device_id, envelope_id(2), devices, b"b", T0)
            await s.ack(bo.device_id, 2)
            await s.ack(cy.device_id, 1)
            await s.prune(T0 + HOUR)
            assert await shared_count() == 1  # cy still waits for the second
            assert [r.body for r in await all_inbox(s, cy.device_id)] == [b"b"]
            await s.ack(cy.device_id, 2)
            await s.prune(T0 + 10)  # too recent: it may be being stored right now
            assert await shared_count() == 1
            await s.prune(T0 + HOUR)
            assert await shared_count() == 0

    arun(main())


@scenario
async def test_prune_drops_expired_envelopes_only(s: Store) -> None:
    amir = await enrol(s, "amir")
    bo = await enrol(s, "bo")
    await s.accept(
        amir.device_id, envelope_id(1), [(bo.device_id, b"1")], T0, expires_at=T0 + 5
    )
    await s.accept_shared(
        amir.device_id, envelope_id(2), [bo.device_id], b"2", T0, expires_at=T0 + 50
    )
    await s.accept(amir.device_id, envelope_id(3), [(bo.device_id, b"3")], T0)
    assert await s.inbox_depth() == 3
    await s.prune(T0 + 10)
    assert [r.body for r in await all_inbox(s, bo.device_id)] == [b"2", b"3"]
    await s.prune(T0 + 100)
    assert [r.body for r in await all_inbox(s, bo.device_id)] == [b"3"]
    assert await s.pending(bo.device_id) == 1
    assert await s.inbox_depth() == 1


# --- group chains -----------------------------------------------------------------------


def _entry(group: str, seq: int) -> tuple[bytes, bytes]:
    entry = _raw(f"{group} entry {seq}") * 3
    return entry, hashlib.sha256(entry).digest()


async def _append(s: Store, group: str, seq: int, prev: bytes) -> bytes:
    entry, digest = _entry(group, seq)
    await s.append_group_change(group, seq, prev, entry, digest, T0 + seq)
    return digest


@scenario
async def test_group_changes_append_in_order_and_read_back(s: Store) -> None:
    head = await _append(s, "g1", 0, bytes(32))
    for seq in range(1, 5):
        head = await _append(s, "g1", seq, head)
    await _append(s, "g2", 0, bytes(32))
    rows = await s.group_changes("g1", -1, 100)
    assert [r.seq for r in rows] == [0, 1, 2, 3, 4]
    assert rows[2] == GroupChangeRow(2, *_entry("g1", 2), T0 + 2)
    assert [r.seq for r in await s.group_changes("g1", 2, 100)] == [3, 4]
    assert [r.seq for r in await s.group_changes("g1", 0, 2)] == [1, 2]
    assert [r.seq for r in await s.group_changes("g2", -1, 100)] == [0]
    assert await s.group_changes("nosuchgroup", -1, 100) == []


@scenario
async def test_group_change_must_extend_the_head(s: Store) -> None:
    head = await _append(s, "g1", 0, bytes(32))
    with pytest.raises(ConflictError, match="is at entry 0"):
        await _append(s, "g1", 0, bytes(32))  # a second creation
    with pytest.raises(ConflictError, match="is at entry 0"):
        await _append(s, "g1", 2, head)  # a gap
    with pytest.raises(ConflictError, match="is at entry 0"):
        await _append(s, "g1", 1, _raw("another head"))  # a fork
    with pytest.raises(ConflictError, match="does not exist"):
        await _append(s, "g9", 3, head)
    await _append(s, "g1", 1, head)
    assert [r.seq for r in await s.group_changes("g1", -1, 100)] == [0, 1]


@scenario
async def test_concurrent_appends_at_one_seq_keep_one(s: Store) -> None:
    head = await _append(s, "g1", 0, bytes(32))
    entries = [(_raw(f"rival {i}") * 3, _raw(f"rival hash {i}")) for i in range(8)]
    outcomes = await asyncio.gather(
        *(s.append_group_change("g1", 1, head, e, h, T0) for e, h in entries),
        return_exceptions=True,
    )
    assert sum(o is None for o in outcomes) == 1
    assert all(isinstance(o, ConflictError) for o in outcomes if o is not None)
    (row,) = await s.group_changes("g1", 0, 100)
    assert (row.entry, row.hash) in entries


# --- attachments: blob metadata, references, collection ------------------------------


def blob_id(n: int) -> str:
    return base64.b32encode(_raw(f"blob {n}")[:16]).decode().lower().rstrip("=")


async def uploaded(s: Store, owner: DeviceRow, n: int, size: int = 100) -> str:
    """A complete blob of ``owner``, finished at T0."""
    await s.create_blob(blob_id(n), owner.device_id, size, T0 - MINUTE)
    await s.blob_progress(blob_id(n), 0, size, T0)
    return blob_id(n)


async def blob_count(backend: Backend) -> tuple[int, int]:
    blobs = await backend.sql([("SELECT COUNT(*) FROM blobs", ())])
    refs = await backend.sql([("SELECT COUNT(*) FROM blob_refs", ())])
    return int(blobs[0][0]), int(refs[0][0])


@scenario
async def test_create_and_get_blob(s: Store) -> None:
    amir = await enrol(s, "amir")
    created = await s.create_blob(blob_id(1), amir.device_id, 5000, T0)
    assert created == BlobRow(blob_id(1), amir.device_id, 5000, 0, False, T0, None, T0)
    assert await s.get_blob(blob_id(1)) == created
    assert await s.get_blob(blob_id(2)) is None
    with pytest.raises(ConflictError):
        await s.create_blob(blob_id(1), amir.device_id, 10, T0)
    assert await s.get_blob(blob_id(1)) == created


@scenario
async def test_blob_progress_is_compare_and_set_on_the_bytes_received(
    s: Store,
) -> None:
    amir = await enrol(s, "amir")
    await s.create_blob(blob_id(1), amir.device_id, 100, T0)
    first = await s.blob_progress(blob_id(1), 0, 40, T0 + 1)
    assert (first.received, first.complete, first.touched_at) == (40, False, T0 + 1)
    with pytest.raises(ConflictError, match="continue at offset 40"):
        await s.blob_progress(blob_id(1), 0, 40, T0 + 2)  # a repeat of the first
    with pytest.raises(ConflictError, match="continue at offset 40"):
        await s.blob_progress(blob_id(1), 50, 10, T0 + 2)  # a gap
    with pytest.raises(ConflictError, match="runs past"):
        await s.blob_progress(blob_id(1), 40, 61, T0 + 2)
    with pytest.raises(ConflictError):
        await s.blob_progress(blob_id(1), 40, 0, T0 + 2)
    assert (await s.get_blob(blob_id(1))) == first  # refusals changed nothing
    done = await s.blob_progress(blob_id(1), 40, 60, T0 + 3)
    assert done == BlobRow(
        blob_id(1), amir.device_id, 100, 100, True, T0, T0 + 3, T0 + 3
    )
    with pytest.raises(ConflictError, match="complete"):
        await s.blob_progress(blob_id(1), 100, 1, T0 + 4)
    with pytest.raises(NotFoundError):
        await s.blob_progress(blob_id(2), 0, 1, T0)


@scenario
async def test_concurrent_progress_at_one_offset_keeps_one(s: Store) -> None:
    amir = await enrol(s, "amir")
    await s.create_blob(blob_id(1), amir.device_id, 100, T0)
    outcomes = await asyncio.gather(
        *(s.blob_progress(blob_id(1), 0, 10 + i, T0) for i in range(8)),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if isinstance(o, BlobRow)]
    assert len(winners) == 1
    assert all(isinstance(o, ConflictError) for o in outcomes if o not in winners)
    assert await s.get_blob(blob_id(1)) == winners[0]


@scenario
async def test_a_send_may_name_only_complete_uploads_of_its_sender(s: Store) -> None:
    """Refused sends store nothing, so the same id works once the upload is there."""
    amir, bo = await enrol(s, "amir"), await enrol(s, "bo")
    mine = await uploaded(s, amir, 1)
    theirs = await uploaded(s, bo, 2)
    await s.create_blob(blob_id(3), amir.device_id, 100, T0)  # unfinished
    copies = [(bo.device_id, b"sealed")]
    for bad in (blob_id(9), theirs, blob_id(3)):
        with pytest.raises(ConflictError, match=bad):
            await s.accept(
                amir.device_id, envelope_id(1), copies, T0, blobs=[mine, bad]
            )
        with pytest.raises(ConflictError, match=bad):
            await s.accept_shared(
                amir.device_id, envelope_id(2), [bo.device_id], b"g", T0, blobs=[bad]
            )
    assert await s.pending(bo.device_id) == 0
    ok = await s.accept(amir.device_id, envelope_id(1), copies, T0, blobs=[mine, mine])
    assert ok.delivered_to == [bo.device_id]
    shared = await s.accept_shared(
        amir.device_id, envelope_id(2), [bo.device_id], b"g", T0, blobs=[mine]
    )
    assert shared.delivered_to == [bo.device_id]
    assert await seqs(s, bo.device_id) == [1, 2]
    # a repeat is a duplicate, whatever became of its blobs
    again = await s.accept(
        amir.device_id, envelope_id(1), copies, T0, blobs=[blob_id(9)]
    )
    assert again.duplicate


def test_prune_keeps_a_blob_while_any_inbox_waits_for_its_message(
    store: OpenStore, backend: Backend
) -> None:
    async def main() -> None:
        async with store() as s:
            amir = await enrol(s, "amir")
            bo, cy = await enrol(s, "bo"), await enrol(s, "cy")
            kept = await uploaded(s, amir, 1)
            lone = await uploaded(s, amir, 2)  # never sent
            await s.accept(
                amir.device_id,
                envelope_id(1),
                [(bo.device_id, b"1"), (cy.device_id, b"1")],
                T0 + MINUTE,
                blobs=[kept],
            )
            assert await s.prune(T0 + 10, blob_grace_ms=HOUR) == []
            row = await s.get_blob(lone)
            assert row is not None and row.orphaned_at == T0 + 10
            row = await s.get_blob(kept)
            assert row is not None and (row.orphaned_at, row.touched_at) == (
                None,
                T0 + MINUTE,
            )
            assert await s.prune(T0 + 2 * HOUR, blob_grace_ms=HOUR) == [lone]
            assert await s.get_blob(lone) is None
            await s.ack(bo.device_id, 1)
            assert await s.prune(T0 + 3 * HOUR, blob_grace_ms=HOUR) == []
            await s.ack(cy.device_id, 1)
            # nobody waits now: the grace counts from the prune that sees it, so that
            # a recipient that acknowledged late still has the grace to fetch the file
            assert await s.prune(T0 + 5 * HOUR, blob_grace_ms=HOUR) == []
            assert await s.prune(T0 + 5 * HOUR + 59 * MINUTE, blob_grace_ms=HOUR) == []
            assert await s.prune(T0 + 6 * HOUR + MINUTE, blob_grace_ms=HOUR) == [kept]
            assert await s.get_blob(kept) is None
        assert await blob_count(backend) == (0, 0)

    arun(main())


@scenario
async def test_prune_keeps_group_blobs_until_every_member_acknowledged(
    s: Store,
) -> None:
    amir = await enrol(s, "amir")
    members = [await enrol(s, f"m{i}") for i in range(3)]
    kept = await uploaded(s, amir, 1)
    await s.accept_shared(
        amir.device_id,
        envelope_id(1),
        [m.device_id for m in members],
        b"megolm",
        T0,
        blobs=[kept],
    )
    for member in members:
        assert await s.prune(T0 + 2 * HOUR, blob_grace_ms=HOUR) == []
        await s.ack(member.device_id, 1)
    assert await s.prune(T0 + 2 * HOUR, blob_grace_ms=HOUR) == []  # now orphaned
    assert await s.prune(T0 + 4 * HOUR, blob_grace_ms=HOUR) == [kept]


@scenario
async def test_prune_collects_blobs_of_expired_messages(s: Store) -> None:
    amir, bo = await enrol(s, "amir"), await enrol(s, "bo")
    kept = await uploaded(s, amir, 1)
    await s.accept(
        amir.device_id,
        envelope_id(1),
        [(bo.device_id, b"1")],
        T0,
        expires_at=T0 + 2 * HOUR,
        blobs=[kept],
    )
    assert await s.prune(T0 + 90 * MINUTE, blob_grace_ms=HOUR) == []
    assert await s.prune(T0 + 3 * HOUR, blob_grace_ms=HOUR) == []  # expired: orphaned
    assert await s.pending(bo.device_id) == 0
    assert await s.prune(T0 + 5 * HOUR, blob_grace_ms=HOUR) == [kept]


@scenario
async def test_prune_forgets_uploads_that_stalled(s: Store) -> None:
    amir = await enrol(s, "amir")
    await s.create_blob(blob_id(1), amir.device_id, 100, T0)
    await s.blob_progress(blob_id(1), 0, 10, T0 + HOUR)  # progress keeps it alive
    ttl = 24 * HOUR
    assert await s.prune(T0 + ttl + MINUTE, upload_ttl_ms=ttl) == []
    assert await s.prune(T0 + HOUR + ttl + MINUTE, upload_ttl_ms=ttl) == [blob_id(1)]
    assert await s.get_blob(blob_id(1)) is None
    # the default periods are a day each
    await uploaded(s, amir, 2)
    assert await s.prune(T0 + 10) == []
    assert await s.prune(T0 + 23 * HOUR) == []
    assert await s.prune(T0 + 25 * HOUR) == [blob_id(2)]


@scenario
async def test_a_send_racing_the_collector_never_keeps_a_collected_blob(
    s: Store,
) -> None:
    """Either the send names the blob and it stays, or it is gone and the send fails."""
    amir, bo = await enrol(s, "amir"), await enrol(s, "bo")
    blobs = [await uploaded(s, amir, n) for n in range(12)]
    assert await s.prune(T0 + 10) == []  # each is an orphan from now on
    sends = [
        s.accept(
            amir.device_id, envelope_id(n), [(bo.device_id, b"x")], T0 + HOUR, blobs=[b]
        )
        for n, b in enumerate(blobs)
    ]
    outcomes = await asyncio.gather(
        *sends, s.prune(T0 + HOUR, blob_grace_ms=MINUTE), return_exceptions=True
    )
    removed = outcomes[-1]
    assert isinstance(removed, list)
    for blob, outcome in zip(blobs, outcomes[:-1], strict=True):
        if isinstance(outcome, AcceptResult):
            assert blob not in removed and await s.get_blob(blob) is not None
        else:
            assert isinstance(outcome, ConflictError)
            assert blob in removed and await s.get_blob(blob) is None
    assert await s.prune(T0 + HOUR, blob_grace_ms=MINUTE) == []


# --- the hot path: what the server relies on to deliver without reading back ---------


@scenario
async def test_accept_reports_the_seq_of_each_stored_copy(s: Store) -> None:
    """``seqs`` lines up with ``delivered_to`` and is what ``fetch`` reads back."""
    amir = await enrol(s, "amir")
    phone, laptop = await enrol(s, "bo"), await enrol(s, "bo", "laptop")
    await s.accept(amir.device_id, envelope_id(1), [(laptop.device_id, b"l0")], T0)
    copies = [
        (phone.device_id, b"p1"),
        ("zzzzzzzzzzzzzzzz", b"x"),
        (laptop.device_id, b"l1"),
        (phone.device_id, b"p2"),
    ]
    result = await s.accept(amir.device_id, envelope_id(2), copies, T0)
    assert result.delivered_to == [phone.device_id, laptop.device_id, phone.device_id]
    assert result.skipped == ["zzzzzzzzzzzzzzzz"]

    async def seq_of(device: DeviceRow, body: bytes) -> int:
        (seq,) = [r.seq for r in await all_inbox(s, device.device_id) if r.body == body]
        return seq

    assert result.seqs == [
        await seq_of(phone, b"p1"),
        await seq_of(laptop, b"l1"),
        await seq_of(phone, b"p2"),
    ]
    assert result.seqs == [1, 2, 2]
    shared = await s.accept_shared(
        amir.device_id, envelope_id(3), [laptop.device_id, phone.device_id], b"g", T0
    )
    assert shared.seqs == [3, 3]
    again = await s.accept(amir.device_id, envelope_id(2), copies, T0)
    assert again.duplicate and again.seqs == []


@scenario
async def test_a_refused_send_among_many_fails_alone(s: Store) -> None:
    """One commit carries them all; the refused ones store nothing, the rest commit
    with gap-free seqs, and an acknowledgement in the same commit applies."""
    amir, bo = await enrol(s, "amir"), await enrol(s, "bo")
    for n in range(3):
        await s.accept(amir.device_id, envelope_id(n), [(bo.device_id, b"old")], T0)

    def send(n: int, blobs: Sequence[str] = ()) -> Awaitable[AcceptResult]:
        copies = [(bo.device_id, b"%d" % n)]
        return s.accept(amir.device_id, envelope_id(n), copies, T0, blobs=blobs)

    writes: list[Awaitable[object]] = [s.ack(bo.device_id, 2)]
    for n in range(10, 30):
        writes.append(send(n))
        if n % 5 == 0:
            writes.append(send(100 + n, blobs=[blob_id(99)]))  # no such upload
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(refused) == 4 and all(isinstance(o, ConflictError) for o in refused)
    accepted = [o for o in outcomes if isinstance(o, AcceptResult)]
    assert sorted(seq for r in accepted for seq in r.seqs) == list(range(4, 24))
    inbox = await all_inbox(s, bo.device_id)
    assert [r.seq for r in inbox] == [3, *range(4, 24)]
    by_body = {r.body: r.seq for r in inbox}
    for n, result in zip(range(10, 30), accepted, strict=True):
        assert result.seqs == [by_body[b"%d" % n]]


# --- upgrades ---------------------------------------------------------------------------

# A database as each earlier release left it: every table of that schema version holds a
# row, written with that version's own SQL.  Opening it with ``migrate=True`` must keep
# every row readable through this build's ``Store``, and numbering must go on.  Each
# ``if start >= N`` below is what schema version N brought.

Statement = tuple[str, tuple[Any, ...]]

AMIR, BO, CY = device_row("amir"), device_row("bo"), device_row("cy")
WAITING = [(n, envelope_id(n), f"sealed {n}".encode()) for n in (1, 2, 3)]
# a group message (2): one body for every member, which disappears after an hour
GROUP_EID, GROUP_BODY, GROUP_AT = envelope_id(10), b"one body for all", T0 + 10
ESCROW_DAY, DM = "2026-01-01", "dm:amir:bo"
LAST_SEEN = T0 + 5 * MINUTE


def _old_database(start: int, dialect: str) -> list[Statement]:
    """The schema at version ``start`` and a row in each of its tables."""
    sql: list[Statement] = [
        (statement, ())
        for version in range(start)
        for statement in statements(version, dialect, "{blob}")
    ]
    sql += [
        ("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)", ()),
        ("INSERT INTO meta VALUES ('schema_version', ?)", (str(start),)),
    ]
    waiting_for_bo = len(WAITING) + (1 if start >= 2 else 0)
    next_seq = {AMIR.user: 0, BO.user: waiting_for_bo, CY.user: 9}
    for row in (AMIR, BO, CY):
        sql.append(
            (
                "INSERT INTO users(user_id, name, created_at, disabled)"
                " VALUES (?, ?, ?, ?)",
                (row.user, row.user.title(), T0, int(row is CY)),
            )
        )
        sql.append(
            (
                "INSERT INTO devices(device_id, user_id, name, ed25519, curve25519,"
                " certificate, created_at, last_seen, revoked_at, revocation,"
                " client_version, next_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.device_id,
                    row.user,
                    row.name,
                    row.ed25519,
                    row.curve25519,
                    row.certificate,
                    row.created_at,
                    LAST_SEEN,
                    T0 + HOUR if row is CY else None,  # cy's phone was revoked
                    b"signed revocation" if row is CY else None,
                    row.client_version,
                    next_seq[row.user],
                ),
            )
        )
    sql += [
        (
            "INSERT INTO activation_codes(code_id, user_id, password, created_at,"
            " expires_at, failures, state) VALUES (?, ?, ?, ?, ?, ?, ?)",
            ("code-amir", "amir", code_password("code-amir"), T0, T0 + HOUR, 1, "live"),
        ),
        (
            "INSERT INTO activation_sessions(session_id, user_id, code_id, shared,"
            " expires_at, reason) VALUES (?, ?, ?, ?, ?, ?)",
            ("session-amir", "amir", "code-amir", _raw("shared"), T0 + HOUR, None),
        ),
    ]
    for key in (otk(1), otk(2), otk(3, fallback=True)):
        sql.append(
            (
                "INSERT INTO one_time_keys(device_id, key_id, key, signature, fallback)"
                " VALUES (?, ?, ?, ?, ?)",
                (AMIR.device_id, key.key_id, key.key, key.signature, int(key.fallback)),
            )
        )
    for n, eid, body in WAITING:
        sql += [
            (
                "INSERT INTO inbox(device_id, seq, envelope_id, sender, at, body)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (BO.device_id, n, eid, AMIR.device_id, T0 + n, body),
            ),
            (
                "INSERT INTO sends(sender, envelope_id, at) VALUES (?, ?, ?)",
                (AMIR.device_id, eid, T0 + n),
            ),
        ]
    if start >= 2:
        sql += [
            (
                "INSERT INTO shared_bodies(sender, envelope_id, at, body)"
                " VALUES (?, ?, ?, ?)",
                (AMIR.device_id, GROUP_EID, GROUP_AT, GROUP_BODY),
            ),
            (
                "INSERT INTO inbox(device_id, seq, envelope_id, sender, at, body,"
                " expires_at) VALUES (?, ?, ?, ?, ?, NULL, ?)",
                (BO.device_id, 4, GROUP_EID, AMIR.device_id, GROUP_AT, T0 + HOUR),
            ),
            (
                "INSERT INTO sends(sender, envelope_id, at) VALUES (?, ?, ?)",
                (AMIR.device_id, GROUP_EID, GROUP_AT),
            ),
        ]
        for seq in (0, 1):
            sql.append(
                (
                    "INSERT INTO group_changes(group_id, seq, entry, hash, at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    ("g1", seq, *_entry("g1", seq), T0 + seq),
                )
            )
    if start >= 3:
        blobs = (
            "INSERT INTO blobs(blob_id, owner, size, received, complete, created_at,"
        )
        sql += [
            (
                blobs
                + " completed_at, touched_at) VALUES (?, ?, 100, 100, 1, ?, ?, ?)",
                (blob_id(1), AMIR.device_id, T0 - MINUTE, T0, T0),
            ),
            (  # an upload still in progress
                blobs + " touched_at) VALUES (?, ?, 100, 40, 0, ?, ?)",
                (blob_id(2), AMIR.device_id, T0, T0),
            ),
            (  # blob 1 is attached to message 1, which bo has not fetched yet
                "INSERT INTO blob_refs(blob_id, sender, envelope_id) VALUES (?, ?, ?)",
                (blob_id(1), AMIR.device_id, envelope_id(1)),
            ),
        ]
    if start >= 4:
        sql += [
            (
                "INSERT INTO audit_log(seq, entry, hash, at) VALUES (?, ?, ?, ?)",
                (seq, b"signed audit entry %d" % seq, _raw(f"audit {seq}"), T0 + seq),
            )
            for seq in (0, 1)
        ]
        sql += [
            (
                "INSERT INTO policy_changes(version, user_id, key, value, cleared, at,"
                " actor) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (1, None, "retention_days", "7", 0, T0, "admin"),
            ),
            (
                "INSERT INTO policy_changes(version, user_id, key, value, cleared, at,"
                " actor) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (2, "bo", "retention_days", None, 1, T0 + 1, "console"),
            ),
            (
                "INSERT INTO device_fleet(device_id, policy_version, policy_at,"
                " wipe_order, wipe_ordered_at) VALUES (?, ?, ?, ?, ?)",
                (BO.device_id, 2, T0 + 2, b"signed wipe order", T0 + 3),
            ),
            (
                "INSERT INTO disabled_users(user_id, record, at) VALUES (?, ?, ?)",
                ("cy", b"signed disabled record", T0 + HOUR),
            ),
        ]
    if start >= 5:
        sql += [
            (
                "INSERT INTO escrow_setup(id, public, commitments, custodians,"
                " threshold, token_hashes, at) VALUES (1, ?, ?, 3, 2, ?, ?)",
                (_raw("public"), _raw("commitments"), '["h1", "h2", "h3"]', T0),
            ),
            (
                "INSERT INTO escrow_copies(sender, message_id, sender_user,"
                " conversation, day, ephemeral, sealed, at)"
                " VALUES (?, ?, 'amir', ?, ?, ?, ?, ?)",
                (
                    AMIR.device_id,
                    envelope_id(1),
                    DM,
                    ESCROW_DAY,
                    _raw("ephemeral"),
                    b"sealed copy",
                    T0 + 1,
                ),
            ),
            (
                "INSERT INTO escrow_requests(request_id, body, at) VALUES (?, ?, ?)",
                ("request-1", b"signed request", T0 + 5),
            ),
            (
                "INSERT INTO escrow_partials(request_id, custodian, body, at)"
                " VALUES (?, ?, ?, ?)",
                ("request-1", 2, b"partial of custodian 2", T0 + 6),
            ),
        ]
        sql += [
            (
                "INSERT INTO escrow_members(user_id, day, conversation)"
                " VALUES (?, ?, ?)",
                (user, ESCROW_DAY, DM),
            )
            for user in ("amir", "bo")
        ]
    return sql


@pytest.mark.parametrize("start", range(1, SCHEMA_VERSION))
def test_upgrade_from_every_older_schema_loses_nothing(
    store: OpenStore, backend: Backend, start: int
) -> None:
    """A database an earlier release made, with people, mail and fleet state in it, is
    refused until migrated, then migrated without losing a row."""

    async def main() -> None:
        await backend.sql(_old_database(start, backend.dialect))
        with pytest.raises(SchemaError, match="strongroom migrate"):
            async with store(migrate=False):
                pass
        async with store(migrate=True) as s:
            assert await s.schema_version() == SCHEMA_VERSION
            await read_back(s)
            await carry_on(s)

    async def read_back(s: Store) -> None:
        assert await s.list_users() == [
            UserRow("amir", "Amir", T0),
            UserRow("bo", "Bo", T0),
            UserRow("cy", "Cy", T0, disabled=True),
        ]
        assert await s.list_devices("bo") == [
            msgspec.structs.replace(BO, last_seen=LAST_SEEN)
        ]
        revoked = await s.get_device(CY.device_id)
        assert revoked is not None and revoked.revoked_at == T0 + HOUR
        assert revoked.revocation == b"signed revocation"
        assert await s.latest_code("amir") == CodeRow(
            "code-amir", "amir", code_password("code-amir"), T0, T0 + HOUR, 1, "live"
        )
        assert await s.take_activation("session-amir", T0 + MINUTE) == ActivationRow(
            "session-amir", "amir", "code-amir", _raw("shared"), T0 + HOUR, None
        )
        assert await s.count_keys(AMIR.device_id) == 2
        claimed = [await s.claim_key(AMIR.device_id) for _ in range(3)]
        assert sorted(claimed, key=repr) == sorted(
            [otk(1), otk(2), otk(3, fallback=True)], key=repr
        )
        waiting = [
            InboxRow(n, eid, AMIR.device_id, T0 + n, body) for n, eid, body in WAITING
        ]
        if start >= 2:
            waiting.append(
                InboxRow(4, GROUP_EID, AMIR.device_id, GROUP_AT, GROUP_BODY, True)
            )
            assert await s.group_changes("g1", -1, 10) == [
                GroupChangeRow(seq, *_entry("g1", seq), T0 + seq) for seq in (0, 1)
            ]
        assert await all_inbox(s, BO.device_id) == waiting
        if start >= 3:
            assert await s.get_blob(blob_id(1)) == BlobRow(
                blob_id(1), AMIR.device_id, 100, 100, True, T0 - MINUTE, T0, T0
            )
            assert await s.get_blob(blob_id(2)) == BlobRow(
                blob_id(2), AMIR.device_id, 100, 40, False, T0, None, T0
            )
        if start >= 4:
            assert await s.audit_records() == [
                AuditRecord(
                    seq, b"signed audit entry %d" % seq, _raw(f"audit {seq}"), T0 + seq
                )
                for seq in (0, 1)
            ]
            assert await s.policy_changes() == [
                PolicyChangeRow(1, None, "retention_days", "7", T0, "admin"),
                PolicyChangeRow(
                    2, "bo", "retention_days", None, T0 + 1, "console", cleared=True
                ),
            ]
            assert await s.fleet_row(BO.device_id) == FleetRow(
                BO.device_id, 2, T0 + 2, b"signed wipe order", T0 + 3, None
            )
            assert await s.disabled_users() == {
                "cy": (b"signed disabled record", T0 + HOUR)
            }
        if start >= 5:
            assert await s.escrow_setup() == (
                _raw("public"),
                _raw("commitments"),
                3,
                2,
                '["h1", "h2", "h3"]',
                T0,
            )
            assert await s.escrow_scopes("bo", ESCROW_DAY, ESCROW_DAY) == [
                (DM, ESCROW_DAY, 1)
            ]
            assert await s.escrow_copies(DM, ESCROW_DAY) == [
                (
                    AMIR.device_id,
                    "amir",
                    envelope_id(1),
                    _raw("ephemeral"),
                    b"sealed copy",
                )
            ]
            assert await s.escrow_request("request-1") == b"signed request"
            assert await s.partials("request-1") == {2: b"partial of custodian 2"}

    async def carry_on(s: Store) -> None:
        """What the server does next with the upgraded database works as before."""
        # the send ids survived: a resend is still a duplicate
        again = await s.accept(
            AMIR.device_id, envelope_id(2), [(BO.device_id, b"x")], T0
        )
        assert again.duplicate
        # numbering goes on where it was, for the device with mail waiting and for one
        # without
        last = 4 if start >= 2 else 3
        more = await s.accept(
            AMIR.device_id,
            envelope_id(20),
            [(BO.device_id, b"new"), (AMIR.device_id, b"own copy")],
            T0 + MINUTE,
        )
        assert more.seqs == [last + 1, 1]
        assert await seqs(s, BO.device_id) == [*range(1, last + 1), last + 1]
        # a device revoked before the upgrade still gets nothing
        late = await s.accept(
            AMIR.device_id, envelope_id(21), [(CY.device_id, b"5")], T0
        )
        assert late.skipped == [CY.device_id] and await seqs(s, CY.device_id) == []
        if start >= 2:
            head = _entry("g1", 1)[1]
            await _append(s, "g1", 2, head)  # the chain goes on from its head
            assert await s.prune(T0 + HOUR + 1) == []
            # the disappearing group message disappeared on time
            assert await seqs(s, BO.device_id) == [1, 2, 3, last + 1]
        if start >= 3:
            # the half-finished upload resumes where it stopped
            done = await s.blob_progress(blob_id(2), 40, 60, T0 + 2 * HOUR)
            assert done.complete
            # blob 1 is kept while bo has not acknowledged message 1, then orphaned
            assert await orphaned_at(s, blob_id(1)) is None
        await s.ack(BO.device_id, last + 1)
        assert await s.pending(BO.device_id) == 0
        if start >= 3:
            await s.prune(T0 + 3 * HOUR)
            assert await orphaned_at(s, blob_id(1)) == T0 + 3 * HOUR
        if start >= 4:
            with pytest.raises(ConflictError):  # the log's head is still at 1
                await s.append_audit(AuditRecord(1, b"x", b"x", T0))
            await s.append_audit(AuditRecord(2, b"y", b"y", T0))
            assert await s.audit_head() == (2, b"y")
            with pytest.raises(ConflictError):
                await s.disable_user("cy", b"again", T0)

    arun(main())


async def orphaned_at(s: Store, blob: str) -> int | None:
    row = await s.get_blob(blob)
    assert row is not None, blob
    return row.orphaned_at


# --- SQLite only ------------------------------------------------------------------------


def test_sqlite_two_writers_on_one_file_keep_seqs_gap_free(tmp_path: Path) -> None:
    """The SQLite writer counts seqs in memory; another connection writing to the same
    file (a second process, say) must not make it hand out a seq twice."""

    async def main() -> None:
        a, b = SqliteStore(tmp_path / "s.db"), SqliteStore(tmp_path / "s.db")
        await a.open(migrate=True)
        await b.open()
        try:
            amir, bo = await enrol(a, "amir"), await enrol(a, "bo")

            def send(node: Store, n: int) -> Awaitable[AcceptResult]:
                copies = [(bo.device_id, b"%d" % n)]
                return node.accept(amir.device_id, envelope_id(n), copies, T0)

            for n in range(10):
                await send(a if n % 3 else b, n)
            await asyncio.gather(*(send(a if n % 2 else b, n) for n in range(10, 40)))
            assert await seqs(a, bo.device_id) == list(range(1, 41))
            await b.revoke_device(bo.device_id, b"revoked", T0)
            late = await send(a, 40)  # a's cached counter must not outlive that
            assert late.skipped == [bo.device_id]
        finally:
            await a.close()
            await b.close()

    arun(main())


def test_sqlite_writer_waits_for_another_writers_lock_off_the_event_loop(
    tmp_path: Path,
) -> None:
    """While another connection holds the write lock, writes wait for it to end, and the
    event loop keeps running meanwhile (its statements never wait for a lock)."""

    async def main() -> None:
        s = SqliteStore(tmp_path / "s.db")
        await s.open(migrate=True)
        other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
        try:
            amir, bo = await enrol(s, "amir"), await enrol(s, "bo")
            other.execute("BEGIN IMMEDIATE")
            copies = [(bo.device_id, b"x")]
            sending = asyncio.ensure_future(
                s.accept(amir.device_id, envelope_id(1), copies, T0)
            )
            ticks = 0
            for _ in range(20):
                await asyncio.sleep(0.01)
                ticks += 1
            assert ticks == 20 and not sending.done()
            other.execute("COMMIT")
            assert (await sending).seqs == [1]
        finally:
            other.close()
            await s.close()

    arun(main())
