"""Backup and restore of a data directory on the embedded default (SQLite).

An archive is a gzip-compressed tar holding exactly these members, manifest first::

    strongroom-backup.json   the manifest: format, time, organisation, schema version,
                             counts, and the SHA-256 of every other member
    strongroom.toml          the configuration
    strongroom.db            a consistent copy of the database
    authority.pem            the authority key (unless left out on purpose)
    admin.token              the admin credential, if the directory has one
    blobs/<id[:2]>/<id>      each attachment blob the copy names as complete

Rules:

1. A backup is consistent while the server runs: SQLite's online backup API copies the
   database in one step, that is inside one read transaction, which WAL lets run beside the
   server's writer.  The copy must pass ``PRAGMA integrity_check`` before it is archived.
2. A backup never leaves a partial file under its final name: the archive is written to a
   temporary file (mode 0600, since it may hold the authority key) beside ``out``, flushed
   to disk and renamed.  Nothing but SQLite is backed up here: a PostgreSQL database is
   backed up with ``pg_dump`` (docs/deploy.md).
3. The blobs archived are the complete ones the database *copy* names, so files and rows
   agree (blob rule 1: never a row without its bytes).  A blob completed after the
   snapshot is left out, and so are the bytes of uploads in progress: the copy sets their
   ``received`` back to 0, and the uploader starts again instead of meeting a file
   shorter than the count.  A complete blob whose file is gone by the time it is archived
   (pruning deletes a file after its row, so a snapshot can name a file pruned since, or
   the file was lost) does not fail the backup.  It is listed in the manifest's
   ``missing_blobs`` and *its rows are dropped from the copy*: a restored server then says
   "no such attachment" for it, as the live one does, instead of keeping a row whose
   bytes are gone and logging lost data on every download.  Blobs are streamed, never
   read whole: a first pass hashes them (the manifest comes first), the second copies
   them into the tar and checks the hash again.  One that vanishes between the passes is
   dropped as above and the archive written again, at most ``_ATTEMPTS`` times.  An
   archive always holds blobs as ``blobs/``, wherever the blob directory is.
4. A restore validates the whole archive (member names and types, checksums, the database's
   integrity and schema, the configuration, and that the blobs are exactly the complete
   ones the database names, at their sizes) in a staging directory before it writes into
   the target.  Only the names above are accepted, a blob's being its id under its first
   two letters, so no member can land outside the target.  Blobs go where the archived
   configuration's ``[storage] blobs`` says, or to ``blobs`` with a note if that is outside
   the data directory.  The checksums catch damage, not forgery: they are no signature.
5. A restore never writes into the directory of a running server, and into a non-empty
   one only when forced.  Stale ``-wal``/``-shm`` files beside the old database go, since
   SQLite would replay them onto the restored one.

Format 2 added the blobs; a format 1 archive is still restored, with a note if its
database names attachments it does not hold.  ``sqlite3``, ``tarfile`` and gzip errors are
mapped here, to ``ConfigError`` for an archive or directory that is not what it should be
and ``StoreError`` for a database that failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import io
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
import tomllib
import zlib
from collections.abc import Collection
from pathlib import Path
from typing import IO, NamedTuple

import msgspec

from strongroom import proto
from strongroom.errors import ConfigError, StoreError

from ._config import Config, DataDir
from .store import SCHEMA_VERSION

__all__ = [
    "BLOBS",
    "FORMAT",
    "Counts",
    "Manifest",
    "Restored",
    "backup",
    "blob_dir_outside",
    "restore",
]

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


# --- backup -----------------------------------------------------------------------------


class _Blob(NamedTuple):
    path: Path
    size: int
    sha256: str


class _VanishedError(Exception):
    """A blob file hashed in the first pass is gone in the second (rule 3)."""

    def __init__(self, blob_id: str) -> None:
        super().__init__(blob_id)
        self.blob_id = blob_id


def backup(
    data: DataDir, out: Path, *, force: bool = False, authority_key: bool = False
) -> Manifest:
    """Write a consistent archive of ``data`` to ``out``, while the server runs or not.

    Raises ``ConfigError`` if ``data`` is not a data directory, its database is not SQLite,
    ``out`` exists (and not ``force``) or cannot be written, or a blob file cannot be
    read; ``StoreError`` if the database cannot be copied, the copy fails its integrity
    check or names a blob by an impossible id, or blob files keep vanishing under it.
    """
    config = data.load_config()
    database = _sqlite_path(config.storage.database, data.path)
    if not database.is_file():
        raise ConfigError(f"there is no database at {database}: run `strongroom init`")
    if out.is_dir():
        raise ConfigError(f"{out} is a directory: name the archive file to write")
    if out.exists() and not force:
        raise ConfigError(f"{out} exists: pass --force to replace it")
    if not out.parent.is_dir():
        raise ConfigError(f"the directory {out.parent} does not exist")
    if authority_key and not data.authority.is_file():
        raise ConfigError(
            f"the authority key {data.authority} is missing: restore it first, or "
            "back up without --with-authority-key"
        )
    # The small files are read once, so what is hashed is what is archived.
    small = {
        CONFIG: data.config,
        AUTHORITY: data.authority,
        ADMIN_FILE: data.admin_token,
    }
    if not authority_key:
        del small[AUTHORITY]
    members: dict[str, bytes | Path] = {
        name: _read(path) for name, path in small.items() if path.is_file()
    }

    try:
        staging = Path(tempfile.mkdtemp(prefix=".strongroom-backup-", dir=out.parent))
    except OSError as exc:
        raise _cannot_write(out, exc) from exc
    try:
        copy = staging / DATABASE
        _copy_database(database, copy)
        members[DATABASE] = copy
        blob_dir = config.storage.blob_dir(data.path)
        blobs: dict[str, _Blob] = {}
        missing: list[str] = []
        for blob_id, size in _settle_blobs(copy, ()).items():
            if not proto.valid_blob_id(blob_id):
                raise StoreError(
                    f"the database names an attachment blob {blob_id!r}, which is no "
                    "blob id: it may have been tampered with"
                )
            path = blob_dir / blob_id[:2] / blob_id
            digest = _blob_sha256(path, size)
            if digest is None:
                missing.append(blob_id)
            else:
                blobs[blob_id] = _Blob(path, size, digest)
        for _ in range(_ATTEMPTS):
            _settle_blobs(copy, missing)
            version, counts, _ = _inspect(copy, "the copy of the database")
            files = {name: _sha256(member) for name, member in sorted(members.items())}
            for blob_id, blob in sorted(blobs.items()):
                files[_blob_member(blob_id)] = blob.sha256
            manifest = Manifest(
                format=FORMAT,
                created_at=int(time.time() * 1000),
                strongroom=_version(),
                organisation=config.organisation.name,
                schema_version=version,
                counts=counts,
                files=files,
                missing_blobs=sorted(missing),
            )
            try:
                _write_archive(out, manifest, members, blobs)
            except _VanishedError as exc:  # pruned since it was hashed: leave it out
                gone = {exc.blob_id} | {
                    blob_id for blob_id, blob in blobs.items() if not blob.path.exists()
                }
                missing.extend(sorted(gone))
                for blob_id in gone:
                    del blobs[blob_id]
                continue
            return manifest
        raise StoreError(
            f"attachment blobs kept vanishing from {blob_dir} while the backup ran "
            f"({len(missing)} so far): run it again"
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _copy_database(source: Path, target: Path) -> None:
    try:
        src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=rw", uri=True)
        try:
            src.execute("PRAGMA busy_timeout=10000")
            dst = sqlite3.connect(target)
            try:
                src.backup(dst)  # all pages in one step: one read transaction
                # One self-contained file: the restored server turns WAL back on.
                dst.execute("PRAGMA journal_mode=DELETE")
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise StoreError(f"could not copy the database {source}: {exc}") from exc


def _settle_blobs(copy: Path, missing: Collection[str]) -> dict[str, int]:
    """Rule 3 on the copy: forget the ``missing`` blobs and the progress of unfinished
    uploads.  The complete blobs left, id -> size."""
    try:
        conn = sqlite3.connect(copy)
        try:
            with conn:
                if not _has_blobs(conn):
                    return {}
                ids = [(blob_id,) for blob_id in missing]
                conn.executemany("DELETE FROM blob_refs WHERE blob_id = ?", ids)
                conn.executemany("DELETE FROM blobs WHERE blob_id = ?", ids)
                conn.execute(
                    "UPDATE blobs SET received = 0 WHERE complete = 0 AND received > 0"
                )
            return _complete_blobs(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"could not prepare the copy of the database: {exc}") from exc


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


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _sha256(member: bytes | Path) -> str:
    if isinstance(member, bytes):
        return hashlib.sha256(member).hexdigest()
    digest = hashlib.sha256()
    with open(member, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _open_blob(path: Path, size: int) -> IO[bytes] | None:
    """The blob's file, or None if it is gone or holds less than ``size`` bytes."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if os.fstat(f.fileno()).st_size < size:
        f.close()
        return None
    return f


