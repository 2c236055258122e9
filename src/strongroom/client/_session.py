"""A device that stays connected: reconnects with backoff, and sends that never fail for
want of a connection.  What the chat app runs on, and what a long-running script should.

    async with Client(home) as client:
        session = Session(client)
        session.subscribe(print)
        task = asyncio.create_task(session.run())
        session.send_text("dm:alice:bob", "hello")   # queued at once, sent when online

Rules:

1. One task, ``run``, owns the stream: it reads deliveries (``Client.messages``) and,
   whenever the stream is idle, does the work others asked for: queued sends, calls made
   through ``call``, verification steps (``Client.messages``' ``on_idle``).  Nothing else
   reads the stream, so no delivery is read by one coroutine and lost to another.
2. A send is durable before it returns: the content goes into ``queued_sends`` and into
   the history as ``sending`` in one transaction.  It leaves when the stream is up, with
   the same message id however often it is tried, so its recipients see it once (the
   server answers a repeated id ``accepted`` and stores nothing twice).  A queued send that
   reached the outbox before the connection broke is not encrypted again: the outbox is
   flushed on every reconnect, and the queue entry dropped.
3. A failure is transient (the server cannot be reached, the connection broke, the server
   said ``unavailable``): the session drops the stream, waits (``Backoff``) and tries
   again, and the send stays queued.  Or it is permanent (the server refused, nobody to
   encrypt to): the message is marked ``failed``, a warning says why, and it is not
   retried.  A device revoked by IT stops the session for good.
4. Work that needs the server now (create a group, verification steps, read receipts)
   goes through ``call``, which refuses at once while the session is offline rather than
   wait an unknown time: the person sees "offline" and decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import websockets

from strongroom import proto
from strongroom.errors import (
    ClientError,
    LocalProtocolError,
    RemoteProtocolError,
    ServerRefusedError,
    StrongroomError,
)

from ._client import Client
from ._contacts import fetch_directory
from ._device import Received
from ._history import History, other_user
from ._policy import PolicyInForce, policy_in_force
from ._store import StoredMessage
from ._transfers import Progress, download_file, upload_file
from ._verification import DeviceTrust, Outgoing, SasFlow, Verifications

__all__ = [
    "Arrived",
    "Backoff",
    "Event",
    "HistoryChanged",
    "Session",
    "Status",
    "StatusChanged",
    "VerificationChanged",
    "Warned",
    "is_transient",
]

T = TypeVar("T")
_content_decoder = msgspec.msgpack.Decoder(proto.UserContent)


class Status(enum.StrEnum):
    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"  # the connection is lost; reconnecting with backoff
    STOPPED = "stopped"  # for good: the device was revoked


@dataclass(frozen=True)
class StatusChanged:
    status: Status
    detail: str = ""
    retry_in: float | None = None  # seconds until the next try, when offline


@dataclass(frozen=True)
class Arrived:
    """A message (or edit, reaction, receipt, timer) arrived and passed every check."""

    received: Received


@dataclass(frozen=True)
class HistoryChanged:
    """Something in this conversation's history changed (sent, delivered, read...)."""

    conversation: str


@dataclass(frozen=True)
class Warned:
    text: str


@dataclass(frozen=True)
class VerificationChanged:
    flow: SasFlow


Event = StatusChanged | Arrived | HistoryChanged | Warned | VerificationChanged


@dataclass(frozen=True)
class Backoff:
    """Waits between reconnection attempts: ``first`` seconds, times ``factor`` per
    failed attempt, at most ``limit``, each scaled by a random 50 to 100 % so that a
    fleet of devices does not reconnect to a restarted server in step."""

    first: float = 0.5
    factor: float = 2.0
    limit: float = 30.0

    def delay(self, attempt: int, rand: float) -> float:
        base = min(self.limit, self.first * self.factor ** max(0, attempt - 1))
        return base * (0.5 + rand / 2)


_NETWORK = (OSError, TimeoutError, httpx.HTTPError, websockets.WebSocketException)


def is_transient(exc: BaseException) -> bool:
    """Whether trying again later may succeed (rule 3)."""
    if isinstance(exc, ServerRefusedError):
        return exc.code == proto.ErrorCode.UNAVAILABLE
    if isinstance(exc, RemoteProtocolError):
        return True
    if isinstance(exc, ClientError):
        return isinstance(exc.__cause__, _NETWORK)
    return False


