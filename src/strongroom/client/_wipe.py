"""Wiping a device home: what a wipe removes, and the marker it leaves behind.

Rules:

1. The marker (``WIPED``) is written first, the files go after.  A wipe cut short (a
   crash, a pulled battery) therefore still leaves a device that refuses every command,
   and the next attempt to open the store finishes the deletion (``raise_if_wiped``).
2. The store key goes before the store: ``device.key`` is overwritten with random bytes,
   synced and unlinked, and only then the database and its journals.  Once the key is
   gone the database is SQLCipher ciphertext under a key nobody holds, wherever copies of
   its pages survive.  Overwriting in place is best effort: flash storage, copy-on-write
   file systems and backups may keep old blocks.  What matters is that no copy of the
   key survives on the device's own file system as a file.
3. Only what belongs to the store is removed: the names below and the partial transfer
   files (``.<blob>.part`` / ``.<blob>.open``) directly in the home.  A home may be a
   directory a person also uses, so nothing else is touched, and files saved elsewhere
   (``--save-dir``, the chat app's downloads folder) stay where the person put them.
4. Both the passcode counter and a remote wipe order from IT call ``wipe_home``; it is
   idempotent and never raises for a file that is already gone.
"""

from __future__ import annotations

import datetime
import os
import re
import secrets
from pathlib import Path
from typing import Annotated

import msgspec

from strongroom.errors import DeviceWipedError

__all__ = [
    "DB_FILE",
    "KEY_FILE",
    "TRIES_FILE",
    "WIPED_FILE",
    "WipeRecord",
    "erase_store",
    "raise_if_wiped",
    "replace_file",
    "wipe_home",
    "wiped",
]

KEY_FILE = "device.key"
DB_FILE = "device.db"
TRIES_FILE = "passcode.tries"
WIPED_FILE = "WIPED"
#: Where a new key file is written before it replaces ``device.key``.
KEY_FILE_NEW = "device.key.new"

_SECRET_FILES = (KEY_FILE, KEY_FILE_NEW)
_STORE_FILES = (
    DB_FILE,
    DB_FILE + "-wal",
    DB_FILE + "-shm",
    DB_FILE + "-journal",
    TRIES_FILE,
)
#: 9999-12-31, so that every stored time can be shown.
_LAST_MS = 253_402_300_799_999
_LEFTOVER = re.compile(r"^(\.[a-z2-7]{26}\.(part|open)|.+\.pickle)$")


class WipeRecord(msgspec.Struct, frozen=True):
    """What the ``WIPED`` marker says: when (Unix ms) and why the device was wiped."""

    at_ms: int
    reason: str

    def sentence(self) -> str:
        """The line every later command shows."""
        when = datetime.datetime.fromtimestamp(self.at_ms / 1000, datetime.UTC)
        return (
            f"this device was wiped ({self.reason}) at "
            f"{when:%Y-%m-%d %H:%M:%S} UTC; activate it again with a new code from IT"
        )


class _Marker(msgspec.Struct, frozen=True):
    version: int
    at_ms: Annotated[int, msgspec.Meta(ge=0, le=_LAST_MS)]
    reason: str
    at: str = ""  # the same instant for a person reading the file; never read back


def wipe_home(home: Path, reason: str, at_ms: int) -> None:
    """Wipe the device in ``home``: leave a ``WIPED`` marker saying when and why, then
    destroy the store key and delete the store and what hangs on it (see the rules).

    ``reason`` is shown to the person later ("too many wrong passcodes", "wipe order from
    IT").  Raises ``OSError`` only if the marker itself cannot be written.
    """
    at_ms = min(max(at_ms, 0), _LAST_MS)
    stamp = datetime.datetime.fromtimestamp(at_ms / 1000, datetime.UTC)
    marker = _Marker(1, at_ms, reason, stamp.isoformat(timespec="seconds"))
    replace_file(home / WIPED_FILE, msgspec.json.encode(marker) + b"\n")
    erase_store(home)


def wiped(home: Path) -> WipeRecord | None:
    """The wipe record of ``home``, or ``None`` if it was never wiped.

    A marker that cannot be read still means "wiped": its file's time stands in for the
    time and the reason says it is unknown.
    """
    path = home / WIPED_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return WipeRecord(0, "reason unknown: the wipe record cannot be read")
    try:
        marker = msgspec.json.decode(data, type=_Marker)
        return WipeRecord(marker.at_ms, marker.reason)
    except (msgspec.DecodeError, msgspec.ValidationError):
        at_ms = int(path.stat().st_mtime * 1000)
        return WipeRecord(at_ms, "reason unknown: the wipe record is damaged")


def raise_if_wiped(home: Path) -> None:
    """Raise ``DeviceWipedError`` if ``home`` was wiped, first finishing the deletion in
    case the wipe was cut short (rule 1)."""
    record = wiped(home)
    if record is None:
        return
    erase_store(home)
    raise DeviceWipedError(record.sentence(), record.reason, record.at_ms)


def erase_store(home: Path) -> None:
    """Destroy the key, then delete the store files and leftovers (rules 2 and 3)."""
    for name in _SECRET_FILES:
        _shred(home / name)
    for name in _STORE_FILES:
        (home / name).unlink(missing_ok=True)
    try:
        names = [entry.name for entry in os.scandir(home) if entry.is_file()]
    except OSError:
        names = []
    for name in names:
        if _LEFTOVER.match(name):
            _shred(home / name)
    _sync_directory(home)


def _shred(path: Path) -> None:
    """Overwrite a file with random bytes, sync, unlink (best effort: rule 2)."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    except OSError:
        path.unlink(missing_ok=True)
        return
    try:
        size = os.fstat(fd).st_size
        done = 0
        while done < size:
            done += os.write(fd, secrets.token_bytes(min(size - done, 1 << 20)))
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
    path.unlink(missing_ok=True)


def replace_file(path: Path, data: bytes, *, shred_old: bool = False) -> None:
    """Give ``path`` (mode 0600) the contents ``data`` atomically: a crash leaves the old
    file or the new one, never a mix.  With ``shred_old`` the old contents are overwritten
    with random bytes once the new file is in place (through a descriptor kept open, so
    the old contents are gone only after the new ones are safe)."""
    new = path.with_name(path.name + ".new")
    new.unlink(missing_ok=True)
    with open(os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    old: int | None = None
    if shred_old:
        try:
            old = os.open(path, os.O_WRONLY)
        except OSError:
            old = None
    try:
        os.replace(new, path)
        _sync_directory(path.parent)
        if old is not None:
            size = os.fstat(old).st_size
            os.pwrite(old, secrets.token_bytes(size), 0)
            os.fsync(old)
    finally:
        if old is not None:
            os.close(old)


def _sync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
