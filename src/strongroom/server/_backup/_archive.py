"""What an archive is (its members, its manifest) and what taking and restoring one
share; the rules are in the package's docstring."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import sqlite3
from pathlib import Path

import msgspec

from strongroom import proto
from strongroom.errors import ConfigError, StoreError

from .._config import Config

FORMAT = 2


_FORMATS = (1, 2)


MANIFEST = "strongroom-backup.json"


CONFIG = "strongroom.toml"


DATABASE = "strongroom.db"


AUTHORITY = "authority.pem"


ADMIN_FILE = "admin.token"


BLOBS = "blobs"  # where an archive holds the blobs; a restore's place if none is set


_REQUIRED = (CONFIG, DATABASE)


_OPTIONAL = (AUTHORITY, ADMIN_FILE)


_MAX_MANIFEST = 32 * 1024 * 1024  # some 300,000 blobs


_CHUNK = 1 << 20


_ATTEMPTS = 3


class Counts(msgspec.Struct, frozen=True):
    users: int
    devices: int
    waiting: int  # envelopes in inboxes, not yet acknowledged
    blobs: int = 0  # complete attachment blobs: all of them are in the archive
    blob_bytes: int = 0


class Manifest(msgspec.Struct, frozen=True):
    format: int
    created_at: int  # Unix time, milliseconds
    strongroom: str  # the version that wrote it
    organisation: str
    schema_version: int
    counts: Counts
    files: dict[str, str]  # member name -> SHA-256, hex; blobs included
    #: Complete in the snapshot, their files gone when archived: left out (rule 3).
    missing_blobs: list[str] = []


class Restored(msgspec.Struct, frozen=True):
    manifest: Manifest
    notes: list[str]  # what the administrator must do before serving, if anything


def blob_dir_outside(config: Config) -> bool:
    """Whether ``[storage] blobs`` is no directory inside the data directory (it is
    absolute, goes up through ``..``, or is the data directory itself).  An archive
    holds the blobs as ``blobs`` anyway; a restore then puts them there too."""
    path = Path(config.storage.blobs)
    return path.is_absolute() or ".." in path.parts or not path.parts


def _blob_member(blob_id: str) -> str:
    return f"{BLOBS}/{blob_id[:2]}/{blob_id}"


def _is_blob_member(name: str) -> bool:
    parts = name.split("/")
    return (
        len(parts) == 3
        and parts[0] == BLOBS
        and proto.valid_blob_id(parts[2])
        and parts[1] == parts[2][:2]
    )


def _version() -> str:
    try:
        return importlib.metadata.version("strongroom")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source tree
        return "unknown"


def _sqlite_path(url: str, data_dir: Path) -> Path:
    """The SQLite file a database URL names.  Raises ``ConfigError`` for any other URL."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        return path if path.is_absolute() else data_dir / path
    # Never echo the URL: it may carry a password.
    if url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            "this organisation's database is PostgreSQL: back it up with pg_dump and "
            "copy authority.pem, strongroom.toml and admin.token beside the dump "
            "(docs/deploy.md, 'Backups'); `strongroom backup` covers the SQLite default"
        )
    raise ConfigError(
        "`strongroom backup` covers the SQLite default only, and this organisation's "
        "database is not SQLite: see docs/deploy.md, 'Backups'"
    )


def _has_blobs(conn: sqlite3.Connection) -> bool:
    """Whether the database has attachments at all (schema 3 on)."""
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'blobs'"
    return conn.execute(query).fetchone() is not None


def _complete_blobs(conn: sqlite3.Connection) -> dict[str, int]:
    if not _has_blobs(conn):
        return {}
    rows = conn.execute("SELECT blob_id, size FROM blobs WHERE complete = 1")
    return {str(blob_id): int(size) for blob_id, size in rows}


def _inspect(path: Path, what: str) -> tuple[int, Counts, dict[str, int]]:
    """Integrity check, schema version, counts and complete blobs (id -> size) of a
    database file we own."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ConfigError(f"{what} cannot be opened: {exc}") from exc
    try:
        try:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                f"{what} is damaged or not a SQLite database ({exc})"
            ) from exc
        if problems != ["ok"]:
            raise StoreError(
                f"{what} is damaged: it failed its integrity check ({problems[0]})"
            )
        try:
            row = conn.execute(
                "SELECT value FROM meta WHERE key='schema_version'"
            ).fetchone()
            blobs = _complete_blobs(conn)
            counts = Counts(
                users=conn.execute("SELECT count(*) FROM users").fetchone()[0],
                devices=conn.execute("SELECT count(*) FROM devices").fetchone()[0],
                waiting=conn.execute("SELECT count(*) FROM inbox").fetchone()[0],
                blobs=len(blobs),
                blob_bytes=sum(blobs.values()),
            )
        except sqlite3.Error as exc:
            raise ConfigError(f"{what} is not a Strongroom database ({exc})") from exc
        if row is None:
            raise ConfigError(
                f"{what} is not a Strongroom database (no schema version)"
            )
        return int(row[0]), counts, blobs
    finally:
        conn.close()


def _sync_directory(path: Path) -> None:
    with contextlib.suppress(
        OSError
    ):  # not every filesystem lets a directory be synced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _cannot_write(path: Path, exc: OSError) -> ConfigError:
    return ConfigError(f"cannot write {path}: {exc.strerror or exc}")
