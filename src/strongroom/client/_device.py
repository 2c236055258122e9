"""The device core: what to encrypt to whom, and what to believe of what arrives.

No network here: the driver (``_client``) fetches directory entries and one-time keys and
moves frames; this module decides.  Rules:

1. Trust only the pinned authority.  A device is a ``Peer`` only if its certificate verifies
   under the authority key pinned at activation, names this organisation, and its device id
   is the one derived from its key.  A verified revocation makes it revoked for good.  What
   fails is skipped, with a warning the user sees.
2. One-time keys are used only if signed by the certified device key.
3. Every payload carries sender, recipient, conversation, message id and a per-pair counter
   inside the encryption.  A delivery is shown only if all of these agree with the envelope
   the server presented and the Olm session that decrypted it.  Otherwise it is dropped
   with a warning (duplicates of something already shown are dropped silently).
4. State that belongs together commits together (see ``LocalStore.transaction``).
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Callable

import msgspec

from strongroom import crypto, proto
from strongroom.errors import CryptoError, DecryptionError, RemoteProtocolError

from ._store import LocalStore, Peer, StoredMessage

__all__ = ["Device", "Received"]


class Received(msgspec.Struct, frozen=True):
    """Something shown to the user: it passed every check.

    ``kind`` says what: ``text`` (``reply_to`` when it answers one), ``file``, ``edit``
    and ``reaction`` (of ``target``), ``receipt`` (``receipt`` is ``delivered`` or
    ``read``, for ``targets``) or ``timer`` (the conversation's new disappearing timer,
    ``timer`` seconds or None).  ``group`` is the group id for a group conversation.
    """

    id: str
    from_user: str
    from_device: str
    conversation: str
    sent_at: int
    text: str = ""
    kind: str = "text"
    group: str | None = None
    reply_to: str | None = None
    target: str | None = None
    emoji: str | None = None
    removed: bool = False
    receipt: str | None = None
    targets: list[str] = []
    file: proto.FileRef | None = None
    timer: int | None = None
    expires_at: int | None = None


class Origin(msgspec.Struct, frozen=True):
    """Who sent a verified payload, where, when: what content is applied against."""

    message_id: bytes
    peer: Peer
    conversation: str
    sent_at: int
    expires_at: int | None
    group: str | None = None


class Device:
    """One activated device, over its local store."""

    def __init__(self, store: LocalStore, clock: Callable[[], int]) -> None:
        self.store = store
        self.clock = clock
        self.device_id = store.meta_text("device_id")
        self.user = store.meta_text("user")
        self.org = store.meta_text("org")
        self.server_url = store.meta_text("server_url")
        raw = store.get_meta("authority_key")
        if raw is None:
            raise CryptoError("the device store has no pinned authority key")
        self.authority = crypto.AuthorityPublicKey(raw)
        self.warnings: list[str] = []
        #: The members of a group per its verified chain (set by the group layer).
        self.group_members: Callable[[str], frozenset[str]] = lambda group: frozenset()

    # --- account ------------------------------------------------------------------------

    def account(self) -> crypto.DeviceAccount:
        pickle = self.store.meta_text("account")
        return crypto.DeviceAccount.from_pickle(pickle, self.store.pickle_key)

    def save_account(self, account: crypto.DeviceAccount) -> None:
        self.store.set_meta("account", account.pickle(self.store.pickle_key).encode())

    def hello(self, challenge: proto.Challenge, client_version: str) -> proto.Hello:
        """Answer a challenge, but only from a server of our own organisation.

        Raises ``RemoteProtocolError`` if the server does not name our pinned authority.
        """
        if challenge.server != self.authority.fingerprint_id():
            raise RemoteProtocolError(
                "this server does not belong to the organisation this device was "
                "activated with",
                "auth_failed",
            )
        signature = self.account().sign(
            proto.hello_signing_input(challenge.nonce, self.device_id, challenge.server)
        )
        return proto.Hello(
            device_id=self.device_id, signature=signature, client_version=client_version
        )

    def new_keys(self, count: int) -> proto.UploadKeys:
        """Fresh signed one-time keys; the account is saved before they leave the device."""
        with self.store.transaction():
            account = self.account()
            keys = account.new_one_time_keys(count)
            self.save_account(account)
        return proto.UploadKeys(one_time_keys=keys)

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self.store.add_warning(self.clock(), text)

    # --- the directory --------------------------------------------------------------------

    def verify_entry(self, entry: proto.DeviceEntry) -> Peer | None:
        """The peer an entry describes, or ``None`` (with a warning) if it is not trusted."""
        try:
            cert = self.authority.verify_certificate(entry.certificate)
        except CryptoError:
            self.warn(
                "skipped a device whose certificate is not signed by this organisation's "
                "authority (the server may be tampering with the directory)"
            )
            return None
        if cert.org != self.org or crypto.device_id_for(cert.ed25519) != cert.device_id:
            self.warn(
                f"skipped device {cert.device_id}: its certificate is inconsistent"
            )
            return None
        revoked = False
        if entry.revocation is not None:
            try:
                revocation = self.authority.verify_revocation(entry.revocation)
                revoked = revocation.device_id == cert.device_id
            except CryptoError:
                self.warn(f"ignored a forged revocation for device {cert.device_id}")
        known = self.store.get_peer(cert.device_id)
        peer = Peer(
            device_id=cert.device_id,
            user=cert.user,
            ed25519=cert.ed25519,
            curve25519=cert.curve25519,
            name=cert.name,
            revoked=revoked or (known is not None and known.revoked),
        )
        self.store.put_peer(peer)
        return peer

    def recipients(
        self, entries: list[proto.DeviceEntry], users: set[str]
    ) -> list[Peer]:
        """Certified, unrevoked devices of ``users`` among ``entries``, other than this one.

        A certified device of anyone else in the answer is the server trying to add a
        listener to the conversation: it is skipped with a warning.
        """
        peers: list[Peer] = []
        with self.store.transaction():
            for entry in entries:
                peer = self.verify_entry(entry)
                if peer is None or peer.revoked or peer.device_id == self.device_id:
                    continue
                if peer.user not in users:
                    self.warn(
                        f"skipped device {peer.device_id} of {peer.user}: the server listed "
                        f"it among the devices of {', '.join(sorted(users))}"
                    )
                    continue
                peers.append(peer)
        return peers

    def needs_session(self, peer: Peer) -> bool:
        return not self.store.sessions_for(peer.device_id)

    def establish(self, peer: Peer, key: proto.OneTimeKey) -> bool:
        """Start an Olm session with ``peer`` from a claimed one-time key.

        Returns False (with a warning) if the key is not signed by the peer's device key.
        """
        try:
            crypto.verify_one_time_key(peer.device_id, peer.ed25519, key)
        except CryptoError:
            self.warn(
                f"skipped device {peer.device_id}: its one-time key is not signed by it"
            )
            return False
        session = self.account().create_outbound(peer.curve25519, key.key)
        with self.store.transaction():
            self.store.put_session(
                session.session_id,
                peer.device_id,
                session.pickle(self.store.pickle_key),
                self.clock(),
            )
        return True

    # --- sending ----------------------------------------------------------------------------

    def encrypt(
        self,
        peers: list[Peer],
        conversation: str,
        content: proto.OlmContent,
        *,
        message_id: bytes | None = None,
        expires_at: int | None = None,
        record: bool = True,
        blobs: list[str] | None = None,
    ) -> proto.Send:
        """Encrypt ``content`` once per peer over Olm and queue it in the outbox.

        With ``record``, what the user sent is kept in the history (text and files, the
        effect of edits, reactions and timers) in the same transaction.
        """
        message_id = message_id or os.urandom(16)
        now = self.clock()
        account = self.account()
        copies: list[proto.Copy] = []
        with self.store.transaction():
            for peer in peers:
                stored = self.store.sessions_for(peer.device_id)
                if not stored:
                    continue
                session_id, pickle = stored[0]
                session = crypto.OlmSession.from_pickle(pickle, self.store.pickle_key)
                payload = proto.Payload(
                    sender_user=self.user,
                    sender_device=self.device_id,
                    recipient_user=peer.user,
                    recipient_device=peer.device_id,
                    conversation=conversation,
                    message_id=message_id,
                    counter=self.store.next_sent_counter(peer.device_id),
                    sent_at=now,
                    content=content,
                    expires_at=expires_at,
                )
                kind, ciphertext = session.encrypt(proto.encode(payload))
                self.store.put_session(
                    session_id,
                    peer.device_id,
                    session.pickle(self.store.pickle_key),
                    now,
                )
                envelope = proto.OlmEnvelope(account.curve25519, kind, ciphertext)
                copies.append(
                    proto.Copy(device=peer.device_id, body=proto.encode(envelope))
                )
            send = proto.Send(
                id=message_id, copies=copies, expires_at=expires_at, blobs=blobs or []
            )
            if record and not isinstance(
                content, proto.RoomKey | proto.Receipt | proto.Verification
            ):
                self.record_own(message_id, conversation, content, now, expires_at)
            self.store.put_outbox(message_id, proto.encode_frame(send), now)
        return send

    def record_own(
        self,
        message_id: bytes,
        conversation: str,
        content: proto.UserContent,
        now: int,
        expires_at: int | None,
    ) -> None:
        """Keep what this device sent, as its other devices will (call in a transaction)."""
        me = Peer(self.device_id, self.user, "", "", "")
        origin = Origin(message_id, me, conversation, now, expires_at)
        self.apply(origin, content, outgoing=True)

    # --- content, wherever it came from ------------------------------------------------------

    def apply(
        self, origin: Origin, content: proto.UserContent, *, outgoing: bool = False
    ) -> Received | None:
        """Record one verified piece of content; what to show, or ``None`` (dropped, with
        a warning).  Runs inside the caller's transaction."""
        short = origin.message_id.hex()[:8]
        peer = origin.peer
        shown = Received(
            id=origin.message_id.hex(),
            from_user=peer.user,
            from_device=peer.device_id,
            conversation=origin.conversation,
            sent_at=origin.sent_at,
            group=origin.group,
            expires_at=origin.expires_at,
        )
        now = self.clock()
        if isinstance(content, proto.Text | proto.FileRef):
            is_file = isinstance(content, proto.FileRef)
            text = (
                content.caption if isinstance(content, proto.FileRef) else content.body
            )
            reply_to = content.reply_to if isinstance(content, proto.Text) else None
            self.store.add_message(
                StoredMessage(
                    origin.message_id,
                    peer.device_id,
                    peer.user,
                    origin.conversation,
                    origin.sent_at,
                    now,
                    text,
                    outgoing,
                    kind="file" if is_file else "text",
                    reply_to=reply_to,
                    expires_at=origin.expires_at,
                    file=proto.encode(content) if is_file else None,
                    state="sending" if outgoing else "",
                )
            )
            return msgspec.structs.replace(
                shown,
                text=text,
                kind="file" if is_file else "text",
                reply_to=None if reply_to is None else reply_to.hex(),
                file=content if isinstance(content, proto.FileRef) else None,
            )
        if isinstance(content, proto.Edit):
            original = self.store.get_message(content.target)
            if original is not None and original.from_user != peer.user:
                self.warn(
                    f"dropped edit {short} from {peer.user}: it is not their message"
                )
                return None
            if original is not None:
                self.store.edit_message(content.target, content.body, origin.sent_at)
            return msgspec.structs.replace(
                shown, kind="edit", text=content.body, target=content.target.hex()
            )
        if isinstance(content, proto.Reaction):
            self.store.react(
                content.target, peer.user, content.emoji, now, content.remove
            )
            return msgspec.structs.replace(
                shown,
                kind="reaction",
                emoji=content.emoji,
                removed=content.remove,
                target=content.target.hex(),
            )
        if isinstance(content, proto.Receipt):
            for target in content.targets:
                mine = self.store.get_message(target)
                if mine is not None and mine.outgoing:
                    self.store.add_receipt(target, peer.user, content.kind.value, now)
                    self._update_state(mine)
            return msgspec.structs.replace(
                shown,
                kind="receipt",
                receipt=content.kind.value,
                targets=[t.hex() for t in content.targets],
            )
        # proto.Timer: the conversation's disappearing timer from now on
        self.store.set_timer(origin.conversation, content.seconds)
        return msgspec.structs.replace(shown, kind="timer", timer=content.seconds)

    def _update_state(self, mine: StoredMessage) -> None:
        """D once every other member has a device that has it; R once each read it."""
        group = proto.group_of_conversation(mine.conversation)
        if group is None:
            others = set(mine.conversation.split(":")[1:]) - {self.user} or {self.user}
        else:
            others = set(self.group_members(group)) - {self.user}
        receipts = self.store.receipts(mine.message_id)
        read = {user for user, kind in receipts if kind == "read"}
        delivered = read | {user for user, kind in receipts if kind == "delivered"}
        if others and others <= read:
            self.store.set_state(mine.message_id, "read")
        elif others and others <= delivered:
            self.store.set_state(mine.message_id, "delivered")

    # --- receiving ------------------------------------------------------------------------------

    def unknown_sender(self, deliver: proto.Deliver) -> str | None:
        """The sender's device id if we must look up its certificate first."""
        peer = self.store.get_peer(deliver.sender)
        return deliver.sender if peer is None else None

    def open(self, deliver: proto.Deliver) -> Received | None:
        """Decrypt and check one delivery.  ``None`` means dropped (see ``warnings``)."""
        short = binascii.hexlify(deliver.id).decode()[:8]
        if deliver.sender == self.device_id:
            self.warn(
                f"dropped message {short}: the server sent our own message back to us"
            )
            return None
        peer = self.store.get_peer(deliver.sender)
        if peer is None:
            self.warn(
                f"dropped message {short}: sender {deliver.sender} is not certified"
            )
            return None
        if peer.revoked:
            self.warn(
                f"dropped message {short}: sender {deliver.sender} has been revoked"
            )
            return None
        if self.store.seen(deliver.sender, deliver.id):
            return None  # delivered again (at-least-once); already shown
        try:
            envelope = proto.decode_olm_envelope(deliver.body)
        except RemoteProtocolError:
            self.warn(f"dropped message {short}: malformed envelope")
            return None
        if envelope.sender_key != peer.curve25519:
            self.warn(
                f"dropped message {short}: not encrypted by the certified sender key"
            )
            return None
        with self.store.transaction():
            try:
                plaintext = self._decrypt(peer, envelope)
                payload = proto.decode_payload(plaintext)
            except (DecryptionError, RemoteProtocolError):
                self.warn(
                    f"dropped message {short} from {peer.user}: it does not decrypt "
                    "(replayed, corrupted or not meant for this device)"
                )
                return None
            problem = self._check(deliver, peer, payload)
            if problem is not None:
                self.warn(f"dropped message {short} from {peer.user}: {problem}")
                return None
            last = self.store.received_counter(peer.device_id)
            if payload.counter > last + 1:
                missing = payload.counter - last - 1
                self.warn(
                    f"{missing} message(s) from {peer.user} ({peer.device_id}) never arrived"
                )
            self.store.set_received_counter(peer.device_id, payload.counter)
            self.store.mark_seen(peer.device_id, deliver.id, self.clock())
            if isinstance(payload.content, proto.RoomKey):
                # decided by the group layer once the chain it names is at hand
                self.store.add_pending(
                    "room-key", peer.device_id, proto.encode(payload), self.clock()
                )
                return None
            if isinstance(payload.content, proto.Verification):
                # a step of a device verification: for its state machine
                # (``_verification``), never shown as a message
                self.store.add_pending(
                    "verification", peer.device_id, proto.encode(payload), self.clock()
                )
                return None
            origin = Origin(
                deliver.id,
                peer,
                payload.conversation,
                payload.sent_at,
                payload.expires_at,
            )
            return self.apply(origin, payload.content)

    def _check(
        self, deliver: proto.Deliver, peer: Peer, payload: proto.Payload
    ) -> str | None:
        if payload.sender_device != peer.device_id or payload.sender_user != peer.user:
            return "the sender inside the encryption is not the device that sent it"
        if (
            payload.recipient_device != self.device_id
            or payload.recipient_user != self.user
        ):
            return "it was addressed to another device (reflected or misrouted)"
        if payload.message_id != deliver.id:
            return "the server changed its message id"
        if isinstance(payload.content, proto.RoomKey):
            if payload.conversation != proto.group_conversation(payload.content.group):
                return "a group key sent in another conversation"
        else:
            parts = payload.conversation.split(":")
            if (
                len(parts) != 3
                or parts[0] != "dm"
                or payload.sender_user not in parts[1:]
                or self.user not in parts[1:]
            ):
                return "its conversation does not include both of us"
        if payload.counter <= self.store.received_counter(peer.device_id):
            return "replayed (its counter is not new)"
        return None

    def _decrypt(self, peer: Peer, envelope: proto.OlmEnvelope) -> bytes:
        key = self.store.pickle_key
        now = self.clock()
        for session_id, pickle in self.store.sessions_for(peer.device_id):
            session = crypto.OlmSession.from_pickle(pickle, key)
            if envelope.type == 0 and not session.matches(0, envelope.ciphertext):
                continue
            try:
                plaintext = session.decrypt(envelope.type, envelope.ciphertext)
            except DecryptionError:
                continue
            self.store.put_session(session_id, peer.device_id, session.pickle(key), now)
            return plaintext
        if envelope.type != 0:
            raise DecryptionError("no session decrypts this message")
        account = self.account()
        session, plaintext = account.create_inbound(
            peer.curve25519, envelope.ciphertext
        )
        self.save_account(account)
        self.store.put_session(
            session.session_id, peer.device_id, session.pickle(key), now
        )
        return plaintext