def _blob_sha256(path: Path, size: int) -> str | None:
    """The SHA-256 of the blob's first ``size`` bytes (the store's truth, blob rule 1),
    or None if it is missing."""
    f = _open_blob(path, size)
    if f is None:
        return None
    with f:
        reader = _HashingReader(f, path)
        left = size
        while left and (chunk := reader.read(min(_CHUNK, left))):
            left -= len(chunk)
        return None if left else reader.hexdigest()


class _HashingReader:
    """Reads a blob file for ``tarfile``, hashing what it hands over."""

    def __init__(self, f: IO[bytes], path: Path) -> None:
        self.f, self.path = f, path
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        try:
            chunk = self.f.read(n)
        except OSError as exc:
            raise ConfigError(
                f"cannot read {self.path}: {exc.strerror or exc}"
            ) from exc
        self.digest.update(chunk)
        return chunk

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def _write_archive(
    out: Path,
    manifest: Manifest,
    members: dict[str, bytes | Path],
    blobs: dict[str, _Blob],
) -> None:
    encoded = msgspec.json.encode(manifest)
    if len(encoded) > _MAX_MANIFEST:
        raise ConfigError(
            f"{len(blobs)} attachment blobs are too many for one archive's manifest: "
            "back the blob directory up with the file system's tools (docs/deploy.md)"
        )
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    temporary = Path(name)  # mkstemp makes it 0600 whatever the umask
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz") as tar:
                _add(tar, MANIFEST, encoded)
                for member in (CONFIG, DATABASE, AUTHORITY, ADMIN_FILE):
                    if member in members:
                        _add(tar, member, members[member])
                for blob_id, blob in sorted(blobs.items()):
                    _add_blob(tar, blob_id, blob)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temporary, out)
    except OSError as exc:
        raise ConfigError(f"could not write {out}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    _sync_directory(out.parent)


def _add(tar: tarfile.TarFile, name: str, member: bytes | Path) -> None:
    info = tarfile.TarInfo(name)
    info.mode = 0o600
    info.mtime = int(time.time())
    if isinstance(member, bytes):
        info.size = len(member)
        tar.addfile(info, io.BytesIO(member))
    else:
        info.size = member.stat().st_size
        with open(member, "rb") as f:
            tar.addfile(info, f)


def _add_blob(tar: tarfile.TarFile, blob_id: str, blob: _Blob) -> None:
    """Stream exactly ``blob.size`` bytes into the tar, checking the first pass's hash.

    Raises ``_VanishedError`` before writing anything if the file is gone.  Once open it
    stays readable whatever pruning does: a file is unlinked, never truncated.
    """
    f = _open_blob(blob.path, blob.size)
    if f is None:
        raise _VanishedError(blob_id)
    with f:
        info = tarfile.TarInfo(_blob_member(blob_id))
        info.mode = 0o600
        info.mtime = int(time.time())
        info.size = blob.size
        reader = _HashingReader(f, blob.path)
        tar.addfile(info, reader)  # reads blob.size bytes, a block at a time
        if reader.hexdigest() != blob.sha256:
            raise StoreError(
                f"the attachment blob {blob.path} changed while it was backed up, "
                "which a complete blob never does: run the backup again"
            )


def _sync_directory(path: Path) -> None:
    with contextlib.suppress(
        OSError
    ):  # not every filesystem lets a directory be synced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- restore ----------------------------------------------------------------------------


def restore(archive: Path, data: DataDir, *, force: bool = False) -> Restored:
    """Restore ``archive`` into ``data``, a new or empty directory (or any, if ``force``).

    Raises ``ConfigError`` if a server is running on ``data``, ``data`` is not empty (and
    not ``force``), or the archive is not an intact Strongroom backup that this build can
    serve; ``StoreError`` if its database fails its integrity check.  Nothing is written
    into ``data`` unless the whole archive checks out.
    """
    if not archive.is_file():
        raise ConfigError(f"there is no backup file at {archive}")
    _refuse_running(data)
    target = data.path
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} exists and is not a directory")
    if target.is_dir() and not force and _occupied(target):
        raise ConfigError(
            f"{target} is not empty: restore into a new or empty directory, or pass "
            "--force to replace the organisation there"
        )
    # Stage inside an existing target (its owner may not own the parent); beside a new one,
    # so that it appears whole, in one rename.
    try:
        if target.is_dir():
            staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=target))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.restore-", dir=target.parent)
            )
    except OSError as exc:
        raise _cannot_write(target, exc) from exc
    try:
        manifest = _unpack(archive, staging)
        notes: list[str] = []
        config = _read_config(staging / CONFIG, archive)
        database = _database_place(config, notes)
        version, _, named = _inspect(staging / DATABASE, f"the database in {archive}")
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"{archive} holds schema version {version}, and this build knows only up "
                f"to {SCHEMA_VERSION}: restore it with the Strongroom that made it"
            )
        blobs = _blob_place(config, target, manifest, notes)
        _check_blobs(manifest, named, staging, archive, target / blobs, notes)
        if version < SCHEMA_VERSION:
            notes.append(f"run `strongroom migrate --data {target}` before serving")
        if AUTHORITY not in manifest.files and not (target / AUTHORITY).is_file():
            notes.append(
                f"the backup holds no authority key: copy authority.pem into {target} "
                "(mode 0600) before serving"
            )
        try:
            _install(staging, target, database, blobs)
        except OSError as exc:
            raise _cannot_write(target, exc) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Restored(manifest=manifest, notes=notes)