class Session:
    """A ``Client`` kept connected (rules 1 to 4).  Events go to ``subscribe``\\ d
    listeners, synchronously, from the session's task."""

    def __init__(
        self,
        client: Client,
        *,
        backoff: Backoff | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.store = client.store
        self.me = client.device.user
        self.history = History(client.store, self.me, client.groups.view)
        self.verifications = Verifications(client.device)
        self.status = Status.CONNECTING
        self.detail = ""
        self.backoff = backoff or Backoff()
        self._rand = rand
        self._listeners: list[Callable[[Event], None]] = []
        self._calls: deque[tuple[Callable[[], Awaitable[Any]], asyncio.Future[Any]]] = (
            deque()
        )
        self._wake = asyncio.Event()
        self._warned = len(client.warnings)

    # --- events ---------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def _emit(self, event: Event) -> None:
        for listener in list(self._listeners):
            listener(event)

    def _set(
        self, status: Status, detail: str = "", retry_in: float | None = None
    ) -> None:
        self.status, self.detail = status, detail
        self._emit(StatusChanged(status, detail, retry_in))

    def _check_warnings(self) -> None:
        warnings = self.client.warnings
        for text in warnings[self._warned :]:
            self._emit(Warned(text))
        self._warned = len(warnings)

    # --- the connection -------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until cancelled or the device is revoked (rules 1 and 3)."""
        attempt = 0
        while True:
            try:
                await self.client.connect()
                attempt = 0
                self._set(Status.ONLINE)
                await self.client.flush_outbox()  # what was encrypted before a break
                await self._work()
                async for received in self.client.messages(None, on_idle=self._work):
                    self._emit(Arrived(received))
                    self._emit(HistoryChanged(received.conversation))
                    self._check_warnings()
            except ServerRefusedError as exc:
                if exc.code == proto.ErrorCode.DEVICE_REVOKED:
                    await self._drop(exc)
                    self._set(Status.STOPPED, "this device has been revoked by IT")
                    return
                attempt = await self._backoff(attempt, exc)
            except StrongroomError as exc:
                attempt = await self._backoff(attempt, exc)

    def retry_now(self) -> None:
        """End the current wait between attempts (the person pressed "retry")."""
        self._wake.set()

    async def _drop(self, exc: BaseException) -> None:
        await self.client.disconnect()
        lost = ClientError(f"the connection to the server was lost ({exc})")
        while self._calls:
            _, future = self._calls.popleft()
            if not future.done():
                future.set_exception(lost)
        self._check_warnings()

    async def _backoff(self, attempt: int, exc: BaseException) -> int:
        await self._drop(exc)
        attempt += 1
        delay = self.backoff.delay(attempt, self._rand())
        self._set(Status.OFFLINE, str(exc), delay)
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)
        self._set(Status.CONNECTING)
        return attempt

    async def _work(self) -> None:
        """What the session does whenever the stream is idle (rule 1)."""
        await self._send_queued()
        while self._calls:
            fn, future = self._calls.popleft()
            try:
                result = await fn()
            except StrongroomError as exc:
                if not future.done():
                    future.set_exception(exc)
                if is_transient(exc):
                    raise
            else:
                if not future.done():
                    future.set_result(result)
        changed, out = self.verifications.take_pending()
        for flow in changed:
            self._emit(VerificationChanged(flow))
        if out:
            try:
                await self._send_steps(out)
            except StrongroomError as exc:
                if is_transient(exc):
                    raise
                self.client.device.warn(f"a verification step was not sent: {exc}")
        self._check_warnings()

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` on the session's task, between deliveries (rule 4).

        Raises ``ClientError`` at once while offline, and whatever ``fn`` raises.
        """
        if self.status is not Status.ONLINE:
            raise ClientError(
                "not connected to the server (reconnecting): try again in a moment"
            )
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls.append((fn, future))
        return await future

    # --- sending --------------------------------------------------------------------------

    def send(self, conversation: str, content: proto.UserContent) -> str:
        """Queue ``content`` for a conversation (``dm:…`` or ``group:…``) and show it as
        ``sending``; the message id (hex).  Never blocks, never fails for want of a
        connection (rule 2).  Raises ``ClientError`` for content that breaks the
        protocol's limits (too long, say) or a conversation this device is not in."""
        try:
            encoded = proto.encode(content)
            _content_decoder.decode(encoded)  # structs are checked when decoded
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ClientError(f"this message cannot be sent: {exc}") from exc
        group = proto.group_of_conversation(conversation)
        if group is None and other_user(conversation, self.me) is None:
            raise ClientError(f"{conversation!r} is not a conversation of {self.me}")
        if group is not None and self.client.groups.state(group) is None:
            raise ClientError("this device is not in that group")
        message_id = os.urandom(16)
        device = self.client.device
        now = device.clock()
        timer, _ = self.store.conversation_settings(conversation)
        if timer is None:
            timer = self.client.rules.default_timer_seconds  # the policy's default
        expires_at = None if timer is None else now + timer * 1000
        with self.store.transaction():
            self.store._conn.execute(
                "INSERT INTO queued_sends VALUES (?, ?, ?, ?)",
                (message_id, conversation, encoded, now),
            )
            if not isinstance(content, proto.Receipt):
                device.record_own(message_id, conversation, content, now, expires_at)
        self._emit(HistoryChanged(conversation))
        return message_id.hex()

    def send_text(
        self, conversation: str, text: str, *, reply_to: str | None = None
    ) -> str:
        reply = None if reply_to is None else bytes.fromhex(reply_to)
        return self.send(conversation, proto.Text(text, reply))

    def edit(self, conversation: str, target: str, text: str) -> str:
        """Replace the text of one of our own messages.  Raises ``ClientError`` for a
        message that is not ours."""
        message = self._target(target)
        if message.from_user != self.me:
            raise ClientError("only your own messages can be edited")
        return self.send(conversation, proto.Edit(bytes.fromhex(target), text))

    def react(
        self, conversation: str, target: str, emoji: str, *, remove: bool = False
    ) -> str:
        """React to a message this device holds.  Raises ``ClientError`` for one it
        does not (never received, or gone with its disappearing timer)."""
        self._target(target)
        return self.send(
            conversation, proto.Reaction(bytes.fromhex(target), emoji, remove)
        )

    def _target(self, target: str) -> StoredMessage:
        """The message an edit or reaction is about (``Client.held_message``)."""
        try:
            message_id = bytes.fromhex(target)
        except ValueError:
            raise ClientError(f"{target!r} is not a message id") from None
        return self.client.held_message(message_id)

    def queued(self) -> int:
        """How many sends wait for the connection."""
        row = self.store._conn.execute("SELECT COUNT(*) FROM queued_sends").fetchone()
        return int(row[0])

    async def _send_queued(self) -> None:
        rows = self.store._conn.execute(
            "SELECT message_id, conversation, content FROM queued_sends "
            "ORDER BY created_at, rowid"
        ).fetchall()
        for raw_id, conversation, encoded in rows:
            message_id = bytes(raw_id)
            in_outbox = any(m == message_id for m, _ in self.store.outbox())
            stored = self.store.get_message(message_id)
            settled = stored is not None and stored.state not in ("", "sending")
            if in_outbox or settled:
                self._dequeue(message_id)  # it leaves with the outbox (rule 2)
                continue
            content = _content_decoder.decode(encoded)
            blobs = [content.blob] if isinstance(content, proto.FileRef) else None
            group = proto.group_of_conversation(conversation)
            try:
                if group is not None:
                    await self.client.send_group(
                        group, content, blobs=blobs, message_id=message_id
                    )
                else:
                    user = other_user(conversation, self.me)
                    assert user is not None
                    await self.client.send(
                        user, content, blobs=blobs, message_id=message_id
                    )
            except StrongroomError as exc:
                if is_transient(exc):
                    raise
                with self.store.transaction():
                    self._delete_queued(message_id)
                    self.store.set_state(message_id, "failed")
                self.client.device.warn(
                    f"a message to {self.history.title(conversation)} was not sent: {exc}"
                )
            else:
                self._dequeue(message_id)
            self._emit(HistoryChanged(conversation))

    def _dequeue(self, message_id: bytes) -> None:
        with self.store.transaction():
            self._delete_queued(message_id)

    def _delete_queued(self, message_id: bytes) -> None:
        self.store._conn.execute(
            "DELETE FROM queued_sends WHERE message_id=?", (message_id,)
        )

    async def send_file(
        self,
        conversation: str,
        path: Path | str,
        progress: Progress | None = None,
        *,
        caption: str = "",
    ) -> str:
        """Encrypt and upload a file (over HTTP, beside the stream), then queue the
        message that names it.  Raises ``ClientError`` if the file cannot be read or the
        server cannot be reached (run it again: the upload resumes)."""
        ref = await upload_file(self.client, path, progress, caption=caption)
        return self.send(conversation, ref)

    async def save_file(
        self, ref: proto.FileRef, dest_dir: Path | str, progress: Progress | None = None
    ) -> Path:
        """Fetch, check and decrypt an attachment into ``dest_dir`` (never overwriting);
        see ``download_file`` for what it raises."""
        return await download_file(self.client, ref, dest_dir, progress)

    # --- reading ------------------------------------------------------------------------------

    async def mark_seen(self, conversation: str) -> None:
        """The person looked at the conversation: clear its unread count and, when
        online, send read receipts (best effort: they are a courtesy, not a duty)."""
        ids = self.history.mark_seen(conversation)
        if ids and self.status is Status.ONLINE:
            with contextlib.suppress(ClientError):
                await self.call(lambda: self.client.mark_read(ids))

    # --- groups, directory, devices -------------------------------------------------------------

    async def directory(self) -> list[proto.DirectoryEntry]:
        """The organisation's users (cached for names).  Raises ``ClientError`` offline."""
        return await fetch_directory(self.client)

    async def create_group(self, name: str, members: list[str]) -> str:
        """Create a group; its conversation id.  Needs the server (rule 4)."""
        group = await self.call(lambda: self.client.create_group(name, members))
        self._emit(HistoryChanged(proto.group_conversation(group)))
        return proto.group_conversation(group)

    async def change_group(
        self, group: str, action: proto.GroupAction, user: str
    ) -> None:
        await self.call(lambda: self.client.change_group(group, action, user))
        self._emit(HistoryChanged(proto.group_conversation(group)))

    async def refresh_devices(self, user: str) -> list[DeviceTrust]:
        """Fetch ``user``'s certified devices (each certificate checked) and say which
        this device verified.  Offline, what this device knew already."""
        with contextlib.suppress(ClientError):
            entries = await self.client.directory(user)
            with self.store.transaction():
                for entry in entries:
                    self.client.device.verify_entry(entry)
        self._check_warnings()
        return self.verifications.devices(user)

    def policy(self) -> PolicyInForce | None:
        return policy_in_force(self.store)

    # --- verification ----------------------------------------------------------------------------

    async def verify(self, device_id: str) -> SasFlow:
        """Start verifying one certified device of a contact (or of our own user)."""
        peer = self.store.get_peer(device_id)
        if peer is None:
            raise ClientError(f"device {device_id} is not known here: refresh first")
        if self.status is not Status.ONLINE:
            raise ClientError("verification needs the server: wait for the connection")
        flow, out = self.verifications.start(peer)
        self._emit(VerificationChanged(flow))
        await self.call(lambda: self._send_steps(out))
        return flow

    async def verification(self, flow: SasFlow, action: str) -> None:
        """Our person's ``accept``, ``confirm``, ``mismatch`` or ``cancel``."""
        out = self.verifications.act(flow.flow, action)
        self._emit(VerificationChanged(flow))
        with contextlib.suppress(ClientError):
            await self.call(lambda: self._send_steps(out))

    async def _send_steps(self, out: list[Outgoing]) -> None:
        """Each step over Olm to its one device, never recorded in the history."""
        for peer, step in out:
            # ``_ensure_sessions`` claims a one-time key where no Olm session exists yet
            peers = await self.client._ensure_sessions([peer])
            if not peers:
                raise LocalProtocolError(f"no session with device {peer.device_id}")
            conversation = proto.conversation_for(self.me, peer.user)
            self.client.device.encrypt(peers, conversation, step, record=False)
        if out:
            await self.client.flush_outbox()
