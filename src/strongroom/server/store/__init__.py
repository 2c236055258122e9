"""Server storage: one ``Store`` interface; SQLite (embedded default) or PostgreSQL behind it.

``store_from_url`` picks the backend from the database URL in the server's config:
``sqlite:///FILE`` (relative to the data directory), or
``postgresql://USER@HOST:PORT/DATABASE?schema=NAME`` for several nodes sharing one
database (``postgres://`` too; ``schema`` is optional and defaults to PostgreSQL's
search path).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from strongroom.errors import ConfigError

from .._urls import redacted_url
from ._migrations import SCHEMA_VERSION
from ._protocol import Store
from ._rows import (
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
    StoredKey,
    UserRow,
)
from ._sqlite import SqliteStore

if TYPE_CHECKING:
    from ._postgres import PostgresStore

__all__ = [
    "SCHEMA_VERSION",
    "AcceptResult",
    "ActivationRow",
    "AuditRecord",
    "BlobRow",
    "CodeRow",
    "DeviceRow",
    "FleetRow",
    "GroupChangeRow",
    "InboxRow",
    "PolicyChangeRow",
    "PostgresStore",
    "SqliteStore",
    "Store",
    "StoredKey",
    "UserRow",
    "store_from_url",
]


def store_from_url(url: str, data_dir: Path) -> Store:
    """Build the store a database URL names.  Relative SQLite paths are in ``data_dir``.

    Raises ``ConfigError`` for a URL this build cannot serve.
    """
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        return SqliteStore(path if path.is_absolute() else data_dir / path)
    if url.startswith(("postgresql://", "postgres://")):
        from ._postgres import PostgresStore  # loads asyncpg only for PostgreSQL

        return PostgresStore(url)
    raise ConfigError(
        f"unsupported database URL {redacted_url(url)!r}: this build serves "
        "sqlite:///FILE and postgresql://USER@HOST:PORT/DATABASE?schema=NAME"
    )


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        from ._postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
