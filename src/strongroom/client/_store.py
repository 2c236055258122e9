"""The device's local store: one SQLCipher database in the device home.

Rules:

1. The whole database file is encrypted (SQLCipher 4: AES-256, HMAC-SHA512 per page) under
   a 32-byte random key kept in ``device.key`` (mode 0600) beside it.  A later policy can
   wrap that key under a passcode; nothing else changes.
2. vodozemac pickles are additionally encrypted by vodozemac under a key derived from the
   same secret (it insists on one), so an account never exists in plaintext on disk.
3. Every change that belongs together commits together (``transaction()``): a decrypted
   message, the session state that decrypted it and the replay counters, so a crash can
   neither lose a message nor let a replay through.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import sqlcipher3

from strongroom.errors import ConfigError, NotActivatedError

__all__ = ["LocalStore", "Peer", "StoredMessage"]

KEY_FILE = "device.key"
DB_FILE = "device.db"

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    """CREATE TABLE IF NOT EXISTS peers (
        device_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, ed25519 TEXT NOT NULL,
        curve25519 TEXT NOT NULL, name TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS sessions (
        session_id TEXT PRIMARY KEY, peer_device TEXT NOT NULL, pickle TEXT NOT NULL,
        last_used INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS sessions_peer ON sessions(peer_device, last_used)",
    """CREATE TABLE IF NOT EXISTS counters (
        peer_device TEXT PRIMARY KEY, sent INTEGER NOT NULL DEFAULT 0,
        received INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS seen (
        sender_device TEXT NOT NULL, message_id BLOB NOT NULL, at INTEGER NOT NULL,
        PRIMARY KEY (sender_device, message_id))""",
    """CREATE TABLE IF NOT EXISTS messages (
        message_id BLOB NOT NULL, from_device TEXT NOT NULL, from_user TEXT NOT NULL,
        conversation TEXT NOT NULL, sent_at INTEGER NOT NULL, received_at INTEGER NOT NULL,
        text TEXT NOT NULL, outgoing INTEGER NOT NULL,
        PRIMARY KEY (from_device, message_id))""",
    "CREATE INDEX IF NOT EXISTS messages_conv ON messages(conversation, sent_at)",
    """CREATE TABLE IF NOT EXISTS outbox (
        message_id BLOB PRIMARY KEY, frame BLOB NOT NULL, created_at INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS warnings (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, text TEXT NOT NULL)""",
]


class Peer(msgspec.Struct, frozen=True):
    """Another device whose certificate verified under the pinned authority key."""

    device_id: str
    user: str
    ed25519: str
    curve25519: str
    name: str
    revoked: bool = False


class StoredMessage(msgspec.Struct, frozen=True):
    message_id: bytes
    from_device: str
    from_user: str
    conversation: str
    sent_at: int
    received_at: int
    text: str
    outgoing: bool


class LocalStore:
    """Sync access to the encrypted device database.  One per device process."""

    def __init__(self, home: Path, conn: Any, secret: bytes) -> None:
        self.home = home
        self._conn = conn
        self.pickle_key = hashlib.sha256(
            b"strongroom/v1/pickle-key\x00" + secret
        ).digest()

    # --- opening -------------------------------------------------------------------------

    @classmethod
    def create(cls, home: Path) -> LocalStore:
        """Create a new, empty store in ``home``.  Raises ``ConfigError`` if one exists."""
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        key_path = home / KEY_FILE
        if key_path.exists() or (home / DB_FILE).exists():
            raise ConfigError(f"{home} already holds a device; use another --home")
        secret = secrets.token_bytes(32)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret.hex() + "\n")
        return cls._open(home, secret)

    @classmethod
    def open(cls, home: Path) -> LocalStore:
        """Open the store in ``home``.  Raises ``NotActivatedError`` if there is none."""
        key_path = home / KEY_FILE
        if not key_path.exists() or not (home / DB_FILE).exists():
            raise NotActivatedError(
                f"no activated device in {home}: run `strongroom device activate` first"
            )
        try:
            secret = bytes.fromhex(key_path.read_text().strip())
        except ValueError as exc:
            raise ConfigError(f"{key_path} is damaged") from exc
        store = cls._open(home, secret)
        if store.get_meta("device_id") is None:
            raise NotActivatedError(f"the device in {home} never finished activating")
        return store

    @classmethod
    def _open(cls, home: Path, secret: bytes) -> LocalStore:
        conn = sqlcipher3.connect(str(home / DB_FILE), isolation_level=None)
        conn.execute(f"PRAGMA key = \"x'{secret.hex()}'\"")
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            for statement in _SCHEMA:
                conn.execute(statement)
        except sqlcipher3.DatabaseError as exc:
            conn.close()
            raise ConfigError(f"{home / DB_FILE} does not open with its key") from exc
        os.chmod(home / DB_FILE, 0o600)
        return cls(home, conn, secret)

    def close(self) -> None:
        self._conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside commits together or not at all."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # --- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str) -> bytes | None:
        row = self._conn.execute(
            "SELECT value FROM meta WHERE key=?", (key,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def set_meta(self, key: str, value: bytes) -> None:
        self._conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def meta_text(self, key: str) -> str:
        value = self.get_meta(key)
        if value is None:
            raise NotActivatedError(f"the device store lacks {key!r}")
        return value.decode()

    # --- peers -----------------------------------------------------------------------------

    def put_peer(self, peer: Peer) -> None:
        self._conn.execute(
            "INSERT INTO peers(device_id, user_id, ed25519, curve25519, name, revoked) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET "
            "revoked=MAX(revoked, excluded.revoked), name=excluded.name",
            (
                peer.device_id,
                peer.user,
                peer.ed25519,
                peer.curve25519,
                peer.name,
                peer.revoked,
            ),
        )

    def get_peer(self, device_id: str) -> Peer | None:
        row = self._conn.execute(
            "SELECT device_id, user_id, ed25519, curve25519, name, revoked FROM peers "
            "WHERE device_id=?",
            (device_id,),
        ).fetchone()
        if row is None:
            return None
        return Peer(row[0], row[1], row[2], row[3], row[4], bool(row[5]))

    # --- sessions --------------------------------------------------------------------------

    def sessions_for(self, peer_device: str) -> list[tuple[str, str]]:
        """(session id, pickle), most recently used first."""
        rows = self._conn.execute(
            "SELECT session_id, pickle FROM sessions WHERE peer_device=? "
            "ORDER BY last_used DESC",
            (peer_device,),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def put_session(
        self, session_id: str, peer_device: str, pickle: str, at: int
    ) -> None:
        self._conn.execute(
            "INSERT INTO sessions(session_id, peer_device, pickle, last_used) VALUES (?,?,?,?) "
            "ON CONFLICT(session_id) DO UPDATE SET pickle=excluded.pickle, "
            "last_used=excluded.last_used",
            (session_id, peer_device, pickle, at),
        )

    # --- counters and replay protection -------------------------------------------------------

    def next_sent_counter(self, peer_device: str) -> int:
        self._conn.execute(
            "INSERT INTO counters(peer_device, sent) VALUES (?, 1) "
            "ON CONFLICT(peer_device) DO UPDATE SET sent = sent + 1",
            (peer_device,),
        )
        row = self._conn.execute(
            "SELECT sent FROM counters WHERE peer_device=?", (peer_device,)
        ).fetchone()
        return int(row[0])

    def received_counter(self, peer_device: str) -> int:
        row = self._conn.execute(
            "SELECT received FROM counters WHERE peer_device=?", (peer_device,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def set_received_counter(self, peer_device: str, counter: int) -> None:
        self._conn.execute(
            "INSERT INTO counters(peer_device, received) VALUES (?, ?) "
            "ON CONFLICT(peer_device) DO UPDATE SET received = excluded.received",
            (peer_device, counter),
        )

    def seen(self, sender_device: str, message_id: bytes) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM seen WHERE sender_device=? AND message_id=?",
            (sender_device, message_id),
        ).fetchone()
        return row is not None

    def mark_seen(self, sender_device: str, message_id: bytes, at: int) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO seen(sender_device, message_id, at) VALUES (?, ?, ?)",
            (sender_device, message_id, at),
        )

    # --- messages, outbox, warnings -------------------------------------------------------------

    def add_message(self, message: StoredMessage) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO messages(message_id, from_device, from_user, conversation, "
            "sent_at, received_at, text, outgoing) VALUES (?,?,?,?,?,?,?,?)",
            (
                message.message_id,
                message.from_device,
                message.from_user,
                message.conversation,
                message.sent_at,
                message.received_at,
                message.text,
                int(message.outgoing),
            ),
        )

    def messages(self, conversation: str | None = None) -> list[StoredMessage]:
        query = (
            "SELECT message_id, from_device, from_user, conversation, sent_at, received_at, "
            "text, outgoing FROM messages"
        )
        params: tuple[str, ...] = ()
        if conversation is not None:
            query += " WHERE conversation=?"
            params = (conversation,)
        rows = self._conn.execute(query + " ORDER BY sent_at, rowid", params).fetchall()
        return [
            StoredMessage(bytes(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]))
            for r in rows
        ]

    def put_outbox(self, message_id: bytes, frame: bytes, at: int) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO outbox(message_id, frame, created_at) VALUES (?, ?, ?)",
            (message_id, frame, at),
        )

    def outbox(self) -> list[tuple[bytes, bytes]]:
        rows = self._conn.execute(
            "SELECT message_id, frame FROM outbox ORDER BY created_at, rowid"
        ).fetchall()
        return [(bytes(r[0]), bytes(r[1])) for r in rows]

    def remove_outbox(self, message_id: bytes) -> None:
        self._conn.execute("DELETE FROM outbox WHERE message_id=?", (message_id,))

    def add_warning(self, at: int, text: str) -> None:
        self._conn.execute("INSERT INTO warnings(at, text) VALUES (?, ?)", (at, text))

    def warnings(self) -> list[tuple[int, str]]:
        rows = self._conn.execute(
            "SELECT at, text FROM warnings ORDER BY id"
        ).fetchall()
        return [(int(r[0]), r[1]) for r in rows]
