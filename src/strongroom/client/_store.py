"""The device's local store: one SQLCipher database in the device home.

Rules:

1. The whole database file is encrypted (SQLCipher 4: AES-256, HMAC-SHA512 per page) under
   a 32-byte random key kept in ``device.key`` (mode 0600) beside it: as hex, or wrapped
   under a passcode (``_passcode``: Argon2id and AES-256-GCM).  The key itself never
   changes, so setting or removing a passcode touches nothing else.  A wiped home
   (``_wipe``) opens for nothing: every ``open`` says when and why it was wiped.
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

from ._passcode import DEFAULT_MAX_TRIES, DEFAULT_MIN_LENGTH, KdfParams, new_key_file
from ._passcode import is_protected as _is_protected
from ._passcode import open_secret as _open_secret
from ._wipe import DB_FILE, KEY_FILE, TRIES_FILE, WIPED_FILE, raise_if_wiped

__all__ = ["LocalStore", "Peer", "StoredMessage"]

# Version 1: what the first release created (kept exactly; later versions alter it).
_SCHEMA_V1 = [
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


# Each entry upgrades the local schema from version i + 1 to i + 2 (append only).
_UPGRADES: list[list[str]] = [
    [
        # conversations people use: kinds, replies, edits, expiry, files, delivery state
        "ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'text'",
        "ALTER TABLE messages ADD COLUMN reply_to BLOB",
        "ALTER TABLE messages ADD COLUMN edited_at INTEGER",
        "ALTER TABLE messages ADD COLUMN expires_at INTEGER",
        "ALTER TABLE messages ADD COLUMN file BLOB",
        "ALTER TABLE messages ADD COLUMN state TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX messages_id ON messages(message_id)",
        "CREATE INDEX messages_expiry ON messages(expires_at) WHERE expires_at IS NOT NULL",
        """CREATE TABLE reactions (
            message_id BLOB NOT NULL, user_id TEXT NOT NULL, emoji TEXT NOT NULL,
            at INTEGER NOT NULL, PRIMARY KEY (message_id, user_id, emoji))""",
        """CREATE TABLE receipts (
            message_id BLOB NOT NULL, user_id TEXT NOT NULL, kind TEXT NOT NULL,
            at INTEGER NOT NULL, PRIMARY KEY (message_id, user_id, kind))""",
        """CREATE TABLE conversations (
            conversation TEXT PRIMARY KEY, timer INTEGER,
            read_receipts INTEGER NOT NULL DEFAULT 1)""",
        # groups: verified chains, Megolm sessions, keys and messages not yet decided
        """CREATE TABLE group_entries (
            group_id TEXT NOT NULL, seq INTEGER NOT NULL, entry BLOB NOT NULL,
            PRIMARY KEY (group_id, seq))""",
        """CREATE TABLE outbound_groups (
            group_id TEXT PRIMARY KEY, pickle TEXT NOT NULL, shared BLOB NOT NULL)""",
        """CREATE TABLE inbound_groups (
            sender_device TEXT NOT NULL, session_id TEXT NOT NULL, group_id TEXT NOT NULL,
            sender_user TEXT NOT NULL, pickle TEXT NOT NULL,
            PRIMARY KEY (sender_device, session_id))""",
        """CREATE TABLE megolm_seen (
            session_id TEXT NOT NULL, message_index INTEGER NOT NULL,
            message_id BLOB NOT NULL, PRIMARY KEY (session_id, message_index))""",
        """CREATE TABLE pending (
            id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
            sender_device TEXT NOT NULL, data BLOB NOT NULL, at INTEGER NOT NULL)""",
    ],
    [
        # the chat app (strongroom.client._history, _session, _verification, _contacts):
        # full-text search over the decrypted history, kept in step by triggers
        """CREATE VIRTUAL TABLE messages_fts USING fts5(
            text, content='messages', content_rowid='rowid',
            tokenize='unicode61 remove_diacritics 2')""",
        """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts(rowid, text) VALUES (new.rowid, new.text); END""",
        """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, text)
            VALUES ('delete', old.rowid, old.text); END""",
        """CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, text)
            VALUES ('delete', old.rowid, old.text);
            INSERT INTO messages_fts(rowid, text) VALUES (new.rowid, new.text); END""",
        "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
        # what the person has seen of each conversation (unread counts)
        """CREATE TABLE read_marks (
            conversation TEXT PRIMARY KEY, upto INTEGER NOT NULL)""",
        # devices whose keys a person confirmed by comparing emoji or numbers
        """CREATE TABLE verified_devices (
            device_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, ed25519 TEXT NOT NULL,
            at INTEGER NOT NULL)""",
        # the organisation's directory as last fetched (names, for offline use)
        """CREATE TABLE contacts (
            user_id TEXT PRIMARY KEY, name TEXT NOT NULL, seen_at INTEGER NOT NULL)""",
        # what the person sent while the server could not be reached, in order
        """CREATE TABLE queued_sends (
            message_id BLOB PRIMARY KEY, conversation TEXT NOT NULL,
            content BLOB NOT NULL, created_at INTEGER NOT NULL)""",
    ],
]
LOCAL_SCHEMA_VERSION = 1 + len(_UPGRADES)


class Peer(msgspec.Struct, frozen=True):
    """Another device whose certificate verified under the pinned authority key."""

    device_id: str
    user: str
    ed25519: str
    curve25519: str
    name: str
    revoked: bool = False


class StoredMessage(msgspec.Struct, frozen=True):
    """A message as the device keeps it.  ``kind`` is ``text`` or ``file`` (``file``
    holds the encoded ``proto.FileRef``); ``state`` is the delivery state of our own
    messages: ``sending``, ``failed`` (refused by the server for good), ``sent``,
    ``delivered`` or ``read``."""

    message_id: bytes
    from_device: str
    from_user: str
    conversation: str
    sent_at: int
    received_at: int
    text: str
    outgoing: bool
    kind: str = "text"
    reply_to: bytes | None = None
    edited_at: int | None = None
    expires_at: int | None = None
    file: bytes | None = None
    state: str = ""


_MESSAGE_COLUMNS = (
    "message_id, from_device, from_user, conversation, sent_at, received_at, text, "
    "outgoing, kind, reply_to, edited_at, expires_at, file, state"
)


def _message(r: Any) -> StoredMessage:
    return StoredMessage(
        bytes(r[0]),
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        r[6],
        bool(r[7]),
        r[8],
        None if r[9] is None else bytes(r[9]),
        r[10],
        r[11],
        None if r[12] is None else bytes(r[12]),
        r[13],
    )


class LocalStore:
    """Sync access to the encrypted device database.  One per device process."""

    def __init__(
        self, home: Path, conn: Any, secret: bytes, protected: bool = False
    ) -> None:
        self.home = home
        self._conn = conn
        #: Whether ``device.key`` is wrapped under a passcode (as it was when opened).
        self.protected = protected
        self.pickle_key = hashlib.sha256(
            b"strongroom/v1/pickle-key\x00" + secret
        ).digest()

    # --- opening -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        home: Path,
        passcode: str | None = None,
        *,
        min_length: int = DEFAULT_MIN_LENGTH,
        max_tries: int = DEFAULT_MAX_TRIES,
        kdf: KdfParams | None = None,
    ) -> LocalStore:
        """Create a new, empty store in ``home``, protected by ``passcode`` if given.

        A home that was wiped may be used again; its wipe record goes.  Raises
        ``ConfigError`` if a store exists, ``ClientError`` if the passcode is too short.
        """
        secret = secrets.token_bytes(32)
        contents = new_key_file(
            secret, passcode, min_length=min_length, max_tries=max_tries, params=kdf
        )
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        key_path = home / KEY_FILE
        if key_path.exists() or (home / DB_FILE).exists():
            raise ConfigError(f"{home} already holds a device; use another --home")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(contents)
            f.flush()
            os.fsync(f.fileno())
        (home / WIPED_FILE).unlink(missing_ok=True)
        (home / TRIES_FILE).unlink(missing_ok=True)
        return cls._open(home, secret, passcode is not None)

    @classmethod
    def open(cls, home: Path, passcode: str | None = None) -> LocalStore:
        """Open the store in ``home``; ``passcode`` opens a protected one (and is
        ignored by an unprotected one).

        Raises ``DeviceWipedError``, ``NotActivatedError`` if there is no device,
        ``PasscodeRequiredError``, ``WrongPasscodeError`` (counted: enough of them wipe
        the device, and then ``DeviceWipedError``), ``ConfigError`` if it is damaged.
        """
        raise_if_wiped(home)
        key_path = home / KEY_FILE
        if not key_path.exists() or not (home / DB_FILE).exists():
            raise NotActivatedError(
                f"no activated device in {home}: run `strongroom device activate` first"
            )
        protected = _is_protected(home)
        secret = _open_secret(home, passcode)
        store = cls._open(home, secret, protected)
        if store.get_meta("device_id") is None:
            raise NotActivatedError(f"the device in {home} never finished activating")
        return store

    @classmethod
    def _open(cls, home: Path, secret: bytes, protected: bool) -> LocalStore:
        conn = sqlcipher3.connect(str(home / DB_FILE), isolation_level=None)
        conn.execute(f"PRAGMA key = \"x'{secret.hex()}'\"")
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            _upgrade(conn)
        except sqlcipher3.DatabaseError as exc:
            conn.close()
            raise ConfigError(f"{home / DB_FILE} does not open with its key") from exc
        os.chmod(home / DB_FILE, 0o600)
        return cls(home, conn, secret, protected)

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
            f"INSERT OR IGNORE INTO messages({_MESSAGE_COLUMNS}) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                message.message_id,
                message.from_device,
                message.from_user,
                message.conversation,
                message.sent_at,
                message.received_at,
                message.text,
                int(message.outgoing),
                message.kind,
                message.reply_to,
                message.edited_at,
                message.expires_at,
                message.file,
                message.state,
            ),
        )

    def messages(self, conversation: str | None = None) -> list[StoredMessage]:
        query = f"SELECT {_MESSAGE_COLUMNS} FROM messages"
        params: tuple[str, ...] = ()
        if conversation is not None:
            query += " WHERE conversation=?"
            params = (conversation,)
        rows = self._conn.execute(query + " ORDER BY sent_at, rowid", params).fetchall()
        return [_message(r) for r in rows]

    def get_message(self, message_id: bytes) -> StoredMessage | None:
        row = self._conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE message_id=?",
            (message_id,),
        ).fetchone()
        return None if row is None else _message(row)

    def edit_message(self, message_id: bytes, text: str, at: int) -> None:
        self._conn.execute(
            "UPDATE messages SET text=?, edited_at=? WHERE message_id=?",
            (text, at, message_id),
        )

    def set_state(self, message_id: bytes, state: str) -> None:
        """Move an own message's delivery state forward (never back)."""
        order = ("", "sending", "failed", "sent", "delivered", "read")
        current = self._conn.execute(
            "SELECT state FROM messages WHERE message_id=? AND outgoing=1",
            (message_id,),
        ).fetchone()
        if current is not None and order.index(state) > order.index(current[0]):
            self._conn.execute(
                "UPDATE messages SET state=? WHERE message_id=? AND outgoing=1",
                (state, message_id),
            )

    def react(
        self, message_id: bytes, user: str, emoji: str, at: int, remove: bool
    ) -> None:
        if remove:
            self._conn.execute(
                "DELETE FROM reactions WHERE message_id=? AND user_id=? AND emoji=?",
                (message_id, user, emoji),
            )
        else:
            self._conn.execute(
                "INSERT OR IGNORE INTO reactions VALUES (?, ?, ?, ?)",
                (message_id, user, emoji, at),
            )

    def reactions(self, message_id: bytes) -> list[tuple[str, str]]:
        """(user, emoji), oldest first."""
        rows = self._conn.execute(
            "SELECT user_id, emoji FROM reactions WHERE message_id=? ORDER BY at",
            (message_id,),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def add_receipt(self, message_id: bytes, user: str, kind: str, at: int) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO receipts VALUES (?, ?, ?, ?)",
            (message_id, user, kind, at),
        )

    def receipts(self, message_id: bytes) -> list[tuple[str, str]]:
        """(user, kind) for one of our messages."""
        rows = self._conn.execute(
            "SELECT user_id, kind FROM receipts WHERE message_id=? ORDER BY at",
            (message_id,),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def purge_expired(self, now: int, sent_before: int | None = None) -> int:
        """Delete messages past their expiry (and, with ``sent_before``, every message
        sent before it: the policy's retention), with what hangs on them; returns how
        many."""
        doomed = [
            bytes(r[0])
            for r in self._conn.execute(
                "SELECT message_id FROM messages WHERE expires_at <= ? OR sent_at < ?",
                (now, -1 if sent_before is None else sent_before),
            ).fetchall()
        ]
        for message_id in doomed:
            for table in ("messages", "reactions", "receipts"):
                self._conn.execute(
                    f"DELETE FROM {table} WHERE message_id=?", (message_id,)
                )
        return len(doomed)

    # --- conversation settings -------------------------------------------------------------

    def conversation_settings(self, conversation: str) -> tuple[int | None, bool]:
        """(disappearing timer in seconds or None, whether to send read receipts)."""
        row = self._conn.execute(
            "SELECT timer, read_receipts FROM conversations WHERE conversation=?",
            (conversation,),
        ).fetchone()
        return (None, True) if row is None else (row[0], bool(row[1]))

    def set_timer(self, conversation: str, seconds: int | None) -> None:
        self._conn.execute(
            "INSERT INTO conversations(conversation, timer) VALUES (?, ?) "
            "ON CONFLICT(conversation) DO UPDATE SET timer=excluded.timer",
            (conversation, seconds),
        )

    def set_read_receipts(self, conversation: str, on: bool) -> None:
        self._conn.execute(
            "INSERT INTO conversations(conversation, read_receipts) VALUES (?, ?) "
            "ON CONFLICT(conversation) DO UPDATE SET read_receipts=excluded.read_receipts",
            (conversation, int(on)),
        )

    # --- groups ------------------------------------------------------------------------------

    def put_group_entry(self, group: str, seq: int, entry: bytes) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO group_entries VALUES (?, ?, ?)", (group, seq, entry)
        )

    def group_entries(self) -> dict[str, list[bytes]]:
        """Every stored chain, by group, oldest entry first."""
        chains: dict[str, list[bytes]] = {}
        for group, entry in self._conn.execute(
            "SELECT group_id, entry FROM group_entries ORDER BY group_id, seq"
        ).fetchall():
            chains.setdefault(group, []).append(bytes(entry))
        return chains

    def outbound_group(self, group: str) -> tuple[str, bytes] | None:
        """(session pickle, encoded audience) of our current session for ``group``."""
        row = self._conn.execute(
            "SELECT pickle, shared FROM outbound_groups WHERE group_id=?", (group,)
        ).fetchone()
        return None if row is None else (row[0], bytes(row[1]))

    def put_outbound_group(self, group: str, pickle: str, shared: bytes) -> None:
        self._conn.execute(
            "INSERT INTO outbound_groups VALUES (?, ?, ?) ON CONFLICT(group_id) "
            "DO UPDATE SET pickle=excluded.pickle, shared=excluded.shared",
            (group, pickle, shared),
        )

    def put_inbound_group(
        self,
        sender_device: str,
        session_id: str,
        group: str,
        sender_user: str,
        pickle: str,
    ) -> None:
        self._conn.execute(
            "INSERT INTO inbound_groups VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(sender_device, session_id) DO UPDATE SET pickle=excluded.pickle",
            (sender_device, session_id, group, sender_user, pickle),
        )

    def inbound_group(
        self, sender_device: str, session_id: str
    ) -> tuple[str, str, str] | None:
        """(group, sender user, pickle) of a session a member device shared with us."""
        row = self._conn.execute(
            "SELECT group_id, sender_user, pickle FROM inbound_groups "
            "WHERE sender_device=? AND session_id=?",
            (sender_device, session_id),
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def megolm_seen(self, session_id: str, index: int) -> bytes | None:
        """The message id first read at this session's index, if any (replay guard)."""
        row = self._conn.execute(
            "SELECT message_id FROM megolm_seen WHERE session_id=? AND message_index=?",
            (session_id, index),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def mark_megolm_seen(self, session_id: str, index: int, message_id: bytes) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO megolm_seen VALUES (?, ?, ?)",
            (session_id, index, message_id),
        )

    def add_pending(self, kind: str, sender_device: str, data: bytes, at: int) -> None:
        """Keep something that cannot be decided yet (a room key whose chain must be
        fetched, a group message whose key has not arrived)."""
        self._conn.execute(
            "INSERT INTO pending(kind, sender_device, data, at) VALUES (?, ?, ?, ?)",
            (kind, sender_device, data, at),
        )

    def pending(self, kind: str) -> list[tuple[int, str, bytes, int]]:
        rows = self._conn.execute(
            "SELECT id, sender_device, data, at FROM pending WHERE kind=? ORDER BY id",
            (kind,),
        ).fetchall()
        return [(r[0], r[1], bytes(r[2]), r[3]) for r in rows]

    def remove_pending(self, pending_id: int) -> None:
        self._conn.execute("DELETE FROM pending WHERE id=?", (pending_id,))

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


def _upgrade(conn: Any) -> None:
    """Bring the local schema to this version, one committed step at a time."""
    for statement in _SCHEMA_V1:
        conn.execute(statement)
    row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    version = int(bytes(row[0]).decode()) if row else 1
    if version > LOCAL_SCHEMA_VERSION:
        raise ConfigError(
            f"this device's store is from a newer Strongroom (schema {version}); "
            "upgrade the app"
        )
    for number in range(version, LOCAL_SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        for statement in _UPGRADES[number - 1]:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO meta(key, value) VALUES ('schema', ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (str(number + 1).encode(),),
        )
        conn.execute("COMMIT")
