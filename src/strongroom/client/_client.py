"""The asyncio driver: HTTP (httpx) and the stream (websockets) around the device core.

All network I/O of a device happens here, and all foreign network exceptions are mapped
here: connection failures become ``ClientError`` with a sentence naming the server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import httpx
import msgspec
import websockets
from websockets.asyncio.client import ClientConnection

from strongroom import proto
from strongroom.errors import (
    ClientError,
    CryptoError,
    DeviceWipedError,
    OrderRefusedError,
    PolicyViolationError,
    RemoteProtocolError,
    ServerRefusedError,
)

from ._device import Device, Received
from ._escrow import escrow_copy
from ._group_device import GroupDevice, Needs
from ._groups import (
    GroupChainError,
    GroupState,
    Recipients,
    create_group,
    next_change,
    sign_change,
)
from ._policy import accept_policy, accept_wipe, rules_in_force
from ._store import LocalStore, Peer, StoredMessage
from ._wipe import wipe_home, wiped

__all__ = [
    "ACK_DELAY",
    "ACK_EVERY",
    "CLIENT_VERSION",
    "Client",
    "SendResult",
    "http_error",
    "tls_context",
]

CLIENT_VERSION = "strongroom/0.1.0"
T = TypeVar("T")
_KEY_LOW_WATER = 20
_KEY_BATCH = 50
_TICK = 0.05  # the read loop's idle tick: acknowledgements, receipts, purge, on_idle
#: The longest a delivery waits for its acknowledgement (the load generator follows it)
ACK_DELAY = 0.25
#: ... or until this many deliveries wait
ACK_EVERY = 64


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def tls_context(ca: str | None) -> ssl.SSLContext | None:
    if not ca:
        return None
    return ssl.create_default_context(cafile=ca)


def http_error(response: httpx.Response) -> ServerRefusedError:
    try:
        body = msgspec.json.decode(response.content, type=proto.ErrorBody)
        return ServerRefusedError(body.detail, body.code)
    except proto.DECODE_ERRORS:
        return ServerRefusedError(
            f"server answered HTTP {response.status_code}", "internal"
        )


class SendResult(msgspec.Struct, frozen=True):
    id: str
    devices: list[str]
    skipped: list[str]


class Client:
    """An activated device, connected on demand.  Use as ``async with Client(home) as c``.

    ``passcode`` opens a store protected by one; see ``LocalStore.open`` for what opening
    raises (a wiped device, a missing or wrong passcode).
    """

    def __init__(
        self,
        home: Path,
        clock: Callable[[], int] = wall_clock_ms,
        *,
        passcode: str | None = None,
    ) -> None:
        self.home = home
        self.store = LocalStore.open(home, passcode)
        self.device = Device(self.store, clock)
        ca = self.store.get_meta("ca")
        self._tls = tls_context(ca.decode() if ca else None)
        self._http = httpx.AsyncClient(
            base_url=self.device.server_url, timeout=30.0, verify=self._tls or True
        )
        self._ws: ClientConnection | None = None
        self._conn: proto.StreamConnection | None = None
        self.welcome: proto.Welcome | None = None
        self._groups: GroupDevice | None = None
        self._due_receipts: dict[str, list[bytes]] = {}
        #: Deliveries read while waiting for an ``Accepted``: ``messages`` handles them
        #: first, so none is acknowledged unseen.
        self._held: list[proto.Deliver] = []
        self._wiped = False  # IT's wipe order was obeyed: the store is gone

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def disconnect(self) -> None:
        """Drop the stream (if any) so that the next ``connect`` opens a new one; the
        store and the HTTP client stay open.  Deliveries not acknowledged come again."""
        ws, self._ws, self._conn, self.welcome = self._ws, None, None, None
        self._held.clear()
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
            self._ws = None
        await self._http.aclose()
        self.store.close()

    @property
    def warnings(self) -> list[str]:
        return self.device.warnings

    # --- HTTP -----------------------------------------------------------------------------

    async def signed(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One HTTP request signed by this device; any status.  Raises ``ClientError``
        only if the server cannot be reached."""
        stamp = str(self.device.clock())
        nonce = base64.urlsafe_b64encode(os.urandom(18)).decode()
        signature = self.device.account().sign(
            proto.http_signing_input(
                method, path, self.device.device_id, stamp, nonce, body
            )
        )
        sent = {
            "strongroom-device": self.device.device_id,
            "strongroom-time": stamp,
            "strongroom-nonce": nonce,
            "strongroom-signature": base64.b64encode(signature).decode(),
            "content-type": content_type,
            **(headers or {}),
        }
        try:
            response = await self._http.request(
                method, path, content=body, headers=sent
            )
        except httpx.HTTPError as exc:
            raise ClientError(
                f"cannot reach the server at {self.device.server_url}"
            ) from exc
        # httpx links a response and its (spent) stream both ways, so a response, the
        # request body it holds and its own content (an attachment's 4 MiB piece, each
        # way) would wait for the garbage collector; unlinked, they go with the caller's
        # last reference and a transfer's memory stays at a piece or two.
        response.stream = httpx.ByteStream(b"")
        return response

    async def _request(
        self, method: str, path: str, kind: type[T], body: bytes = b""
    ) -> T:
        response = await self.signed(method, path, body)
        if response.status_code != 200:
            raise http_error(response)
        return proto.decode_json(response.content, kind)

    async def directory(self, user: str) -> list[proto.DeviceEntry]:
        """The server's list of ``user``'s devices (each verified by the caller).

        A user IT disabled (a verified ``UserDisabled`` record) has no device to trust
        any more, whatever the list says, and is out of every group from then on.
        """
        found = await self._request("GET", f"/v1/keys/user/{user}", proto.UserDevices)
        if found.disabled is not None:
            try:
                record = self.device.authority.verify_user_disabled(found.disabled)
            except CryptoError:
                self.device.warn(
                    f"ignored a forged user-disabled record for {user} (the server may "
                    "be tampering with the directory)"
                )
            else:
                if record.org == self.device.org and record.user == user:
                    if not self.is_disabled(user):
                        self.store.set_meta(
                            f"disabled:{user}", str(record.disabled_at).encode()
                        )
                        self.device.warn(
                            f"{user} was disabled by IT: removed from every group, "
                            "and nothing more is encrypted to their devices"
                        )
                    return []
        if self.is_disabled(user):
            return []  # a disabled user stays disabled whatever the server says now
        return found.devices

    def is_disabled(self, user: str) -> bool:
        """Whether IT disabled ``user`` (as a verified record told this device)."""
        return self.store.get_meta(f"disabled:{user}") is not None

    async def _learn_sender(self, device_id: str) -> None:
        try:
            entry = await self._request(
                "GET", f"/v1/keys/device/{device_id}", proto.DeviceEntry
            )
        except ServerRefusedError:
            return
        with self.store.transaction():
            self.device.verify_entry(entry)

    async def _ensure_sessions(self, peers: list[Peer]) -> list[Peer]:
        missing = [p for p in peers if self.device.needs_session(p)]
        if missing:
            body = proto.encode_json(
                proto.ClaimRequest(devices=[p.device_id for p in missing])
            )
            claimed = await self._request(
                "POST", "/v1/keys/claim", proto.ClaimResponse, body
            )
            for peer in missing:
                key = claimed.keys.get(peer.device_id)
                if key is None:
                    self.device.warn(
                        f"skipped device {peer.device_id}: it has no keys left"
                    )
                    continue
                self.device.establish(peer, key)
        return [p for p in peers if not self.device.needs_session(p)]

    async def upload_keys(self, count: int = _KEY_BATCH) -> int:
        body = proto.encode_json(self.device.new_keys(count))
        result = await self._request("POST", "/v1/keys/upload", proto.KeyCount, body)
        return result.count

    # --- the stream -----------------------------------------------------------------------

    async def connect(self) -> proto.Welcome:
        """Open and authenticate the stream (once).  Raises ``ClientError``."""
        if self._ws is not None and self.welcome is not None:
            return self.welcome
        url = self.device.server_url.replace("http", "ws", 1) + "/v1/stream"
        try:
            self._ws = await websockets.connect(
                url, ssl=self._tls, max_size=2 * proto.MAX_FRAME_BYTES, open_timeout=15
            )
        except (OSError, websockets.WebSocketException, TimeoutError) as exc:
            raise ClientError(
                f"cannot reach the server at {self.device.server_url}"
            ) from exc
        self._conn = proto.StreamConnection(proto.Role.CLIENT)
        challenge = await self._next_frame()
        if not isinstance(challenge, proto.Challenge):
            raise RemoteProtocolError("the server did not start with a challenge")
        await self._send_frame(self.device.hello(challenge, CLIENT_VERSION))
        welcome = await self._next_frame()
        if isinstance(welcome, proto.Error):
            raise ServerRefusedError(welcome.detail, welcome.code)
        if not isinstance(welcome, proto.Welcome):
            raise RemoteProtocolError("the server did not welcome us")
        self.welcome = welcome
        if welcome.otk_count < _KEY_LOW_WATER:
            try:
                await self.upload_keys()
            except ServerRefusedError as exc:
                # revoked, yet let in: the stream carries IT's wipe order (``_policy``)
                if exc.code != proto.ErrorCode.DEVICE_REVOKED:
                    raise
        return welcome

    async def _send_frame(self, frame: proto.ClientFrame) -> None:
        assert self._ws is not None and self._conn is not None
        try:
            await self._ws.send(self._conn.send(frame))
        except websockets.WebSocketException as exc:
            raise ClientError("the connection to the server was lost") from exc

    async def _ack_delivered(self) -> None:
        """Acknowledge every delivery so far (cumulative), if any is new."""
        assert self._conn is not None
        if self._conn.last_delivered > self._conn.last_acked:
            await self._send_frame(proto.Ack(upto=self._conn.last_delivered))

    async def _next_frame(self, timeout: float | None = None) -> proto.ServerFrame:
        assert self._ws is not None and self._conn is not None
        try:
            data = await asyncio.wait_for(self._ws.recv(), timeout)
        except websockets.ConnectionClosed as exc:
            raise ClientError("the server closed the connection") from exc
        if isinstance(data, str):
            raise RemoteProtocolError("the server sent a text frame")
        frame = self._conn.receive(data)
        assert not isinstance(frame, proto.ClientFrame)
        if isinstance(frame, proto.Error) and frame.ref is None:
            raise ServerRefusedError(frame.detail, frame.code)
        if isinstance(frame, proto.Control):
            await self._on_control(frame)
            return await self._next_frame(timeout)
        return frame

    # --- IT's orders (``_policy``) ------------------------------------------------------

    async def _on_control(self, control: proto.Control) -> None:
        """Enforce a verified policy and say so; obey a verified wipe order."""
        try:
            if control.kind == "policy":
                policy, new = accept_policy(self.store, control.item)
            else:
                order = accept_wipe(self.store, control.item)
        except OrderRefusedError as exc:
            self.device.warn(str(exc))
            return
        if control.kind == "policy":
            if new:
                self.purge()
            await self._send_frame(proto.Enforcing(policy_version=policy.version))
            return
        # The confirmation goes first (the key that signs the stream is about to go);
        # the wipe happens whether or not it reached the server.
        with contextlib.suppress(ClientError):
            await self._send_frame(proto.Wiped(ordered_at=order.ordered_at))
        await self.disconnect()
        self.store.close()
        self._wiped = True
        now = self.device.clock()
        wipe_home(self.home, "ordered by IT", now)
        record = wiped(self.home)
        raise DeviceWipedError(
            record.sentence() if record else "this device was wiped by IT",
            "ordered by IT",
            now,
        )

    async def refresh_policy(self) -> proto.PolicyRules:
        """Fetch the policy for this device's user over HTTP (after activation, before
        any stream); a refused one is a warning, as on the stream."""
        fetched = await self._request("GET", "/v1/policy", proto.PolicyFetch)
        if fetched.policy is not None:
            try:
                _, new = accept_policy(self.store, fetched.policy)
            except OrderRefusedError as exc:
                self.device.warn(str(exc))
            else:
                if new:
                    self.purge()
        return self.rules

    async def _escrow(
        self,
        conversation: str,
        message_id: bytes,
        content: proto.UserContent,
        members: set[str],
    ) -> None:
        """Rule 4 of ``_escrow``: the sealed copy first, or the message is not sent."""
        copy = escrow_copy(
            self.store,
            device_id=self.device.device_id,
            user=self.device.user,
            org=self.device.org,
            conversation=conversation,
            message_id=message_id,
            content=content,
            sent_at=self.device.clock(),
            members=members,
        )
        if copy is None:
            return
        try:
            await self._request(
                "POST",
                "/v1/escrow/copies",
                proto.EscrowStatus,
                proto.encode_json(proto.EscrowUpload([copy])),
            )
        except ClientError as exc:
            raise ClientError(
                f"escrow is on and the sealed copy could not be stored ({exc}): "
                "the message was not sent"
            ) from exc

    @property
    def rules(self) -> proto.PolicyRules:
        """The policy rules this device enforces now."""
        return rules_in_force(self.store)

    def purge(self) -> int:
        """Delete what policy and disappearing timers say must go; returns how many."""
        now = self.device.clock()
        days = self.rules.retention_days
        return self.store.purge_expired(
            now, None if days is None else now - days * 86_400_000
        )

    def held_message(self, message_id: bytes) -> StoredMessage:
        """A message this device holds, for an edit or a reaction to it.  Raises
        ``ClientError`` if there is none; one past its disappearing time is deleted
        (with everything else that is) and refused, even before a receive purged it."""
        message = self.store.get_message(message_id)
        if (
            message is not None
            and message.expires_at is not None
            and message.expires_at <= self.device.clock()
        ):
            self.purge()
            message = None
        if message is None:
            raise ClientError(
                f"there is no message {message_id.hex()} on this device"
                " (it may have expired)"
            )
        return message

    def check_sending(self) -> None:
        """Raises ``PolicyViolationError`` when policy bars this client from sending."""
        need = self.rules.min_client_version
        if need is not None and not proto.version_at_least(CLIENT_VERSION, need):
            raise PolicyViolationError(
                f"the organisation's policy needs client version {need} or newer to "
                f"send; this is {CLIENT_VERSION}: update Strongroom"
            )

    def check_attachment(self, size: int) -> None:
        """Raises ``PolicyViolationError`` for a file the policy does not allow."""
        rules = self.rules
        if not rules.attachments_allowed:
            raise PolicyViolationError(
                "the organisation's policy does not allow attachments"
            )
        if rules.max_attachment_bytes is not None and size > rules.max_attachment_bytes:
            raise PolicyViolationError(
                f"the file is {size:,} bytes; the organisation's policy allows "
                f"attachments up to {rules.max_attachment_bytes:,} bytes"
            )

    # --- verbs ------------------------------------------------------------------------------

    async def send_text(
        self,
        to_user: str,
        text: str,
        *,
        reply_to: bytes | None = None,
        expires_in: int | None = None,
    ) -> SendResult:
        """Encrypt to every certified device of ``to_user`` and our own other devices.

        Returns once the server has durably accepted the message.  Raises ``ClientError``
        if there is nobody to encrypt to, or the server refuses.
        """
        return await self.send(
            to_user, proto.Text(text, reply_to), expires_in=expires_in
        )

    async def send(
        self,
        to_user: str,
        content: proto.UserContent,
        *,
        expires_in: int | None = None,
        blobs: list[str] | None = None,
        message_id: bytes | None = None,
    ) -> SendResult:
        """Send any content in the 1:1 conversation with ``to_user`` (see ``send_text``).

        ``expires_in`` (seconds) overrides the conversation's disappearing timer.
        """
        if not proto.valid_user_id(to_user):
            raise ClientError(f"{to_user!r} is not a valid user id")
        conversation = proto.conversation_for(self.device.user, to_user)
        peers = await self._peers(to_user, include_own=True)
        if not any(p.user == to_user for p in peers) and to_user != self.device.user:
            raise ClientError(
                f"{to_user} has no device this device can trust and reach"
            )
        if not peers:
            raise ClientError("no other device to send to")
        message_id = message_id or os.urandom(16)
        await self._escrow(
            conversation, message_id, content, {self.device.user, to_user}
        )
        send = self.device.encrypt(
            peers,
            conversation,
            content,
            expires_at=self._expiry(conversation, expires_in),
            blobs=blobs,
            message_id=message_id,
        )
        return await self._deliver_own(send.id, [c.device for c in send.copies])

    async def _peers(self, user: str, *, include_own: bool) -> list[Peer]:
        entries = await self.directory(user)
        wanted = {user}
        if include_own and user != self.device.user:
            entries += await self.directory(self.device.user)
            wanted.add(self.device.user)
        return await self._ensure_sessions(self.device.recipients(entries, wanted))

    def _expiry(self, conversation: str, expires_in: int | None) -> int | None:
        self.check_sending()
        if expires_in is None:
            expires_in, _ = self.store.conversation_settings(conversation)
        if expires_in is None:
            expires_in = self.rules.default_timer_seconds
        return None if expires_in is None else self.device.clock() + expires_in * 1000

    async def _deliver_own(self, message_id: bytes, devices: list[str]) -> SendResult:
        await self.connect()
        results = await self.flush_outbox()
        accepted = results[message_id]
        return SendResult(
            id=message_id.hex(), devices=devices, skipped=accepted.skipped
        )

    # --- groups ---------------------------------------------------------------------------

    @property
    def groups(self) -> GroupDevice:
        if self._groups is None:
            self._groups = GroupDevice(self.device)
        return self._groups

    async def create_group(self, name: str, members: list[str]) -> str:
        """Create a group with ``members`` (and us, as its first admin); its id."""
        for user in members:
            if not proto.valid_user_id(user):
                raise ClientError(f"{user!r} is not a valid user id")
            await self.directory(
                user
            )  # refuses unknown users before anything is signed
        group = proto.new_group_id(os.urandom(16))
        change = create_group(
            group,
            name,
            members,
            author=self.device.user,
            author_device=self.device.device_id,
            at=self.device.clock(),
        )
        await self._post_change(change)
        return group

    async def change_group(
        self,
        group: str,
        action: proto.GroupAction,
        subject: str,
        *,
        name: str | None = None,
    ) -> GroupState:
        """Add, remove, promote, demote, rename (with ``name``) or leave, signed by
        this device.

        After a change the next message rotates the group's key; after a removal it is
        rotated at once, so the removed member can read nothing sent from now on and the
        signed removal reaches the other members with the new key.
        """
        if not proto.valid_user_id(subject):
            raise ClientError(f"{subject!r} is not a valid user id")
        for attempt in range(3):
            state = await self.sync_group(group)
            change = next_change(
                state,
                action,
                subject,
                author=self.device.user,
                author_device=self.device.device_id,
                at=self.device.clock(),
                name=name,
            )
            try:
                await self._post_change(change)
                break
            except ServerRefusedError as exc:
                if exc.code != proto.ErrorCode.CONFLICT or attempt == 2:
                    raise
        state = self._group_state(group)
        leaving = action in (proto.GroupAction.REMOVE, proto.GroupAction.LEAVE)
        if leaving and self.device.user in state.members:
            await self._share_key(group)
        return state

    async def _post_change(self, change: proto.GroupChange) -> None:
        entry = sign_change(change, self.device.account())
        await self._request(
            "POST",
            f"/v1/groups/{change.group}/changes",
            proto.GroupChanges,
            proto.encode_json(proto.GroupPost(entry)),
        )
        self.groups.take_entries([entry], stale_ok=False)

    def _group_state(self, group: str) -> GroupState:
        state = self.groups.state(group)
        if state is None:
            raise ClientError(f"no group {group!r} on this device")
        return state

    async def sync_group(self, group: str) -> GroupState:
        """Fetch the group's newer chain entries from the server and verify them.

        Refused entries leave a warning and change nothing; a server that no longer
        offers the head this device verified is showing an older membership (warned).
        """
        known = self.groups.state(group)
        after = -1 if known is None else known.seq - 1
        entries: list[proto.Signed] = []
        while True:
            page = await self._request(
                "GET", f"/v1/groups/{group}/changes?after={after}", proto.GroupChanges
            )
            entries += page.entries
            if not page.more or not page.entries:
                break
            after += len(page.entries)
        if not entries:
            if known is not None:
                self.device.warn(
                    f"the server no longer offers entry {known.seq} of group "
                    f"{known.name!r}, which this device verified: it may be withholding "
                    "a membership change"
                )
                return known
            raise ClientError(f"no group {group!r} on the server")
        for device_id in self.groups.unknown_authors(entries):
            await self._learn_sender(device_id)
        try:
            self.groups.take_entries(entries, stale_ok=False)
        except GroupChainError as exc:
            self.device.warn(f"refused a membership change: {exc}")
        return self._group_state(group)

    async def send_group(
        self,
        group: str,
        content: proto.UserContent,
        *,
        expires_in: int | None = None,
        blobs: list[str] | None = None,
        message_id: bytes | None = None,
    ) -> SendResult:
        """Send content to every member device the verified chain allows (Megolm)."""
        state, recipients = await self._group_audience(group)
        if not recipients.devices:
            raise ClientError(
                "nobody else in this group has a device that can read it: not sent"
            )
        session, key = self.groups.session_for(state, recipients)
        if key is not None:
            await self._send_room_key(state, recipients, key)
        conversation = proto.group_conversation(group)
        message_id = message_id or os.urandom(16)
        await self._escrow(conversation, message_id, content, set(state.members))
        send = self.groups.seal(
            state,
            session,
            recipients,
            content,
            expires_at=self._expiry(conversation, expires_in),
            blobs=blobs,
            message_id=message_id,
        )
        return await self._deliver_own(send.id, send.devices)

    async def send_group_text(
        self, group: str, text: str, *, reply_to: bytes | None = None
    ) -> SendResult:
        return await self.send_group(group, proto.Text(text, reply_to))

    async def _group_audience(self, group: str) -> tuple[GroupState, Recipients]:
        state = await self.sync_group(group)
        listed: dict[str, list[str]] = {}
        for user in sorted(state.members):
            entries = await self.directory(user)  # [] for a disabled user
            peers = self.device.recipients(entries, {user})
            listed[user] = [p.device_id for p in peers]
        return self.groups.recipients(group, listed)

    async def _share_key(self, group: str) -> None:
        state, recipients = await self._group_audience(group)
        _, key = self.groups.session_for(state, recipients)
        if key is not None:
            await self._send_room_key(state, recipients, key)

    async def _send_room_key(
        self, state: GroupState, recipients: Recipients, key: proto.RoomKey
    ) -> None:
        peers = await self._ensure_sessions(list(recipients.devices))
        if peers:
            send = self.device.encrypt(
                peers, proto.group_conversation(state.group), key, record=False
            )
            # The key must be stored before the message it opens (inbox order).
            await self._deliver_own(send.id, [c.device for c in send.copies])

    # --- receipts, reading, timers -----------------------------------------------------------

    async def mark_read(self, message_ids: list[bytes]) -> int:
        """Send read receipts for these messages (where the conversation allows them);
        returns how many receipts went out."""
        by_sender: dict[tuple[str, str], list[bytes]] = {}
        if not self.rules.read_receipts_allowed:
            return 0  # the organisation's policy turned read receipts off
        for message_id in message_ids:
            message = self.store.get_message(message_id)
            if message is None or message.outgoing:
                raise ClientError(f"no received message {message_id.hex()} here")
            _, receipts_on = self.store.conversation_settings(message.conversation)
            if receipts_on and message.from_user != self.device.user:
                by_sender.setdefault(
                    (message.from_user, message.conversation), []
                ).append(message_id)
        for (user, _), ids in by_sender.items():
            await self._send_receipt(user, proto.ReceiptKind.READ, ids)
        return sum(len(ids) for ids in by_sender.values())

    async def _send_receipt(
        self, user: str, kind: proto.ReceiptKind, ids: list[bytes]
    ) -> None:
        peers = await self._peers(user, include_own=False)
        conversation = proto.conversation_for(self.device.user, user)
        for start in range(0, len(ids), proto.MAX_RECEIPT_TARGETS):
            chunk = ids[start : start + proto.MAX_RECEIPT_TARGETS]
            if peers:
                self.device.encrypt(
                    peers, conversation, proto.Receipt(kind, chunk), record=False
                )
        await self.flush_outbox()

    async def set_timer(
        self,
        seconds: int | None,
        *,
        to_user: str | None = None,
        group: str | None = None,
    ) -> SendResult:
        """Set a conversation's disappearing-message timer, and tell its members."""
        if (to_user is None) == (group is None):
            raise ClientError("name one user or one group")
        timer = proto.Timer(seconds)
        if group is not None:
            return await self.send_group(group, timer)
        assert to_user is not None
        return await self.send(to_user, timer)

    async def flush_outbox(self) -> dict[bytes, proto.Accepted]:
        """Send everything waiting in the outbox and wait until each is accepted."""
        await self.connect()
        decoder = msgspec.msgpack.Decoder(proto.ClientFrame)
        waiting: dict[bytes, proto.Send | proto.SendShared] = {}
        for message_id, encoded in self.store.outbox():
            send = decoder.decode(encoded)
            assert isinstance(send, proto.Send | proto.SendShared)
            waiting[message_id] = send
            await self._send_frame(send)
        results: dict[bytes, proto.Accepted] = {}
        while len(results) < len(waiting):
            frame = await self._next_frame()
            if isinstance(frame, proto.Deliver):
                self._held.append(frame)  # for ``messages``, never dropped unseen
            elif isinstance(frame, proto.Accepted):
                results[frame.id] = frame
                with self.store.transaction():
                    self.store.remove_outbox(frame.id)
                    self.store.set_state(frame.id, "sent")
                for device_id in frame.skipped:
                    self.device.warn(
                        f"server did not deliver to {device_id} (unknown/revoked)"
                    )
            elif isinstance(frame, proto.Error):
                if frame.ref is not None and frame.code != proto.ErrorCode.UNAVAILABLE:
                    # refused for good (not "try again"): resending cannot help
                    with self.store.transaction():
                        self.store.remove_outbox(frame.ref)
                        self.store.set_state(frame.ref, "failed")
                raise ServerRefusedError(frame.detail, frame.code)
        return results

    async def _handle(self, deliver: proto.Deliver) -> list[Received]:
        sender = self.device.unknown_sender(deliver)
        if sender is not None:
            await self._learn_sender(sender)
        shown: list[Received] = []
        if deliver.shared:
            received, needs = self.groups.open(deliver)
            if needs:
                await self._fetch(needs)
                shown += self.groups.retry_pending_messages()
        else:
            received = self.device.open(deliver)
            if self.store.pending("room-key"):
                shown += await self._settle_keys()
        if received is not None:
            shown.insert(0, received)
        for message in shown:
            if (
                message.kind in ("text", "file")
                and message.from_user != self.device.user
            ):
                self._due_receipts.setdefault(message.from_user, []).append(
                    bytes.fromhex(message.id)
                )
        return shown

    async def _settle_keys(self) -> list[Received]:
        """Decide waiting room keys (fetching what they need), then open the group
        messages that waited for them."""
        for _ in range(3):
            needs = self.groups.process_room_keys()
            if not needs:
                break
            await self._fetch(needs)
        else:
            self.groups.defer_stuck_keys()
        return self.groups.retry_pending_messages()

    async def _fetch(self, needs: Needs) -> None:
        for device_id in sorted(needs.devices):
            await self._learn_sender(device_id)
        for group in sorted(needs.groups):
            try:
                await self.sync_group(group)
            except ServerRefusedError as exc:
                self.device.warn(f"could not fetch group {group[:8]}…: {exc}")

    async def _send_due_receipts(self) -> None:
        due, self._due_receipts = self._due_receipts, {}
        for user, ids in due.items():
            try:
                await self._send_receipt(user, proto.ReceiptKind.DELIVERED, ids)
            except ClientError as exc:
                self.device.warn(f"could not send delivery receipts to {user}: {exc}")

    async def messages(
        self,
        wait: float | None,
        *,
        on_idle: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[Received]:
        """Yield what arrives as it is verified; acknowledge it once stored.

        Ends ``wait`` seconds after the backlog that was waiting at connect time has been
        read (never, with ``wait=None``).  Delivery receipts go out when the stream is
        idle; messages past their disappearing time are deleted as it runs.  ``on_idle``
        is awaited whenever the stream is idle: the one place where a caller that keeps
        this iterator running may use the stream too (send, flush), since only one
        coroutine may read it (``strongroom.client.Session`` does).
        """
        welcome = await self.connect()
        assert self._conn is not None
        backlog = welcome.pending
        handled = 0
        deadline: float | None = None
        unacked_since: float | None = None  # when the oldest unacknowledged came
        loop = asyncio.get_running_loop()
        self.purge()
        try:
            while True:
                if deadline is None and handled >= backlog and wait is not None:
                    deadline = loop.time() + wait
                timeout = _TICK
                if deadline is not None:
                    timeout = min(timeout, max(0.0, deadline - loop.time()))
                try:
                    frame: proto.ServerFrame
                    if self._held:
                        frame = self._held.pop(0)
                    else:
                        frame = await self._next_frame(timeout)
                except TimeoutError:
                    # Delayed, cumulative acknowledgements: one per ACK_DELAY (or
                    # ACK_EVERY deliveries) instead of one per delivery under steady
                    # traffic; what waits is redelivered after a reconnect, and the
                    # store drops the repeat.  A bounded read acknowledges all as it ends.
                    now = loop.time()
                    ending = deadline is not None and now >= deadline
                    if unacked_since is not None and (
                        ending or now - unacked_since >= ACK_DELAY
                    ):
                        await self._ack_delivered()
                        unacked_since = None
                    if self._due_receipts:
                        await self._send_due_receipts()
                    if on_idle is not None:
                        await on_idle()
                    self.purge()
                    if ending:
                        return
                    continue
                if isinstance(frame, proto.Deliver):
                    handled += 1
                    if unacked_since is None:
                        unacked_since = loop.time()
                    shown = await self._handle(frame)
                    if (
                        not self._held
                        and self._conn.last_delivered - self._conn.last_acked
                        >= ACK_EVERY
                    ):
                        await self._ack_delivered()
                        unacked_since = None
                    for received in shown:
                        yield received
        finally:
            # A bounded read ends here: a group message whose key never came is reported.
            # A standing connection (``wait=None``) keeps waiting across reconnects.
            if (
                wait is not None
                and not self._wiped
                and self.store.pending("group-message")
            ):
                self.groups.give_up_pending_messages()

    async def receive(self, wait: float) -> list[Received]:
        return [m async for m in self.messages(wait)]
