"""Taking a backup (rules 1 to 3 of the package)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Collection
from pathlib import Path
from typing import IO, NamedTuple

import msgspec

from strongroom import proto
from strongroom.errors import ConfigError, StoreError

from .._config import DataDir
from ._archive import (
    _ATTEMPTS,
    _CHUNK,
    _MAX_MANIFEST,
    ADMIN_FILE,
    AUTHORITY,
    CONFIG,
    DATABASE,
    FORMAT,
    MANIFEST,
    Manifest,
    _blob_member,
    _cannot_write,
    _complete_blobs,
    _has_blobs,
    _inspect,
    _sqlite_path,
    _sync_directory,
    _version,
)


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
