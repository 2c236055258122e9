"""IT's orders on the wire: policies, wipe orders and disabled users, each signed by the
authority, and the HTTP bodies of the admin API that manages them.

A device believes an order only after the pinned authority key verified the exact bytes
(``Signed``), each kind under its own domain string.  ``Policy.version`` grows with every
change anywhere in the organisation (the organisation's rules or any user's override), so a
device that enforces version N refuses anything older: a server cannot replay a weaker
policy.  A policy names the user it was made for, so a server cannot hand one user's looser
override to another.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from ._objects import DeviceId, Signed, UserId, _decode, _decoder_for

__all__ = [
    "DOMAIN_POLICY",
    "DOMAIN_USER_DISABLED",
    "DOMAIN_WIPE",
    "POLICY_KEYS",
    "AdminDevice",
    "AuditVerdict",
    "AuditView",
    "Policy",
    "PolicyChange",
    "PolicyFetch",
    "PolicyRules",
    "PolicySet",
    "PolicyView",
    "UserDisabled",
    "WipeOrder",
    "decode_policy",
    "decode_user_disabled",
    "decode_wipe_order",
    "parse_policy_value",
    "version_at_least",
]

DOMAIN_POLICY = b"strongroom/v1/policy"
DOMAIN_WIPE = b"strongroom/v1/wipe-order"
DOMAIN_USER_DISABLED = b"strongroom/v1/user-disabled"

Days = Annotated[int, msgspec.Meta(ge=1, le=36500)]
Seconds = Annotated[int, msgspec.Meta(ge=1, le=31_536_000)]


class PolicyRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a device must do.  ``None`` means "no limit" / "not set"."""

    #: Delete messages older than this many days from the device.
    retention_days: Days | None = None
    #: Disappearing timer for conversations whose members set none.
    default_timer_seconds: Seconds | None = None
    attachments_allowed: bool = True
    max_attachment_bytes: Annotated[int, msgspec.Meta(ge=1)] | None = None
    passcode_required: bool = False
    passcode_min_length: Annotated[int, msgspec.Meta(ge=4, le=128)] = 6
    #: Wrong passcodes in a row before the device wipes itself.
    passcode_max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    max_devices_per_user: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    #: Oldest client version allowed to send, like "0.1.0".
    min_client_version: (
        Annotated[str, msgspec.Meta(pattern=r"^\d+(\.\d+){0,3}$")] | None
    ) = None
    read_receipts_allowed: bool = True
    #: Lawful-access escrow: devices seal a copy per conversation-day.
    escrow: bool = False


#: The keys an administrator may set, in the order they are shown.
POLICY_KEYS: tuple[str, ...] = tuple(PolicyRules.__struct_fields__)


def parse_policy_value(key: str, text: str) -> Any:
    """``text`` as the type of ``key`` ("none" clears a limit).  Raises ``ValueError``
    with a sentence naming the key and what it takes."""
    if key not in POLICY_KEYS:
        raise ValueError(
            f"{key!r} is not a policy setting; settings: {', '.join(POLICY_KEYS)}"
        )
    default = getattr(PolicyRules(), key)
    lowered = text.strip().lower()
    value: Any
    if isinstance(default, bool):
        if lowered not in ("true", "false", "on", "off", "yes", "no"):
            raise ValueError(f"{key} takes true or false, not {text!r}")
        value = lowered in ("true", "on", "yes")
    elif lowered in ("none", "null", "off", "") and key != "passcode_min_length":
        value = None
    elif key == "min_client_version":
        value = text.strip()
    else:
        try:
            value = int(lowered)
        except ValueError:
            raise ValueError(f"{key} takes a whole number, not {text!r}") from None
    try:
        msgspec.convert({key: value}, PolicyRules)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{key}: {exc}") from None
    return value


def version_at_least(have: str, need: str) -> bool:
    """Whether client version ``have`` ("strongroom/0.1.0" or "0.1.0") is ``need`` or
    newer; a version that does not parse is never new enough."""

    def parts(text: str) -> tuple[int, ...]:
        try:
            return tuple(int(p) for p in text.rpartition("/")[2].split("."))
        except ValueError:
            return ()

    return parts(have) >= parts(need) and parts(have) != ()


class Policy(msgspec.Struct, frozen=True, tag="policy"):
    """The rules in force for ``user``'s devices from ``version`` on."""

    org: str
    user: UserId
    version: Annotated[int, msgspec.Meta(ge=1)]
    issued_at: int
    rules: PolicyRules
    #: With ``rules.escrow``: the custodians' public key S (ristretto255), which devices
    #: seal their escrow copies to (docs/lawful-access.md).
    escrow_key: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)] | None = (
        None
    )


class WipeOrder(msgspec.Struct, frozen=True, tag="wipe-order"):
    """IT orders one device to delete everything it holds."""

    org: str
    device_id: DeviceId
    ordered_at: int


class UserDisabled(msgspec.Struct, frozen=True, tag="user-disabled"):
    """IT disabled a user: every device revoked, and out of every group."""

    org: str
    user: UserId
    disabled_at: int


_policy = _decoder_for(Policy)
_wipe = _decoder_for(WipeOrder)
_disabled = _decoder_for(UserDisabled)


def decode_policy(data: bytes) -> Policy:
    return _decode(_policy, data, "policy")


def decode_wipe_order(data: bytes) -> WipeOrder:
    return _decode(_wipe, data, "wipe order")


def decode_user_disabled(data: bytes) -> UserDisabled:
    return _decode(_disabled, data, "user-disabled record")


# --- the admin API's bodies ----------------------------------------------------------------


class PolicySet(msgspec.Struct, frozen=True):
    """Set one rule for the organisation (``user`` None) or one user's override;
    ``value`` None with ``clear`` removes a user's override of ``key``."""

    key: str
    value: Any = None
    user: UserId | None = None
    clear: bool = False


class PolicyChange(msgspec.Struct, frozen=True):
    version: int
    at: str
    actor: str
    scope: str  # "organisation" or "user:<id>"
    key: str
    value: Any
    cleared: bool = False


class PolicyView(msgspec.Struct, frozen=True):
    """The rules in force for the organisation (or one user) at ``version``;
    ``overrides``: the keys a user override sets."""

    version: int
    rules: PolicyRules
    user: str | None = None
    overrides: list[str] = []


class AdminDevice(msgspec.Struct, frozen=True):
    """A device as IT sees it: identity, contact, what it enforces, wipe state."""

    device_id: str
    user: str
    name: str
    created_at: str
    last_seen: str | None
    revoked_at: str | None
    client_version: str
    policy_version: int | None
    compliance: str
    wipe_ordered_at: str | None = None
    wiped_at: str | None = None


class AuditVerdict(msgspec.Struct, frozen=True):
    """What ``audit verify`` found: entries checked, and each problem naming its entry."""

    entries: int
    problems: list[str]


class PolicyFetch(msgspec.Struct, frozen=True):
    """A device's ``GET /v1/policy``: the signed policy for its user, if there is one."""

    policy: Signed | None = None


class AuditView(msgspec.Struct, frozen=True):
    """One audit entry as shown to an auditor."""

    seq: int
    at: str
    actor: str
    action: str
    subject: str
    details: dict[str, str]
    hash: str
