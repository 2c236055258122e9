"""Fixtures shared by the tests above the unit level: a real server on loopback."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest

from _services import (
    NATS_URL,
    POSTGRES_URL,
    postgres_placeholders,
    postgres_schema,
    require,
)
from strongroom import client, proto, server
from strongroom.cli._local import LocalServer

T = TypeVar("T")


def arun(coro: Coroutine[Any, Any, T]) -> T:
    """Run one async scenario to completion (the SDK is async-only)."""
    return asyncio.run(coro)


class Backend(NamedTuple):
    """Where an organisation keeps its state and how its nodes wake each other."""

    name: str
    database: str | None = None  # None: the embedded default (SQLite)
    bus: str | None = None  # None: the in-process bus


SQLITE = Backend("sqlite")


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each backend the server runs on; PostgreSQL goes with NATS, as in a real cluster."""
    if request.param == "sqlite":
        yield SQLITE
        return
    require(NATS_URL)
    with postgres_schema() as url:
        yield Backend("postgres", url, NATS_URL)


class Org:
    """An organisation with a running server process, and the admin's verbs."""

    def __init__(self, root: Path, backend: Backend = SQLITE) -> None:
        self.root = root
        self.backend = backend
        self.data = server.init_data_dir(
            root / "server", "Test Ministry", database=backend.database, bus=backend.bus
        )
        arun(server.migrate(self.data))
        self.server = LocalServer(self.data.path)
        self.token = self.data.read_admin_token()

    @property
    def url(self) -> str:
        return self.server.url

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one statement on the server's database, as whoever holds it could.

        Placeholders are ``?`` whatever the backend; rows come back as tuples.
        """
        if self.backend.database is None:
            with sqlite3.connect(self.data.path / "strongroom.db") as conn:
                return [tuple(row) for row in conn.execute(statement, params)]

        url = self.backend.database
        schema = parse_qs(urlsplit(url).query)["schema"][0]

        async def run() -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(
                POSTGRES_URL, server_settings={"search_path": schema}
            )
            try:
                rows = await conn.fetch(postgres_placeholders(statement), *params)
                return [tuple(row) for row in rows]
            finally:
                await conn.close()

        return arun(run())

    def database_contents(self) -> bytes:
        """Every value of every table of the server's database, as bytes to grep."""
        if self.backend.database is None:
            query = "SELECT name FROM sqlite_master WHERE type = 'table'"
        else:
            query = (
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema()"
            )
        tables = [str(name) for (name,) in self.sql(query)]
        assert "inbox" in tables
        out = bytearray()
        for table in tables:
            for row in self.sql(f"SELECT * FROM {table}"):
                for value in row:
                    out += value if isinstance(value, bytes) else str(value).encode()
                    out += b"\x00"
        return bytes(out)

    def admin(self, method: str, path: str, body: bytes = b"") -> httpx.Response:
        return httpx.request(
            method,
            self.url + path,
            content=body,
            headers={"authorization": f"Bearer {self.token}"},
            timeout=10.0,
        )

    def add_user(self, user: str, name: str = "") -> None:
        response = self.admin(
            "POST", "/v1/admin/users", proto.encode_json(proto.UserAdd(user, name))
        )
        assert response.status_code == 200, response.text

    def code(self, user: str, ttl_seconds: int = 3600) -> str:
        response = self.admin(
            "POST",
            f"/v1/admin/users/{user}/code",
            proto.encode_json(proto.CodeRequest(ttl_seconds)),
        )
        assert response.status_code == 200, response.text
        return proto.decode_json(response.content, proto.CodeIssued).code

    def activate(self, user: str, device: str = "phone", url: str = "") -> Path:
        """Add the user if needed, issue a code and activate a device home with it.

        The device talks to ``url`` (default: this organisation's server).
        """
        if self.admin("GET", "/v1/admin/users").text.find(f'"{user}"') < 0:
            self.add_user(user)
        home = self.root / f"{user}-{device}"
        arun(client.activate(home, url or self.url, user, self.code(user), device))
        return home

    def device_id(self, home: Path) -> str:
        store = client.LocalStore.open(home)
        try:
            return store.meta_text("device_id")
        finally:
            store.close()


@pytest.fixture
def sqlite_org(tmp_path: Path) -> Iterator[Org]:
    """A running organisation on the embedded default only: for what does not depend on
    the backend (the command line's contract) or exists only there (SQLite backups)."""
    organisation = Org(tmp_path)
    organisation.server.start()
    try:
        yield organisation
    finally:
        organisation.server.stop()


@pytest.fixture
def org(tmp_path: Path, backend: Backend) -> Iterator[Org]:
    organisation = Org(tmp_path, backend)
    organisation.server.start()
    try:
        yield organisation
    finally:
        organisation.server.stop()


async def send(home: Path, to: str, text: str) -> client.SendResult:
    async with client.Client(home) as c:
        return await c.send_text(to, text)


async def receive(
    home: Path, wait: float = 0.2, *, everything: bool = False
) -> tuple[list[client.Received], list[str]]:
    """What a device receives: messages (text and files), or with ``everything`` also
    receipts, edits, reactions and timers."""
    async with client.Client(home) as c:
        got = await c.receive(wait)
        if not everything:
            got = [m for m in got if m.kind in ("text", "file")]
        return got, list(c.warnings)