class _RunFile(msgspec.Struct):
    pid: int = 0


def _refuse_running(data: DataDir) -> None:
    try:
        pid = msgspec.json.decode(data.run_file.read_bytes(), type=_RunFile).pid
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return  # no run file, or not one a server wrote
    if pid <= 0:
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return  # a server that crashed left it behind
    except PermissionError:
        pass  # alive, and someone else's
    raise ConfigError(
        f"a server (pid {pid}) is running on {data.path}: stop it first; restore never "
        f"writes over a running server's data (if no server runs, delete {data.run_file})"
    )


def _occupied(path: Path) -> bool:
    return any(entry.name != "lost+found" for entry in path.iterdir())


def _unpack(archive: Path, staging: Path) -> Manifest:
    """Check every member against the manifest while writing it into ``staging``."""
    opened = False
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            opened = True
            return _check_members(tar, archive, staging)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        if not opened:
            raise ConfigError(
                f"{archive} is not a Strongroom backup "
                "(not a gzip-compressed tar archive)"
            ) from exc
        raise ConfigError(
            f"{archive} is damaged or truncated ({exc}): use another backup"
        ) from exc


def _check_members(tar: tarfile.TarFile, archive: Path, staging: Path) -> Manifest:
    manifest: Manifest | None = None
    seen: set[str] = set()
    for member in tar:
        name = member.name
        if manifest is None:
            if name != MANIFEST or not member.isreg() or member.size > _MAX_MANIFEST:
                raise ConfigError(f"{archive} is not a Strongroom backup (no manifest)")
            manifest = _read_manifest(tar, member, archive)
            continue
        if name.startswith("/") or ".." in name.split("/"):
            raise ConfigError(
                f"{archive} holds a member named {name!r}, which would land outside the "
                "data directory: refusing the whole archive"
            )
        expected = name in _REQUIRED + _OPTIONAL or _is_blob_member(name)
        if not expected or name not in manifest.files:
            raise ConfigError(
                f"{archive} holds an unexpected member {name!r}: refusing it"
            )
        if name in seen or not member.isreg():
            raise ConfigError(f"{archive} holds {name!r} twice or not as a plain file")
        seen.add(name)
        source = tar.extractfile(member)
        if source is None:  # pragma: no cover - isreg() was checked
            raise ConfigError(f"{archive}: {name!r} cannot be read")
        path = staging / name
        if path.parent != staging:  # a blob, in blobs/<id[:2]>/
            _make_directory(path.parent.parent)
            _make_directory(path.parent)
        if _copy_out(source, path) != manifest.files[name]:
            raise ConfigError(
                f"{archive} is damaged or was altered: {name} does not match the "
                "checksum in its manifest"
            )
    if manifest is None:
        raise ConfigError(f"{archive} is not a Strongroom backup (it is empty)")
    missing = sorted((set(manifest.files) | set(_REQUIRED)) - seen)
    if missing:
        raise ConfigError(f"{archive} is incomplete: {_some(missing)} missing")
    return manifest


