"""Fleet control in the store: the audit log, policy history, device fleet state, disabled
users.  None of it is on the hot path, so it is written once, in portable SQL, over two
primitives each backend provides: ``_sql_rows`` (a read) and ``_sql_exec`` (one
statement, atomic by itself; a taken primary key raises ``ConflictError``).

The audit log and the policy history are appended by compare-and-set: the caller names the
position it read as free (``seq``, ``version``), and the primary key refuses a second
writer at that position, so two server nodes never interleave.
"""

from __future__ import annotations

from typing import Any

from ._rows import AuditRecord, FleetRow, PolicyChangeRow

__all__ = ["FleetQueries"]

_FLEET = "device_id, policy_version, policy_at, wipe_order, wipe_ordered_at, wiped_at"


def _blob(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _fleet(r: Any) -> FleetRow:
    return FleetRow(r[0], r[1], r[2], _blob(r[3]), r[4], r[5])


class FleetQueries:
    """Mixed into both stores; see the module docstring."""

    async def _sql_rows(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        raise NotImplementedError

    async def _sql_exec(self, sql: str, args: tuple[Any, ...]) -> None:
        raise NotImplementedError

    # --- audit log -----------------------------------------------------------------------

    async def audit_head(self) -> tuple[int, bytes] | None:
        """The last entry's (seq, hash), or None for an empty log."""
        rows = await self._sql_rows(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", ()
        )
        return None if not rows else (rows[0][0], bytes(rows[0][1]))

    async def append_audit(self, record: AuditRecord) -> None:
        """Raises ``ConflictError`` if another writer took ``record.seq``."""
        await self._sql_exec(
            "INSERT INTO audit_log(seq, entry, hash, at) VALUES (?, ?, ?, ?)",
            (record.seq, record.entry, record.hash, record.at),
        )

    async def audit_records(
        self, after: int = -1, limit: int = 1000
    ) -> list[AuditRecord]:
        rows = await self._sql_rows(
            "SELECT seq, entry, hash, at FROM audit_log WHERE seq > ? "
            "ORDER BY seq LIMIT ?",
            (after, limit),
        )
        return [AuditRecord(r[0], bytes(r[1]), bytes(r[2]), r[3]) for r in rows]

    # --- policy --------------------------------------------------------------------------

    async def add_policy_change(self, row: PolicyChangeRow) -> None:
        """Raises ``ConflictError`` if another writer took ``row.version``."""
        await self._sql_exec(
            "INSERT INTO policy_changes(version, user_id, key, value, cleared, at, actor) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                row.version,
                row.user,
                row.key,
                row.value,
                int(row.cleared),
                row.at,
                row.actor,
            ),
        )

    async def policy_changes(self) -> list[PolicyChangeRow]:
        rows = await self._sql_rows(
            "SELECT version, user_id, key, value, at, actor, cleared "
            "FROM policy_changes ORDER BY version",
            (),
        )
        return [
            PolicyChangeRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]))
            for r in rows
        ]

    # --- devices as IT sees them ---------------------------------------------------------

    async def fleet_row(self, device_id: str) -> FleetRow | None:
        rows = await self._sql_rows(
            f"SELECT {_FLEET} FROM device_fleet WHERE device_id=?", (device_id,)
        )
        return _fleet(rows[0]) if rows else None

    async def fleet_rows(self) -> dict[str, FleetRow]:
        rows = await self._sql_rows(f"SELECT {_FLEET} FROM device_fleet", ())
        return {r[0]: _fleet(r) for r in rows}

    async def set_enforced(self, device_id: str, version: int, at: int) -> None:
        """The device reported enforcing policy ``version`` (never moves backwards)."""
        await self._sql_exec(
            "INSERT INTO device_fleet(device_id, policy_version, policy_at) "
            "VALUES (?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET "
            "policy_version=excluded.policy_version, policy_at=excluded.policy_at "
            "WHERE device_fleet.policy_version IS NULL "
            "OR device_fleet.policy_version < excluded.policy_version",
            (device_id, version, at),
        )

    async def order_wipe(self, device_id: str, order: bytes, at: int) -> None:
        await self._sql_exec(
            "INSERT INTO device_fleet(device_id, wipe_order, wipe_ordered_at) "
            "VALUES (?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET "
            "wipe_order=excluded.wipe_order, wipe_ordered_at=excluded.wipe_ordered_at",
            (device_id, order, at),
        )

    async def wipe_done(self, device_id: str, at: int) -> None:
        await self._sql_exec(
            "UPDATE device_fleet SET wiped_at=? WHERE device_id=? AND wiped_at IS NULL",
            (at, device_id),
        )

    # --- disabled users ------------------------------------------------------------------

    async def disable_user(self, user: str, record: bytes, at: int) -> None:
        """Raises ``ConflictError`` if the user is disabled already."""
        await self._sql_exec(
            "INSERT INTO disabled_users(user_id, record, at) VALUES (?, ?, ?)",
            (user, record, at),
        )

    async def disabled_users(self) -> dict[str, tuple[bytes, int]]:
        rows = await self._sql_rows(
            "SELECT user_id, record, at FROM disabled_users", ()
        )
        return {r[0]: (bytes(r[1]), r[2]) for r in rows}

    async def disabled_record(self, user: str) -> bytes | None:
        rows = await self._sql_rows(
            "SELECT record FROM disabled_users WHERE user_id=?", (user,)
        )
        return bytes(rows[0][0]) if rows else None

    # --- lawful-access escrow (docs/lawful-access.md) --------------------------------------

    async def escrow_setup(self) -> tuple[bytes, bytes, int, int, str, int] | None:
        """(public, commitments, custodians, threshold, token hashes JSON, at)."""
        rows = await self._sql_rows(
            "SELECT public, commitments, custodians, threshold, token_hashes, at "
            "FROM escrow_setup WHERE id = 1",
            (),
        )
        if not rows:
            return None
        r = rows[0]
        return bytes(r[0]), bytes(r[1]), r[2], r[3], r[4], r[5]

    async def put_escrow_setup(
        self,
        public: bytes,
        commitments: bytes,
        custodians: int,
        threshold: int,
        token_hashes: str,
        at: int,
    ) -> None:
        """Raises ``ConflictError`` if a ceremony was recorded already."""
        await self._sql_exec(
            "INSERT INTO escrow_setup(id, public, commitments, custodians, threshold, "
            "token_hashes, at) VALUES (1, ?, ?, ?, ?, ?, ?)",
            (public, commitments, custodians, threshold, token_hashes, at),
        )

    async def add_escrow_copy(
        self,
        sender: str,
        sender_user: str,
        message_id: bytes,
        conversation: str,
        day: str,
        ephemeral: bytes,
        sealed: bytes,
        members: list[str],
        at: int,
    ) -> None:
        """Keep a sealed copy (a repeat of the same message is ignored) and note who
        took part in its scope."""
        await self._sql_exec(
            "INSERT INTO escrow_copies(sender, message_id, sender_user, conversation, "
            "day, ephemeral, sealed, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (sender, message_id) DO NOTHING",
            (sender, message_id, sender_user, conversation, day, ephemeral, sealed, at),
        )
        for user in sorted({*members, sender_user}):
            await self._sql_exec(
                "INSERT INTO escrow_members(user_id, day, conversation) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id, day, conversation) DO NOTHING",
                (user, day, conversation),
            )

    async def escrow_scopes(
        self, user: str, start: str, end: str
    ) -> list[tuple[str, str, int]]:
        """(conversation, day, copies) for the scopes ``user`` took part in."""
        rows = await self._sql_rows(
            "SELECT m.conversation, m.day, COUNT(c.message_id) FROM escrow_members m "
            "LEFT JOIN escrow_copies c ON c.conversation = m.conversation "
            "AND c.day = m.day WHERE m.user_id = ? AND m.day >= ? AND m.day <= ? "
            "GROUP BY m.conversation, m.day ORDER BY m.day, m.conversation",
            (user, start, end),
        )
        return [(r[0], r[1], int(r[2])) for r in rows]

    async def escrow_copies(
        self, conversation: str, day: str
    ) -> list[tuple[str, str, bytes, bytes, bytes]]:
        """(sender, sender_user, message_id, ephemeral, sealed) of one scope."""
        rows = await self._sql_rows(
            "SELECT sender, sender_user, message_id, ephemeral, sealed FROM escrow_copies "
            "WHERE conversation = ? AND day = ? ORDER BY at, sender",
            (conversation, day),
        )
        return [(r[0], r[1], bytes(r[2]), bytes(r[3]), bytes(r[4])) for r in rows]

    async def put_escrow_request(self, request_id: str, body: bytes, at: int) -> None:
        await self._sql_exec(
            "INSERT INTO escrow_requests(request_id, body, at) VALUES (?, ?, ?)",
            (request_id, body, at),
        )

    async def escrow_request(self, request_id: str) -> bytes | None:
        rows = await self._sql_rows(
            "SELECT body FROM escrow_requests WHERE request_id = ?", (request_id,)
        )
        return bytes(rows[0][0]) if rows else None

    async def escrow_requests(self) -> list[bytes]:
        rows = await self._sql_rows("SELECT body FROM escrow_requests ORDER BY at", ())
        return [bytes(r[0]) for r in rows]

    async def put_partials(
        self, request_id: str, custodian: int, body: bytes, at: int
    ) -> None:
        """Raises ``ConflictError`` if this custodian answered already."""
        await self._sql_exec(
            "INSERT INTO escrow_partials(request_id, custodian, body, at) "
            "VALUES (?, ?, ?, ?)",
            (request_id, custodian, body, at),
        )

    async def partials(self, request_id: str) -> dict[int, bytes]:
        rows = await self._sql_rows(
            "SELECT custodian, body FROM escrow_partials WHERE request_id = ?",
            (request_id,),
        )
        return {r[0]: bytes(r[1]) for r in rows}
