"""IT's orders on the device: the policy it enforces, wipe orders, disabled users.

Rules (DESIGN.md, "IT's orders are IT's"):

1. An order counts only if the pinned authority key signed its exact bytes, and it names
   this organisation (and, for a policy, this device's user; for a wipe, this device).
   Anything else is refused with a warning and changes nothing.
2. Policy versions only grow: a policy older than the one enforced is a replay and is
   refused; the same version again is accepted only if it is the same document.
3. The verified policy is kept in the encrypted store as the signed bytes, and checked
   again each time it is read, so what is enforced is always what the authority signed.
4. Everything here is sans-I/O: the driver (``_client``) answers the server.
"""

from __future__ import annotations

import msgspec

from strongroom import crypto, proto
from strongroom.errors import CryptoError, OrderRefusedError, ProtocolError

from ._store import LocalStore

__all__ = [
    "PolicyInForce",
    "accept_policy",
    "accept_wipe",
    "describe",
    "policy_in_force",
    "rules_in_force",
    "stored_policy",
]

_signed = msgspec.msgpack.Decoder(proto.Signed)


class PolicyInForce(msgspec.Struct, frozen=True):
    """A verified policy, as a person should see it: its version and its rules in words."""

    version: int
    issued_at: int
    rules: list[str]
    escrow: bool = False


def _identity(store: LocalStore) -> tuple[crypto.AuthorityPublicKey, str, str, str]:
    raw = store.get_meta("authority_key") or b""
    return (
        crypto.AuthorityPublicKey(raw),
        store.meta_text("org"),
        store.meta_text("user"),
        store.meta_text("device_id"),
    )


def stored_policy(store: LocalStore) -> proto.Policy | None:
    data = store.get_meta("policy")
    if data is None:
        return None
    authority, org, user, _ = _identity(store)
    try:
        policy = authority.verify_policy(_signed.decode(data))
    except (msgspec.DecodeError, CryptoError, ProtocolError):
        return None  # rule 3: a damaged store enforces nothing it cannot verify
    if policy.org != org or policy.user != user:
        return None
    return policy


def accept_policy(store: LocalStore, signed: proto.Signed) -> tuple[proto.Policy, bool]:
    """Verify and keep a policy (rules 1-2); returns it and whether it is new.

    Raises ``OrderRefusedError`` (not signed by our authority, for another organisation
    or user, or older than the one enforced) with a sentence saying why.
    """
    authority, org, user, _ = _identity(store)
    try:
        policy = authority.verify_policy(signed)
    except CryptoError as exc:
        raise OrderRefusedError(
            "refused a policy not signed by this organisation's authority"
        ) from exc
    if policy.org != org or policy.user != user:
        raise OrderRefusedError(
            f"refused a policy made for {policy.user} at {policy.org}, not for this device"
        )
    current = stored_policy(store)
    data = proto.encode(signed)
    if current is not None:
        if policy.version < current.version:
            raise OrderRefusedError(
                f"refused policy version {policy.version}: this device enforces version "
                f"{current.version} already (an old policy replayed)"
            )
        if policy.version == current.version:
            if data != store.get_meta("policy"):
                raise OrderRefusedError(
                    f"refused a second, different policy numbered {policy.version}"
                )
            return policy, False
    store.set_meta("policy", data)
    return policy, True


def accept_wipe(store: LocalStore, signed: proto.Signed) -> proto.WipeOrder:
    """Verify a wipe order for this very device (rule 1).

    Raises ``OrderRefusedError`` when it is forged or meant for another device.
    """
    authority, org, _, device_id = _identity(store)
    try:
        order = authority.verify_wipe_order(signed)
    except CryptoError as exc:
        raise OrderRefusedError(
            "ignored a wipe order not signed by this organisation's authority"
        ) from exc
    if order.org != org or order.device_id != device_id:
        raise OrderRefusedError(
            f"ignored a wipe order for device {order.device_id}, not this device"
        )
    return order


def rules_in_force(store: LocalStore) -> proto.PolicyRules:
    """The rules this device obeys (the defaults when the organisation set none)."""
    policy = stored_policy(store)
    return proto.PolicyRules() if policy is None else policy.rules


def describe(rules: proto.PolicyRules) -> list[str]:
    """The rules in words, for people."""
    words = []
    if rules.retention_days is not None:
        words.append(
            f"messages are deleted from devices after {rules.retention_days} days"
        )
    if rules.default_timer_seconds is not None:
        words.append(
            f"messages disappear after {rules.default_timer_seconds} s unless a "
            "conversation sets its own timer"
        )
    if not rules.attachments_allowed:
        words.append("attachments are not allowed")
    elif rules.max_attachment_bytes is not None:
        words.append(f"attachments up to {rules.max_attachment_bytes:,} bytes")
    if rules.passcode_required:
        words.append(
            f"a passcode of at least {rules.passcode_min_length} characters protects "
            f"the device; {rules.passcode_max_attempts} wrong tries wipe it"
        )
    if rules.max_devices_per_user is not None:
        words.append(f"at most {rules.max_devices_per_user} devices per person")
    if rules.min_client_version is not None:
        words.append(f"clients older than {rules.min_client_version} may not send")
    if not rules.read_receipts_allowed:
        words.append("read receipts are off")
    if rules.escrow:
        words.append(
            "LAWFUL-ACCESS ESCROW IS ON: a sealed copy of each message is kept per "
            "conversation and day, openable only by k of n custodians"
        )
    return words or ["no restrictions"]


def policy_in_force(store: LocalStore) -> PolicyInForce | None:
    """The policy this device enforces, or ``None`` when the organisation has none."""
    policy = stored_policy(store)
    if policy is None:
        return None
    return PolicyInForce(
        version=policy.version,
        issued_at=policy.issued_at,
        rules=describe(policy.rules),
        escrow=policy.rules.escrow,
    )
