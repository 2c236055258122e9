"""The storage interface every backend implements, unchanged.

Rules:

1. Every method is atomic: it commits or changes nothing.  A method that returns has
   committed durably (the server acknowledges sends on that basis).  The hot path's
   writes (``accept``, ``accept_shared``, ``ack``) are queued when called and return a
   future that resolves once committed, so that a caller can attach a callback instead
   of running a task per write; ``await`` them like the others.
2. Writes may be batched into one transaction with other callers' writes (group commit), but
   one caller's failure never fails another's.
3. Per-device sequence numbers start at 1 and increase by exactly one per stored envelope,
   in commit order, and are never reused, even after acknowledgement deletes the envelope.
4. Backends raise only ``StoreError`` subclasses; driver exceptions are mapped inside the
   backend module.  Dialect differences live in the backend module, nowhere else.

The conformance suite in ``tests/server/test_store.py`` is the executable form of these rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from ._rows import (
    AcceptResult,
    ActivationRow,
    AuditRecord,
    BlobRow,
    CodeRow,
    DeviceRow,
    FleetRow,
    GroupChangeRow,
    InboxRow,
    PolicyChangeRow,
    StoredKey,
    UserRow,
)
from ._shared import BLOB_GRACE_MS, UPLOAD_TTL_MS

__all__ = ["Store"]


class Store(Protocol):
    async def open(self, *, migrate: bool = False) -> None:
        """Connect and check the schema.

        Raises ``SchemaError`` if the database is newer than this build, or older and
        ``migrate`` is false.
        """

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raises ``StoreError`` if the database cannot serve now."""

    async def schema_version(self) -> int: ...

    # users ---------------------------------------------------------------------------
    async def add_user(self, user: str, name: str, at: int) -> UserRow:
        """Raises ``ConflictError`` if the user exists."""

    async def get_user(self, user: str) -> UserRow | None: ...

    async def list_users(self) -> list[UserRow]: ...

    # activation codes -------------------------------------------------------------------
    async def add_code(
        self, code_id: str, user: str, password: bytes, at: int, expires_at: int
    ) -> CodeRow:
        """Store a live code; any earlier live code of the user becomes ``replaced``."""

    async def latest_code(self, user: str) -> CodeRow | None: ...

    async def code_failed(self, code_id: str, burn_after: int) -> CodeRow:
        """Count one wrong try; the code is ``burned`` once ``burn_after`` tries failed."""

    async def put_activation(self, row: ActivationRow) -> None: ...

    async def take_activation(self, session_id: str, now: int) -> ActivationRow | None:
        """Remove and return an unexpired activation session (each can be used once)."""

    # devices ---------------------------------------------------------------------------
    async def add_device(
        self,
        row: DeviceRow,
        code_id: str,
        now: int,
        keys: list[StoredKey],
    ) -> None:
        """Add a device and use up its code, atomically.

        Raises ``ConflictError`` if the code is no longer live (used, burned, expired) or
        the device exists.
        """

    async def get_device(self, device_id: str) -> DeviceRow | None: ...

    async def list_devices(self, user: str | None = None) -> list[DeviceRow]: ...

    async def revoke_device(
        self, device_id: str, revocation: bytes, at: int
    ) -> DeviceRow:
        """Raises ``NotFoundError``; revoking twice keeps the first revocation."""

    async def touch_device(
        self, device_id: str, at: int, client_version: str
    ) -> None: ...

    # one-time keys ---------------------------------------------------------------------
    async def add_keys(self, device_id: str, keys: list[StoredKey]) -> int:
        """Add one-time keys (a fallback key replaces the previous one); returns the count."""

    async def claim_key(self, device_id: str) -> StoredKey | None:
        """Remove and return one one-time key; when none is left, the fallback key (kept)."""

    async def count_keys(self, device_id: str) -> int: ...

    # envelopes --------------------------------------------------------------------------
    def accept(
        self,
        sender: str,
        envelope_id: bytes,
        copies: list[tuple[str, bytes]],
        at: int,
        *,
        expires_at: int | None = None,
        blobs: Sequence[str] = (),
    ) -> asyncio.Future[AcceptResult]:
        """Store one copy in each named device's inbox, durably (rule 1: a future).

        Raises ``StoreError`` at once if the store is not open.

        Copies for unknown or revoked devices are skipped (and named).  Idempotent per
        (sender, envelope_id): a repeat stores nothing and says ``duplicate``.  Copies
        not fetched and acknowledged by ``expires_at`` are dropped by ``prune``.

        ``blobs`` are the attachments the message names: each must be a complete upload
        of ``sender``, else the whole send is refused with ``ConflictError`` naming it
        and nothing is stored.  They are kept while any copy of the message waits.
        """

    def accept_shared(
        self,
        sender: str,
        envelope_id: bytes,
        devices: list[str],
        body: bytes,
        at: int,
        *,
        expires_at: int | None = None,
        blobs: Sequence[str] = (),
    ) -> asyncio.Future[AcceptResult]:
        """Like ``accept`` with the same body for every device, which is stored once.

        Each device's inbox refers to the one body; ``fetch`` returns it in each row.
        """

    async def fetch(self, device_id: str, after: int, limit: int) -> list[InboxRow]:
        """Envelopes waiting for the device with seq > ``after``, in seq order."""

    async def pending(self, device_id: str) -> int: ...

    def ack(self, device_id: str, upto: int) -> asyncio.Future[None]:
        """Delete the device's envelopes with seq <= ``upto`` (rule 1: a future)."""

    async def inbox_depth(self) -> int:
        """Envelopes waiting in all inboxes together (for ``/metrics``)."""

    def group_commits(self) -> tuple[int, int]:
        """(transactions the group commit made, writes they carried) since ``open``,
        for ``/metrics``: their ratio is how well the hot path batches."""

    async def prune(
        self,
        now: int,
        *,
        blob_grace_ms: int = BLOB_GRACE_MS,
        upload_ttl_ms: int = UPLOAD_TTL_MS,
    ) -> list[str]:
        """Forget expired activation sessions, old send ids and expired envelopes, and
        shared bodies no inbox refers to any more.

        Also forget complete blobs that no waiting inbox row has referred to for
        ``blob_grace_ms`` (counted from the prune that first found none: the grace
        starts when the last copy was acknowledged or expired, so a recipient has that
        long to fetch the file) and that no send has named for as long, and uploads
        that made no progress for ``upload_ttl_ms``.  Returns the ids of the blobs
        forgotten: their files are the caller's to delete.
        """

    # attachments ----------------------------------------------------------------------------
    async def create_blob(
        self, blob_id: str, owner: str, size: int, at: int
    ) -> BlobRow:
        """Start an upload of ``size`` bytes by device ``owner``.

        Raises ``ConflictError`` if the id is taken.
        """

    async def get_blob(self, blob_id: str) -> BlobRow | None: ...

    async def blob_progress(
        self, blob_id: str, offset: int, length: int, at: int
    ) -> BlobRow:
        """Record that ``length`` more bytes at ``offset`` are durably in the blob's file.

        Compare-and-set on the bytes received: raises ``ConflictError`` unless ``offset``
        is exactly what was received so far, the blob is not complete and the bytes stay
        within its size; ``NotFoundError`` if there is no such blob.  The blob becomes
        ``complete`` when it reaches its size.
        """

    # groups ------------------------------------------------------------------------------
    async def append_group_change(
        self, group_id: str, seq: int, prev: bytes, entry: bytes, hash: bytes, at: int
    ) -> None:
        """Append one entry to a group's chain: compare-and-set on the chain's head.

        Raises ``ConflictError`` unless ``seq`` is one past the head and ``prev`` is the
        head's hash (for ``seq`` 0: unless the group has no entries).  The server cannot
        judge an entry; members' devices verify the chain.  This only keeps it linear.
        """

    async def group_changes(
        self, group_id: str, after: int, limit: int
    ) -> list[GroupChangeRow]:
        """The group's entries with seq > ``after``, in seq order."""

    # fleet control (``_fleet``: portable SQL shared by both backends) ---------------------
    async def audit_head(self) -> tuple[int, bytes] | None:
        """The last audit entry's (seq, hash); None for an empty log."""

    async def append_audit(self, record: AuditRecord) -> None:
        """Compare-and-set: raises ``ConflictError`` if ``record.seq`` is taken."""

    async def audit_records(
        self, after: int = -1, limit: int = 1000
    ) -> list[AuditRecord]:
        """Entries with seq > ``after``, in order."""

    async def add_policy_change(self, row: PolicyChangeRow) -> None:
        """Compare-and-set: raises ``ConflictError`` if ``row.version`` is taken."""

    async def policy_changes(self) -> list[PolicyChangeRow]:
        """Every policy change, oldest first."""

    async def fleet_row(self, device_id: str) -> FleetRow | None: ...

    async def fleet_rows(self) -> dict[str, FleetRow]: ...

    async def set_enforced(self, device_id: str, version: int, at: int) -> None:
        """The device enforces policy ``version`` now; an older report changes nothing."""

    async def order_wipe(self, device_id: str, order: bytes, at: int) -> None: ...

    async def wipe_done(self, device_id: str, at: int) -> None: ...

    async def disable_user(self, user: str, record: bytes, at: int) -> None:
        """Keep the signed record; raises ``ConflictError`` if there is one already."""

    async def disabled_users(self) -> dict[str, tuple[bytes, int]]: ...

    async def disabled_record(self, user: str) -> bytes | None: ...

    # lawful-access escrow (``_fleet``) --------------------------------------------------
    async def escrow_setup(self) -> tuple[bytes, bytes, int, int, str, int] | None: ...

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
    ) -> None: ...

    async def escrow_scopes(
        self, user: str, start: str, end: str
    ) -> list[tuple[str, str, int]]: ...

    async def escrow_copies(
        self, conversation: str, day: str
    ) -> list[tuple[str, str, bytes, bytes, bytes]]: ...

    async def put_escrow_request(
        self, request_id: str, body: bytes, at: int
    ) -> None: ...

    async def escrow_request(self, request_id: str) -> bytes | None: ...

    async def escrow_requests(self) -> list[bytes]: ...

    async def put_partials(
        self, request_id: str, custodian: int, body: bytes, at: int
    ) -> None: ...

    async def partials(self, request_id: str) -> dict[int, bytes]: ...
