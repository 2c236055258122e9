"""The external services some tests run against: the local PostgreSQL and NATS.

Outside CI, a test that needs a service that is not reachable skips with a one-line
reason.  In CI (``CI=true``) the services are part of the machine, so an unreachable one
fails the test instead of hiding it.

Each user of PostgreSQL gets a schema of its own (``postgres_schema``), dropped on exit,
so test runs never see each other's data.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import asyncpg
import pytest

__all__ = [
    "NATS_URL",
    "POSTGRES_URL",
    "postgres_placeholders",
    "postgres_schema",
    "require",
    "with_schema",
]

POSTGRES_URL = os.environ.get(
    "STRONGROOM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
NATS_URL = os.environ.get("STRONGROOM_TEST_NATS", "nats://127.0.0.1:4222")


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 0), timeout=1.0
        ):
            return True
    except OSError:
        return False


def require(url: str) -> str:
    """Return ``url`` if its service answers; else skip (or fail in CI)."""
    if _reachable(url):
        return url
    reason = f"{urlsplit(url).scheme} is not reachable at {urlsplit(url).netloc}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}, and CI must run these tests")
    pytest.skip(reason)


def with_schema(url: str, schema: str) -> str:
    """The Strongroom database URL for ``schema`` inside the database ``url`` names."""
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh, empty schema in the test database; yields its Strongroom URL."""
    require(POSTGRES_URL)
    schema = f"sr_test_{secrets.token_hex(6)}"
    asyncio.run(_admin(f"CREATE SCHEMA {schema}"))
    try:
        yield with_schema(POSTGRES_URL, schema)
    finally:
        asyncio.run(_admin(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


def postgres_placeholders(statement: str) -> str:
    """Spell a statement's ``?`` placeholders as PostgreSQL's ``$1``, ``$2``, …"""
    numbers = itertools.count(1)
    return re.sub(r"\?", lambda _: f"${next(numbers)}", statement)