def _make_directory(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise _cannot_write(path, exc) from exc


def _some(names: list[str]) -> str:
    """A list that may run to thousands of blobs, cut for a message."""
    shown = ", ".join(names[:3])
    return shown if len(names) <= 3 else f"{shown} and {len(names) - 3} more"


def _read_manifest(
    tar: tarfile.TarFile, member: tarfile.TarInfo, archive: Path
) -> Manifest:
    source = tar.extractfile(member)
    raw = source.read() if source is not None else b""
    try:
        manifest = msgspec.json.decode(raw, type=Manifest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"{archive} is not a Strongroom backup ({exc})") from exc
    if manifest.format not in _FORMATS:
        raise ConfigError(
            f"{archive} is a backup in format {manifest.format}; this build reads "
            f"formats up to {FORMAT}: restore it with the Strongroom that made it"
        )
    return manifest


def _copy_out(source: IO[bytes], path: Path) -> str:
    # Errors reading the archive propagate (the caller says "damaged"); errors writing
    # are the disk's, and say so.
    digest = hashlib.sha256()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise _cannot_write(path, exc) from exc
    with os.fdopen(fd, "wb") as f:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            try:
                f.write(chunk)
            except OSError as exc:
                raise _cannot_write(path, exc) from exc
        try:
            f.flush()
            os.fsync(f.fileno())
        except OSError as exc:
            raise _cannot_write(path, exc) from exc
    return digest.hexdigest()


def _cannot_write(path: Path, exc: OSError) -> ConfigError:
    return ConfigError(f"cannot write {path}: {exc.strerror or exc}")


def _read_config(path: Path, archive: Path) -> Config:
    # Read as written: environment overrides belong to the server that will run on it.
    try:
        return msgspec.convert(tomllib.loads(path.read_text()), Config)
    except (
        tomllib.TOMLDecodeError,
        msgspec.ValidationError,
        UnicodeDecodeError,
    ) as exc:
        raise ConfigError(
            f"the configuration in {archive} is malformed: {exc}"
        ) from exc


def _database_place(config: Config, notes: list[str]) -> Path:
    """Where, relative to the data directory, the configuration expects the database."""
    url = config.storage.database
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_absolute() and ".." not in path.parts:
            return path
    notes.append(
        f"the configuration's [storage] database does not name {DATABASE} in the data "
        f'directory: set it to "sqlite:///{DATABASE}" to serve the restored database'
    )
    return Path(DATABASE)


def _blob_place(
    config: Config, target: Path, manifest: Manifest, notes: list[str]
) -> Path:
    """Where, relative to the data directory, the blobs go (rule 4)."""
    if not blob_dir_outside(config):
        return Path(config.storage.blobs)
    if any(_is_blob_member(name) for name in manifest.files):
        notes.append(
            f"the configuration's [storage] blobs is {config.storage.blobs!r}, not a "
            "directory inside the data directory, so the attachments went into "
            f"{target / BLOBS}: set "
            f'blobs = "{BLOBS}" in strongroom.toml, or move them to where it points'
        )
    return Path(BLOBS)


def _check_blobs(
    manifest: Manifest,
    named: dict[str, int],
    staging: Path,
    archive: Path,
    place: Path,
    notes: list[str],
) -> None:
    """The blobs held must be the complete blobs the database names, at their sizes."""
    held = {
        name.rsplit("/", 1)[1]: staging / name
        for name in manifest.files
        if _is_blob_member(name)
    }
    if manifest.format == 1 and not held:
        if named:
            notes.append(
                f"the backup predates backups of attachments: copy the {len(named)} "
                f"blob files its messages name into {place} (as <id[:2]>/<id>), or "
                "their recipients cannot download them"
            )
        return
    unnamed = sorted(held.keys() - named.keys())
    if unnamed:
        raise ConfigError(
            f"{archive} holds attachment blobs its database does not name "
            f"({_some(unnamed)}): refusing it"
        )
    absent = sorted(named.keys() - held.keys())
    if absent:
        raise ConfigError(
            f"{archive} is incomplete: its database names attachment blobs it does "
            f"not hold ({_some(absent)})"
        )
    for blob_id, path in sorted(held.items()):
        if path.stat().st_size != named[blob_id]:
            raise ConfigError(
                f"{archive} is damaged or was altered: the attachment blob {blob_id} "
                f"is {path.stat().st_size} bytes, and its database says {named[blob_id]}"
            )


def _install(staging: Path, target: Path, database: Path, blobs: Path) -> None:
    """Move the checked files from ``staging`` into ``target``."""
    if database != Path(DATABASE):
        (staging / database).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / DATABASE, staging / database)
    if blobs != Path(BLOBS) and (staging / BLOBS).is_dir():
        # Through a neutral name: the place may lie inside "blobs/" itself.
        os.replace(staging / BLOBS, staging / ".blobs")
        (staging / blobs).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / ".blobs", staging / blobs)
    (staging / "logs").mkdir(exist_ok=True)
    os.chmod(staging, 0o700)
    if not target.exists():
        os.rename(staging, target)  # one step: the directory appears whole
        _sync_directory(target.parent)
        return
    for suffix in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            (target / f"{database}{suffix}").unlink()
    for path in sorted(staging.rglob("*")):
        if path.is_file():
            destination = target / path.relative_to(staging)
            destination.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.replace(path, destination)
    (target / "logs").mkdir(exist_ok=True)
    os.chmod(target, 0o700)
    _sync_directory(target)
