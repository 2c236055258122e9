"""Server storage: one ``Store`` interface; SQLite (embedded default) behind it."""

from __future__ import annotations

from pathlib import Path

from strongroom.errors import ConfigError

from ._migrations import SCHEMA_VERSION
from ._protocol import Store
from ._rows import (
    AcceptResult,
    ActivationRow,
    CodeRow,
    DeviceRow,
    InboxRow,
    StoredKey,
    UserRow,
)
from ._sqlite import SqliteStore

__all__ = [
    "SCHEMA_VERSION",
    "AcceptResult",
    "ActivationRow",
    "CodeRow",
    "DeviceRow",
    "InboxRow",
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
    raise ConfigError(
        f"unsupported database URL {url!r}: this build serves sqlite:///FILE"
    )
