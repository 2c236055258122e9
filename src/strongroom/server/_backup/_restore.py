"""Restoring a backup (rules 4 and 5 of the package)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile
import tomllib
import zlib
from pathlib import Path
from typing import IO

import msgspec

from strongroom.errors import ConfigError

from .._config import Config, DataDir
from ..store import SCHEMA_VERSION
from ._archive import (
    _CHUNK,
    _FORMATS,
    _MAX_MANIFEST,
    _OPTIONAL,
    _REQUIRED,
    AUTHORITY,
    BLOBS,
    CONFIG,
    DATABASE,
    FORMAT,
    MANIFEST,
    Manifest,
    Restored,
    _cannot_write,
    _inspect,
    _is_blob_member,
    _sync_directory,
    blob_dir_outside,
)


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
