"""Interactive verification of a device by comparing emoji or numbers (SAS).

The steps and their order are ``strongroom.proto``'s (``proto/_verification.py``); this
module decides, with no I/O: ``SasFlow`` is one verification between this device and one
other, ``Verifications`` keeps the flows of one device, reads the steps the device core
set aside for it (``pending`` kind ``verification``), and keeps what was verified.  The
driver (``Session``) sends the steps these return, over Olm, to that one device.

Rules:

1. Everything that changes a flow is in the transition table ``_NEXT`` below: a step or
   a person's action not allowed in the flow's state cancels the flow (``unexpected``).
2. The initiator's SAS key is checked against the responder's commitment before any
   string is shown (``_their_key``); a mismatch cancels the flow (``key_mismatch``).
3. A device is marked verified only when the person confirmed that the strings match
   *and* the other device's MAC over its certified Ed25519 key (the key the authority
   signed, as this device verified it) checks out (``_finish``).  The mark names that
   key: a device id is derived from its key, so it can never stand for another key.
4. A flow lives in memory only (its SAS keys cannot be saved) and for ``FLOW_TTL_MS``;
   after a restart the other side's next step is answered with ``cancel``/``unknown``.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from strongroom import crypto, proto
from strongroom.errors import ClientError, CryptoError, RemoteProtocolError

from ._device import Device
from ._store import LocalStore, Peer

__all__ = [
    "FLOW_TTL_MS",
    "DeviceTrust",
    "FlowState",
    "SasFlow",
    "Verifications",
    "fingerprint",
]

FLOW_TTL_MS = 10 * 60 * 1000
_Cancel = proto.VerificationCancelCode


class FlowState(enum.Enum):
    REQUESTED = "requested"  # we asked; waiting for them to accept
    INCOMING = "incoming"  # they asked; waiting for our person to accept
    ACCEPTED = "accepted"  # we accepted (committed); waiting for their key
    WAITING_KEY = "waiting-key"  # we sent our key; waiting for theirs
    COMPARING = "comparing"  # both keys known: the people compare the strings
    CONFIRMED = "confirmed"  # our person said "they match"; waiting for their MAC
    VERIFIED = "verified"  # done: their key is the one their owner holds
    CANCELLED = "cancelled"


S = FlowState

#: (state, what happened) → the state after it, when that is allowed (rule 1).  "What
#: happened" is a received step's tag or a person's action ("accept", "confirm").
_NEXT: dict[tuple[FlowState, str], FlowState] = {
    (S.REQUESTED, "accept"): S.WAITING_KEY,
    (S.INCOMING, "person-accept"): S.ACCEPTED,
    (S.ACCEPTED, "key"): S.COMPARING,
    (S.WAITING_KEY, "key"): S.COMPARING,
    (S.COMPARING, "mac"): S.COMPARING,  # held until our person confirms
    (S.COMPARING, "person-confirm"): S.CONFIRMED,
    (S.CONFIRMED, "mac"): S.CONFIRMED,  # then checked (rule 3)
    (S.VERIFIED, "done"): S.VERIFIED,
}


def fingerprint(ed25519: str) -> str:
    """A device key as people read it aloud: groups of four characters."""
    return " ".join(ed25519[i : i + 4] for i in range(0, len(ed25519), 4))


@dataclass
class _Side:
    user: str
    device: str
    ed25519: str  # the certified device key


@dataclass
class SasFlow:
    """One verification between this device (``me``) and ``them`` (rules 1 to 3)."""

    flow: bytes
    me: _Side
    them: _Side
    initiator: bool
    state: FlowState
    started_at: int
    reason: str = ""  # why it was cancelled, for the person
    _keys: crypto.SasKeys = field(default_factory=crypto.SasKeys)
    _their_sas_key: str | None = None
    _commitment: bytes | None = None
    _shared: crypto.SharedSas | None = None
    _their_mac: proto.VerifyMac | None = None

    @property
    def peer_device(self) -> str:
        return self.them.device

    @property
    def peer_user(self) -> str:
        return self.them.user

    @property
    def done(self) -> bool:
        return self.state in (S.VERIFIED, S.CANCELLED)

    # --- what the people compare ------------------------------------------------------

    def _sas_info(self) -> str:
        assert self._their_sas_key is not None
        a, b = (self.me, self.them) if self.initiator else (self.them, self.me)
        a_key, b_key = (
            (self._keys.public_key, self._their_sas_key)
            if self.initiator
            else (self._their_sas_key, self._keys.public_key)
        )
        return "|".join(
            (
                "STRONGROOM_SAS_V1",
                a.user,
                a.device,
                a_key,
                b.user,
                b.device,
                b_key,
                self.flow.hex(),
            )
        )

    def emoji(self) -> list[tuple[str, str]]:
        """Seven (emoji, name) pairs; the same on both devices unless someone is in the
        middle.  Raises ``ClientError`` before both keys are known."""
        if self._shared is None:
            raise ClientError("the verification has not reached the comparison yet")
        return [crypto.EMOJI[i] for i in self._shared.emoji_indices(self._sas_info())]

    def decimals(self) -> tuple[int, int, int]:
        """Three numbers (1000..9191), for people who compare digits instead."""
        if self._shared is None:
            raise ClientError("the verification has not reached the comparison yet")
        return self._shared.decimals(self._sas_info())

    # --- steps -------------------------------------------------------------------------

    def _commit_context(self) -> bytes:
        initiator, responder = (
            (self.me, self.them) if self.initiator else (self.them, self.me)
        )
        return b"\x00".join(
            (self.flow, initiator.device.encode(), responder.device.encode())
        )

    def _mac_info(self, sender: _Side, receiver: _Side) -> str:
        return "|".join(
            (
                "STRONGROOM_MAC_V1",
                sender.user,
                sender.device,
                receiver.user,
                receiver.device,
                self.flow.hex(),
                "",
            )
        )

    def _our_mac(self) -> proto.VerifyMac:
        assert self._shared is not None
        info = self._mac_info(self.me, self.them)
        key_id = f"ed25519:{self.me.device}"
        return proto.VerifyMac(
            key_mac=self._shared.mac(self.me.ed25519, info + key_id),
            keys_mac=self._shared.mac(key_id, info + "KEY_IDS"),
        )

    def _cancel(self, code: proto.VerificationCancelCode, reason: str) -> list[Step]:
        if self.done:
            return []
        self.state = S.CANCELLED
        self.reason = reason
        return [proto.VerificationCancel(code, reason[:200])]

    def _move(self, event: str) -> bool:
        nxt = _NEXT.get((self.state, event))
        if nxt is None:
            return False
        self.state = nxt
        return True

    def request(self) -> list[Step]:
        return [proto.VerifyRequest()]

    def accept(self) -> list[Step]:
        """Our person agrees to verify (responder)."""
        if not self._move("person-accept"):
            return self._cancel(_Cancel.UNEXPECTED, "accepted at the wrong time")
        commitment = crypto.sas_commitment(
            self._keys.public_key, self._commit_context()
        )
        return [proto.VerifyAccept(commitment)]

    def confirm(self) -> list[Step]:
        """Our person says the strings match: send our MAC (and finish, if theirs came)."""
        if not self._move("person-confirm"):
            return self._cancel(_Cancel.UNEXPECTED, "confirmed at the wrong time")
        steps: list[Step] = [self._our_mac()]
        if self._their_mac is not None:
            steps += self._finish()
        return steps

    def mismatch(self) -> list[Step]:
        """Our person says the strings differ: someone may be in the middle."""
        return self._cancel(
            _Cancel.MISMATCH, "the emoji or numbers did not match: not verified"
        )

    def cancel(self, reason: str = "cancelled") -> list[Step]:
        return self._cancel(_Cancel.USER, reason)

    def expire(self) -> list[Step]:
        return self._cancel(_Cancel.TIMEOUT, "the verification timed out")

    def receive(self, step: proto.VerificationStep) -> list[Step]:
        """Apply one step from ``them``; the steps to answer with."""
        if self.done:
            return []
        if isinstance(step, proto.VerificationCancel):
            self.state = S.CANCELLED
            self.reason = f"the other side cancelled ({step.code.value})" + (
                f": {step.reason}" if step.reason else ""
            )
            return []
        tag = str(type(step).__struct_config__.tag)
        before = self.state
        if not self._move(str(tag)):
            return self._cancel(
                _Cancel.UNEXPECTED, f"a {tag} step came at the wrong time"
            )
        if isinstance(step, proto.VerifyAccept):
            self._commitment = step.commitment
            return [proto.VerifyKey(self._keys.public_key)]
        if isinstance(step, proto.VerifyKey):
            return self._their_key(step.key, answer=before is S.ACCEPTED)
        if isinstance(step, proto.VerifyMac):
            self._their_mac = step
            return self._finish() if self.state is S.CONFIRMED else []
        return []  # done: informative

    def _their_key(self, key: str, *, answer: bool) -> list[Step]:
        if not answer:  # we are the initiator: the key must be the one committed to
            expected = crypto.sas_commitment(key, self._commit_context())
            if self._commitment is None or expected != self._commitment:
                return self._cancel(
                    _Cancel.KEY_MISMATCH,
                    "their key is not the one they committed to: not verified",
                )
        try:
            self._shared = self._keys.agree(key)
        except CryptoError:
            return self._cancel(_Cancel.KEY_MISMATCH, "their key is malformed")
        self._their_sas_key = key
        return [proto.VerifyKey(self._keys.public_key)] if answer else []

    def _finish(self) -> list[Step]:
        """Check their MAC over their certified key (rule 3)."""
        assert self._shared is not None and self._their_mac is not None
        info = self._mac_info(self.them, self.me)
        key_id = f"ed25519:{self.them.device}"
        try:
            self._shared.verify_mac(key_id, info + "KEY_IDS", self._their_mac.keys_mac)
            self._shared.verify_mac(
                self.them.ed25519, info + key_id, self._their_mac.key_mac
            )
        except CryptoError:
            return self._cancel(
                _Cancel.KEY_MISMATCH,
                "their device key is not the one this organisation certified: "
                "not verified (someone may be in the middle)",
            )
        self.state = S.VERIFIED
        return [proto.VerifyDone()]


Step = proto.VerificationStep
#: A step to send, to the one device it is for.
Outgoing = tuple[Peer, proto.Verification]


class DeviceTrust(msgspec.Struct, frozen=True):
    """One device of a user, as this device knows it."""

    device_id: str
    user: str
    name: str
    fingerprint: str
    verified: bool
    revoked: bool
    this_device: bool = False


class Verifications:
    """The verification flows of one device, and the devices it verified (rules 3 and 4)."""

    def __init__(self, device: Device, clock: Callable[[], int] | None = None) -> None:
        self.device = device
        self.store: LocalStore = device.store
        self.clock = clock or device.clock
        self.flows: dict[bytes, SasFlow] = {}

    # --- what was verified ----------------------------------------------------------------

    def is_verified(self, device_id: str) -> bool:
        peer = self.store.get_peer(device_id)
        row = self._db.execute(
            "SELECT ed25519 FROM verified_devices WHERE device_id=?", (device_id,)
        ).fetchone()
        return row is not None and peer is not None and row[0] == peer.ed25519

    def devices(self, user: str) -> list[DeviceTrust]:
        """Every device of ``user`` this device has verified a certificate of."""
        rows = self._db.execute(
            "SELECT device_id, user_id, ed25519, curve25519, name, revoked FROM peers "
            "WHERE user_id=? ORDER BY name, device_id",
            (user,),
        ).fetchall()
        found = [
            DeviceTrust(
                device_id=r[0],
                user=r[1],
                name=r[4],
                fingerprint=fingerprint(r[2]),
                verified=self.is_verified(r[0]),
                revoked=bool(r[5]),
                this_device=r[0] == self.device.device_id,
            )
            for r in rows
        ]
        if user == self.device.user and not any(d.this_device for d in found):
            account = self.device.account()
            found.insert(
                0,
                DeviceTrust(
                    self.device.device_id,
                    user,
                    "this device",
                    fingerprint(account.ed25519),
                    True,
                    False,
                    this_device=True,
                ),
            )
        return found

    def verified_users(self) -> set[str]:
        rows = self._db.execute("SELECT DISTINCT user_id FROM verified_devices")
        return {r[0] for r in rows.fetchall()}

    def alerts(self) -> list[str]:
        """A loud line for every unverified, unrevoked device of a user of whom this
        device verified another device: a new device nobody here has checked."""
        lines: list[str] = []
        for user in sorted(self.verified_users()):
            for d in self.devices(user):
                if not d.verified and not d.revoked and not d.this_device:
                    lines.append(
                        f"{user} has a device that is NOT verified: "
                        f"{d.name or d.device_id} ({d.device_id}); verify it before "
                        "trusting what it sends"
                    )
        return lines

    def _mark(self, flow: SasFlow) -> None:
        with self.store.transaction():
            self._db.execute(
                "INSERT INTO verified_devices VALUES (?, ?, ?, ?) "
                "ON CONFLICT(device_id) DO UPDATE SET ed25519=excluded.ed25519, "
                "at=excluded.at",
                (flow.them.device, flow.them.user, flow.them.ed25519, self.clock()),
            )

    @property
    def _db(self) -> Any:
        # The tables this module added (schema 3) are queried here, beside their rules,
        # rather than growing ``LocalStore`` for one caller.
        return self.store._conn

    # --- flows ------------------------------------------------------------------------------

    def start(self, peer: Peer) -> tuple[SasFlow, list[Outgoing]]:
        """Ask ``peer`` (a certified device) to verify.  Raises ``ClientError`` for this
        device itself or a revoked one."""
        if peer.device_id == self.device.device_id:
            raise ClientError("this is this device: there is nothing to compare")
        if peer.revoked:
            raise ClientError(f"device {peer.device_id} has been revoked")
        flow = SasFlow(
            flow=os.urandom(16),
            me=self._me(),
            them=_Side(peer.user, peer.device_id, peer.ed25519),
            initiator=True,
            state=S.REQUESTED,
            started_at=self.clock(),
        )
        self.flows[flow.flow] = flow
        return flow, self._out(flow, flow.request())

    def _me(self) -> _Side:
        return _Side(
            self.device.user, self.device.device_id, self.device.account().ed25519
        )

    def act(self, flow_id: bytes, action: str) -> list[Outgoing]:
        """Our person's ``accept``, ``confirm``, ``mismatch`` or ``cancel``."""
        flow = self.flows.get(flow_id)
        if flow is None:
            raise ClientError("no such verification (it may have timed out)")
        steps = {
            "accept": flow.accept,
            "confirm": flow.confirm,
            "mismatch": flow.mismatch,
            "cancel": flow.cancel,
        }[action]()
        return self._after(flow, steps)

    def _after(self, flow: SasFlow, steps: list[Step]) -> list[Outgoing]:
        if flow.state is S.VERIFIED and any(
            isinstance(s, proto.VerifyDone) for s in steps
        ):
            self._mark(flow)
        if flow.state is S.CANCELLED and flow.reason and "middle" in flow.reason:
            self.device.warn(
                f"verification of {flow.them.user}'s device {flow.them.device} failed: "
                f"{flow.reason}"
            )
        return self._out(flow, steps)

    def _out(self, flow: SasFlow, steps: list[Step]) -> list[Outgoing]:
        peer = self.store.get_peer(flow.them.device)
        if peer is None:
            return []
        return [(peer, proto.Verification(flow.flow, step)) for step in steps]

    def take_pending(self) -> tuple[list[SasFlow], list[Outgoing]]:
        """Apply the steps the device core set aside; the flows that changed and what
        to send."""
        changed: list[SasFlow] = []
        out: list[Outgoing] = []
        for pending_id, sender, data, _ in self.store.pending("verification"):
            with self.store.transaction():
                self.store.remove_pending(pending_id)
            try:
                payload = proto.decode_payload(data)
            except RemoteProtocolError:
                continue
            content = payload.content
            peer = self.store.get_peer(sender)
            if not isinstance(content, proto.Verification) or peer is None:
                continue
            flow = self.flows.get(content.flow)
            if flow is None:
                if isinstance(content.step, proto.VerifyRequest):
                    flow = SasFlow(
                        flow=content.flow,
                        me=self._me(),
                        them=_Side(peer.user, peer.device_id, peer.ed25519),
                        initiator=False,
                        state=S.INCOMING,
                        started_at=self.clock(),
                    )
                    self.flows[flow.flow] = flow
                    changed.append(flow)
                elif not isinstance(content.step, proto.VerificationCancel):
                    cancel = proto.VerificationCancel(
                        _Cancel.UNKNOWN, "this device does not know that verification"
                    )
                    out.append((peer, proto.Verification(content.flow, cancel)))
                continue
            if flow.them.device != sender:
                self.device.warn(
                    f"ignored a verification step from {sender}: the verification "
                    f"is with {flow.them.device}"
                )
                continue
            out += self._after(flow, flow.receive(content.step))
            changed.append(flow)
        now = self.clock()
        for flow in self.flows.values():
            if not flow.done and now - flow.started_at > FLOW_TTL_MS:
                out += self._out(flow, flow.expire())
                changed.append(flow)
        return changed, out

    def active(self) -> list[SasFlow]:
        return [f for f in self.flows.values() if not f.done]
