"""Versioned schema migrations.  A migration is appended, never edited once released."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Only", "statements"]


class Only(NamedTuple):
    """A statement for one backend alone (``"sqlite"`` or ``"postgresql"``): storage
    tuning that the other backend has no words for."""

    backend: str
    sql: str


# Each entry upgrades the schema from version i to i + 1.  Statements are portable SQL
# (SQLite and PostgreSQL) unless wrapped in ``Only``; BLOB is spelt per backend via the
# {blob} placeholder.
MIGRATIONS: list[list[str | Only]] = [
    [
        """CREATE TABLE users (
            user_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE activation_codes (
            code_id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users(user_id),
            password {blob} NOT NULL,
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL,
            failures INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL
        )""",
        "CREATE INDEX activation_codes_user ON activation_codes(user_id, created_at)",
        """CREATE TABLE activation_sessions (
            session_id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            code_id TEXT,
            shared {blob} NOT NULL,
            expires_at BIGINT NOT NULL,
            reason TEXT
        )""",
        """CREATE TABLE devices (
            device_id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users(user_id),
            name TEXT NOT NULL,
            ed25519 TEXT NOT NULL,
            curve25519 TEXT NOT NULL,
            certificate {blob} NOT NULL,
            created_at BIGINT NOT NULL,
            last_seen BIGINT,
            revoked_at BIGINT,
            revocation {blob},
            client_version TEXT NOT NULL DEFAULT '',
            next_seq BIGINT NOT NULL DEFAULT 0
        )""",  # next_seq: unused since 6 (device_seqs)
        "CREATE INDEX devices_user ON devices(user_id)",
        """CREATE TABLE one_time_keys (
            device_id TEXT NOT NULL,
            key_id TEXT NOT NULL,
            key TEXT NOT NULL,
            signature {blob} NOT NULL,
            fallback INTEGER NOT NULL,
            PRIMARY KEY (device_id, fallback, key_id)
        )""",
        """CREATE TABLE inbox (
            device_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            envelope_id {blob} NOT NULL,
            sender TEXT NOT NULL,
            at BIGINT NOT NULL,
            body {blob} NOT NULL,
            PRIMARY KEY (device_id, seq)
        )""",
        """CREATE TABLE sends (
            sender TEXT NOT NULL,
            envelope_id {blob} NOT NULL,
            at BIGINT NOT NULL,
            PRIMARY KEY (sender, envelope_id)
        )""",
        "CREATE INDEX sends_at ON sends(at)",
    ],
    # 2: groups.  A group message is one ciphertext for every member device: it is stored
    # once in shared_bodies and the inbox rows refer to it (body NULL).  Inbox rows may
    # expire (disappearing messages).  group_changes holds each group's signed membership
    # chain, opaque to the server but for its position.
    [
        """CREATE TABLE shared_bodies (
            sender TEXT NOT NULL,
            envelope_id {blob} NOT NULL,
            at BIGINT NOT NULL,
            body {blob} NOT NULL,
            PRIMARY KEY (sender, envelope_id)
        )""",
        """CREATE TABLE inbox_v2 (
            device_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            envelope_id {blob} NOT NULL,
            sender TEXT NOT NULL,
            at BIGINT NOT NULL,
            body {blob},
            expires_at BIGINT,
            PRIMARY KEY (device_id, seq)
        )""",
        """INSERT INTO inbox_v2(device_id, seq, envelope_id, sender, at, body)
            SELECT device_id, seq, envelope_id, sender, at, body FROM inbox""",
        "DROP TABLE inbox",
        "ALTER TABLE inbox_v2 RENAME TO inbox",
        "CREATE INDEX inbox_shared ON inbox(sender, envelope_id)",
        "CREATE INDEX inbox_expires ON inbox(expires_at) WHERE expires_at IS NOT NULL",
        """CREATE TABLE group_changes (
            group_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            entry {blob} NOT NULL,
            hash {blob} NOT NULL,
            at BIGINT NOT NULL,
            PRIMARY KEY (group_id, seq)
        )""",
    ],
    # 3: attachments.  The server keeps only a blob's metadata (its bytes are files in the
    # blob directory): who uploads it, how big it will be, how much has arrived.
    # blob_refs ties a blob to the messages that name it, so it lives while any inbox row
    # of such a message waits.  touched_at is the last upload progress, completion or
    # reference; orphaned_at is when pruning first found no inbox row waiting for it
    # (cleared when a send names it again).  Collection counts its grace from both.
    [
        """CREATE TABLE blobs (
            blob_id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            size BIGINT NOT NULL,
            received BIGINT NOT NULL DEFAULT 0,
            complete INTEGER NOT NULL DEFAULT 0,
            created_at BIGINT NOT NULL,
            completed_at BIGINT,
            touched_at BIGINT NOT NULL,
            orphaned_at BIGINT
        )""",
        "CREATE INDEX blobs_collect ON blobs(complete, touched_at)",
        """CREATE TABLE blob_refs (
            blob_id TEXT NOT NULL,
            sender TEXT NOT NULL,
            envelope_id {blob} NOT NULL,
            PRIMARY KEY (blob_id, sender, envelope_id)
        )""",
    ],
    # 4: fleet control.  The audit log (authority-signed, hash-chained entries appended by
    # compare-and-set on seq), the history of policy changes (the organisation's rules and
    # per-user overrides, one row per change, version growing across both), what each
    # device enforces and its wipe state, and the signed records of disabled users.
    [
        """CREATE TABLE audit_log (
            seq BIGINT PRIMARY KEY,
            entry {blob} NOT NULL,
            hash {blob} NOT NULL,
            at BIGINT NOT NULL
        )""",
        """CREATE TABLE policy_changes (
            version BIGINT PRIMARY KEY,
            user_id TEXT,
            key TEXT NOT NULL,
            value TEXT,
            cleared INTEGER NOT NULL DEFAULT 0,
            at BIGINT NOT NULL,
            actor TEXT NOT NULL
        )""",
        """CREATE TABLE device_fleet (
            device_id TEXT PRIMARY KEY,
            policy_version BIGINT,
            policy_at BIGINT,
            wipe_order {blob},
            wipe_ordered_at BIGINT,
            wiped_at BIGINT
        )""",
        """CREATE TABLE disabled_users (
            user_id TEXT PRIMARY KEY,
            record {blob} NOT NULL,
            at BIGINT NOT NULL
        )""",
    ],
    # 5: lawful-access escrow (opt-in).  The ceremony's public outcome (one row), the
    # sealed copies devices upload per (conversation, UTC day) with the ephemeral point
    # they used, who took part in each scope, requests and the custodians' partials.
    [
        """CREATE TABLE escrow_setup (
            id INTEGER PRIMARY KEY,
            public {blob} NOT NULL,
            commitments {blob} NOT NULL,
            custodians INTEGER NOT NULL,
            threshold INTEGER NOT NULL,
            token_hashes TEXT NOT NULL,
            at BIGINT NOT NULL
        )""",
        """CREATE TABLE escrow_copies (
            sender TEXT NOT NULL,
            message_id {blob} NOT NULL,
            sender_user TEXT NOT NULL,
            conversation TEXT NOT NULL,
            day TEXT NOT NULL,
            ephemeral {blob} NOT NULL,
            sealed {blob} NOT NULL,
            at BIGINT NOT NULL,
            PRIMARY KEY (sender, message_id)
        )""",
        "CREATE INDEX escrow_copies_scope ON escrow_copies(conversation, day)",
        """CREATE TABLE escrow_members (
            user_id TEXT NOT NULL,
            day TEXT NOT NULL,
            conversation TEXT NOT NULL,
            PRIMARY KEY (user_id, day, conversation)
        )""",
        """CREATE TABLE escrow_requests (
            request_id TEXT PRIMARY KEY,
            body {blob} NOT NULL,
            at BIGINT NOT NULL
        )""",
        """CREATE TABLE escrow_partials (
            request_id TEXT NOT NULL,
            custodian INTEGER NOT NULL,
            body {blob} NOT NULL,
            at BIGINT NOT NULL,
            PRIMARY KEY (request_id, custodian)
        )""",
    ],
    # 6: sequence counters in a narrow table of their own, a row per live device.  Every
    # message bumps its recipients' counters; in the wide ``devices`` row each bump
    # copied the certificate and, on PostgreSQL, left a dead row version that autovacuum
    # could not keep up with under group traffic (docs/performance.md, "Fan-out").  Here
    # an update fits in its page (fillfactor), so PostgreSQL makes it a HOT update that
    # needs no index entry and is pruned in place.  Revoking a device deletes its row,
    # so "has a counter" is "may receive".  ``devices.next_seq`` stays, unused.
    [
        """CREATE TABLE device_seqs (
            device_id TEXT PRIMARY KEY,
            next_seq BIGINT NOT NULL
        )""",
        """INSERT INTO device_seqs(device_id, next_seq)
            SELECT device_id, next_seq FROM devices WHERE revoked_at IS NULL""",
        Only(
            "postgresql",
            "ALTER TABLE device_seqs SET (fillfactor = 50, "
            "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000)",
        ),
        # every message adds inbox rows and every acknowledgement deletes them: vacuum
        # by the number of dead rows, not by a fraction of a table that may be small
        Only(
            "postgresql",
            "ALTER TABLE inbox SET (autovacuum_vacuum_scale_factor = 0, "
            "autovacuum_vacuum_threshold = 10000)",
        ),
    ],
]

SCHEMA_VERSION = len(MIGRATIONS)


def statements(version: int, backend: str, blob: str) -> list[str]:
    """The statements that take ``backend``'s schema from ``version`` to the next."""
    return [
        s.format(blob=blob) if isinstance(s, str) else s.sql
        for s in MIGRATIONS[version]
        if isinstance(s, str) or s.backend == backend
    ]
