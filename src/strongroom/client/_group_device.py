"""Groups on the device: chains kept, room keys decided, Megolm messages opened and sealed.

The decisions are ``_groups``' (what a chain says, whom a key may reach, what to believe);
this module keeps their results in the device store and does the Megolm work.  No
network here: where a decision needs chain entries or certificates the device does not
hold, it says so (``needs``) and the driver (``_client``) fetches them and asks again.
Rules:

1. A verified chain entry is stored once and never removed (``GroupView`` rule 3); the
   view is rebuilt from the store when the device starts.
2. A room key is accepted only as ``accept_room_key`` decides; until its chain is at hand
   it waits in ``pending`` (it arrived over Olm, whose ratchet cannot be rewound).
3. A group message is opened only with a session a member device shared with us, and
   shown once: a (session, index) pair already read is a replay, dropped with a warning.
   A message whose key has not arrived waits in ``pending`` until the next key arrives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import msgspec

from strongroom import crypto, proto
from strongroom.errors import CryptoError, DecryptionError, RemoteProtocolError

from ._device import Device, Origin, Received
from ._groups import (
    GroupChainError,
    GroupState,
    GroupView,
    Recipients,
    SessionOrigin,
    SharedSession,
    Verdict,
    accept_room_key,
    check_group_message,
    plan_recipients,
    rotation_reason,
)
from ._store import Peer

__all__ = ["GroupDevice", "Needs"]

#: Chain entries a room key carries at most, so it fits one Olm copy with room to spare.
_ENTRIES_BUDGET = 40_000
_signed = msgspec.msgpack.Decoder(proto.Signed)


class _Audience(msgspec.Struct, frozen=True):
    group: str
    session_id: str
    created_at: int
    members: list[str]
    devices: list[str]


@dataclass
class Needs:
    """What the driver must fetch before the device can decide: certificates of devices
    it does not know, and newer chain entries of groups."""

    devices: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.devices or self.groups)


class GroupDevice:
    """The group half of one device, over the same store as its ``Device``."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.store = device.store
        self.view = GroupView()
        for entries in self.store.group_entries().values():
            self.view.restore([_signed.decode(e) for e in entries], self.lookup)
        device.group_members = self.members

    # --- what the device knows --------------------------------------------------------

    def lookup(self, device_id: str) -> Peer | None:
        """A device certified for its user, as verified here (ourselves included)."""
        if device_id == self.device.device_id:
            account = self.device.account()
            return Peer(
                device_id, self.device.user, account.ed25519, account.curve25519, ""
            )
        return self.store.get_peer(device_id)

    def members(self, group: str) -> frozenset[str]:
        state = self.view.state(group)
        return frozenset() if state is None else state.members

    def state(self, group: str) -> GroupState | None:
        return self.view.state(group)

    def unknown_authors(self, entries: list[proto.Signed]) -> set[str]:
        unknown: set[str] = set()
        for entry in entries:
            try:
                author = proto.decode_group_change(entry.body).author_device
            except RemoteProtocolError:
                continue  # the chain check names it
            if self.lookup(author) is None:
                unknown.add(author)
        return unknown

    def take_entries(self, entries: list[proto.Signed], *, stale_ok: bool) -> None:
        """Verify entries into the view and keep what verified.  Raises
        ``GroupChainError`` (what verified before the bad entry is kept)."""
        try:
            self.view.update(entries, self.lookup, stale_ok=stale_ok)
        finally:
            self._persist(entries)

    def _persist(self, entries: list[proto.Signed]) -> None:
        if not entries:
            return
        try:
            group = proto.decode_group_change(entries[0].body).group
        except RemoteProtocolError:
            return
        with self.store.transaction():
            for seq, entry in enumerate(self.view.entries(group)):
                self.store.put_group_entry(group, seq, proto.encode(entry))

    # --- room keys -------------------------------------------------------------------------

    def process_room_keys(self) -> Needs:
        """Decide every waiting room key that can be decided; say what the rest need."""
        needs = Needs()
        for pending_id, sender_device, data, _ in self.store.pending("room-key"):
            payload = proto.decode_payload(data)
            key = payload.content
            assert isinstance(key, proto.RoomKey)
            unknown = self.unknown_authors(key.entries)
            if unknown:
                needs.devices |= unknown
                continue
            sender = self.lookup(sender_device)
            if sender is None:
                needs.devices.add(sender_device)
                continue
            before = len(self.view.entries(key.group))
            decision = accept_room_key(self.view, key, sender, self.lookup)
            if len(self.view.entries(key.group)) != before:
                self._persist(self.view.entries(key.group))
            for warning in decision.warnings:
                self.device.warn(warning)
            if decision.verdict is Verdict.DEFER:
                needs.groups.add(key.group)
                continue
            with self.store.transaction():
                self.store.remove_pending(pending_id)
                if decision.verdict is Verdict.DROP:
                    self.device.warn(f"refused a group key: {decision.reason}")
                    continue
                assert decision.session is not None and decision.origin is not None
                self.store.put_inbound_group(
                    sender.device_id,
                    decision.session.session_id,
                    key.group,
                    sender.user,
                    decision.session.pickle(self.store.pickle_key),
                )
            if decision.fetch:
                needs.groups.add(key.group)
        return needs

    def defer_stuck_keys(self) -> None:
        """Room keys still undecidable after fetching: refused, with a warning."""
        for pending_id, sender_device, _, _ in self.store.pending("room-key"):
            with self.store.transaction():
                self.store.remove_pending(pending_id)
            self.device.warn(
                f"refused a group key from {sender_device}: its group's membership "
                "could not be verified"
            )

    # --- group messages ---------------------------------------------------------------------

    def open(self, deliver: proto.Deliver) -> tuple[Received | None, Needs]:
        """Open a shared (Megolm) delivery.  Waits in ``pending`` if its key is missing."""
        short = deliver.id.hex()[:8]
        needs = Needs()
        dev = self.device
        peer = self.lookup(deliver.sender)
        if deliver.sender == dev.device_id:
            dev.warn(f"dropped message {short}: the server sent our own message back")
            return None, needs
        if peer is None or peer.revoked:
            dev.warn(f"dropped message {short}: its sender is revoked or not certified")
            return None, needs
        if self.store.seen(deliver.sender, deliver.id):
            return None, needs
        try:
            envelope = proto.decode_megolm_envelope(deliver.body)
        except RemoteProtocolError:
            dev.warn(f"dropped message {short}: malformed group envelope")
            return None, needs
        known = self.store.inbound_group(deliver.sender, envelope.session_id)
        if known is None:
            with self.store.transaction():
                self.store.add_pending(
                    "group-message",
                    deliver.sender,
                    proto.encode_frame(deliver),
                    dev.clock(),
                )
            return None, needs
        group, sender_user, pickle = known
        key = self.store.pickle_key
        try:
            session = crypto.InboundGroupSession.from_pickle(pickle, key)
            opened = session.decrypt(envelope.ciphertext)
            payload = proto.decode_group_payload(opened.plaintext)
        except (DecryptionError, RemoteProtocolError, CryptoError):
            dev.warn(
                f"dropped group message {short} from {peer.user}: it does not decrypt"
            )
            return None, needs
        first = self.store.megolm_seen(envelope.session_id, opened.message_index)
        if first is not None and first != deliver.id:
            dev.warn(
                f"dropped group message {short} from {peer.user}: replayed (this key "
                "position was read before)"
            )
            return None, needs
        if payload.message_id != deliver.id:
            dev.warn(f"dropped group message {short}: the server changed its id")
            return None, needs
        origin = SessionOrigin(group, envelope.session_id, sender_user, peer.device_id)
        decision = check_group_message(self.view, origin, payload, self.lookup)
        for warning in decision.warnings:
            dev.warn(warning)
        if decision.verdict is Verdict.DEFER:
            needs.groups.add(group)
            with self.store.transaction():
                self.store.add_pending(
                    "group-message", deliver.sender, proto.encode_frame(deliver), 0
                )
            return None, needs
        if decision.verdict is Verdict.DROP:
            dev.warn(f"dropped group message {short}: {decision.reason}")
            return None, needs
        if decision.fetch:
            needs.groups.add(group)
        with self.store.transaction():
            self.store.mark_megolm_seen(
                envelope.session_id, opened.message_index, deliver.id
            )
            self.store.mark_seen(deliver.sender, deliver.id, dev.clock())
            shown = dev.apply(
                Origin(
                    deliver.id,
                    peer,
                    proto.group_conversation(group),
                    payload.sent_at,
                    payload.expires_at,
                    group=group,
                ),
                payload.content,
            )
        return shown, needs

    def retry_pending_messages(self) -> list[Received]:
        """Open group messages that waited for their key, now that keys may have come."""
        shown: list[Received] = []
        for pending_id, _, data, at in self.store.pending("group-message"):
            frame = proto.decode_server_frame(data)
            assert isinstance(frame, proto.Deliver)
            with self.store.transaction():
                self.store.remove_pending(pending_id)
            if (
                self.store.inbound_group(
                    frame.sender, proto.decode_megolm_envelope(frame.body).session_id
                )
                is None
                and at == 0
            ):
                continue  # deferred twice for its chain: already warned
            received, _ = self.open(frame)
            if received is not None:
                shown.append(received)
        return shown

    def give_up_pending_messages(self) -> None:
        for pending_id, sender, data, _ in self.store.pending("group-message"):
            with self.store.transaction():
                self.store.remove_pending(pending_id)
            frame = proto.decode_server_frame(data)
            assert isinstance(frame, proto.Deliver)
            self.device.warn(
                f"dropped group message {frame.id.hex()[:8]} from {sender}: no key for "
                "it ever arrived (sent before this device was a member, or withheld)"
            )

    # --- sending ------------------------------------------------------------------------------

    def recipients(
        self, group: str, listed: dict[str, list[str]]
    ) -> tuple[GroupState, Recipients]:
        state = self.view.state(group)
        if state is None:
            raise GroupChainError(f"group {group[:8]}… is not known on this device")
        planned = plan_recipients(
            state,
            listed,
            self.lookup,
            self_user=self.device.user,
            self_device=self.device.device_id,
        )
        for warning in planned.warnings:
            self.device.warn(warning)
        return state, planned

    def session_for(
        self, state: GroupState, recipients: Recipients
    ) -> tuple[crypto.OutboundGroupSession, proto.RoomKey | None]:
        """Our Megolm session for the group, and the room key to share first if it is new
        (rotated because the audience changed, or by count or age)."""
        now = self.device.clock()
        stored = self.store.outbound_group(state.group)
        session: crypto.OutboundGroupSession | None = None
        shared: SharedSession | None = None
        if stored is not None:
            session = crypto.OutboundGroupSession.from_pickle(
                stored[0], self.store.pickle_key
            )
            audience = msgspec.msgpack.decode(stored[1], type=_Audience)
            shared = SharedSession(
                audience.group,
                audience.session_id,
                audience.created_at,
                frozenset(audience.members),
                frozenset(audience.devices),
            )
        reason = rotation_reason(
            shared,
            sent=0 if session is None else session.message_index,
            state=state,
            recipients=recipients,
            now=now,
        )
        if session is not None and reason is None:
            return session, None
        session = crypto.OutboundGroupSession.create(now)
        made = SharedSession.made_for(session, state, recipients)
        self._save_outbound(session, made)
        key = proto.RoomKey(
            group=state.group,
            session_id=session.session_id,
            session_key=session.session_key,
            head=state.head,
            entries=self.view.entries(state.group, max_bytes=_ENTRIES_BUDGET),
        )
        return session, key

    def _save_outbound(
        self, session: crypto.OutboundGroupSession, made: SharedSession
    ) -> None:
        audience = _Audience(
            made.group,
            made.session_id,
            made.created_at,
            sorted(made.members),
            sorted(made.devices),
        )
        with self.store.transaction():
            self.store.put_outbound_group(
                made.group,
                session.pickle(self.store.pickle_key),
                msgspec.msgpack.encode(audience),
            )

    def seal(
        self,
        state: GroupState,
        session: crypto.OutboundGroupSession,
        recipients: Recipients,
        content: proto.UserContent,
        *,
        expires_at: int | None = None,
        blobs: list[str] | None = None,
        message_id: bytes | None = None,
    ) -> proto.SendShared:
        """Encrypt one group message with Megolm and queue it (after any room key)."""
        dev = self.device
        message_id = message_id or os.urandom(16)
        now = dev.clock()
        payload = proto.GroupPayload(
            sender_user=dev.user,
            sender_device=dev.device_id,
            group=state.group,
            message_id=message_id,
            sent_at=now,
            head=state.head,
            content=content,
            expires_at=expires_at,
        )
        ciphertext = session.encrypt(proto.encode(payload))
        envelope = proto.MegolmEnvelope(session.session_id, ciphertext)
        send = proto.SendShared(
            id=message_id,
            devices=sorted(recipients.device_ids),
            body=proto.encode(envelope),
            expires_at=expires_at,
            blobs=blobs or [],
        )
        with self.store.transaction():
            stored = self.store.outbound_group(state.group)
            assert stored is not None
            self.store.put_outbound_group(
                state.group, session.pickle(self.store.pickle_key), stored[1]
            )
            if not isinstance(content, proto.Receipt):
                dev.record_own(
                    message_id,
                    proto.group_conversation(state.group),
                    content,
                    now,
                    expires_at,
                )
            self.store.put_outbox(message_id, proto.encode_frame(send), now)
        return send
