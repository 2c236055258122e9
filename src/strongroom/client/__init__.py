"""The Strongroom device SDK: activation, the encrypted local store, sending and receiving.

``Device`` is the core (decisions, no network); ``Client`` drives it over HTTP and the
stream; ``activate`` turns an empty device home into an activated device.
"""

from ._activation import ActivatedDevice, activate
from ._client import CLIENT_VERSION, Client, SendResult
from ._device import Device, Received
from ._groups import (
    DeviceLookup,
    GroupChainError,
    GroupForkError,
    GroupRollbackError,
    GroupState,
    GroupView,
    HeadCheck,
    KeyDecision,
    MessageDecision,
    Recipients,
    RotationPolicy,
    SessionOrigin,
    SharedSession,
    Verdict,
    accept_room_key,
    check_group_message,
    create_group,
    next_change,
    plan_recipients,
    rotation_reason,
    sign_change,
    verify_chain,
)
from ._store import LocalStore, Peer, StoredMessage

__all__ = [
    "CLIENT_VERSION",
    "ActivatedDevice",
    "Client",
    "Device",
    "DeviceLookup",
    "GroupChainError",
    "GroupForkError",
    "GroupRollbackError",
    "GroupState",
    "GroupView",
    "HeadCheck",
    "KeyDecision",
    "LocalStore",
    "MessageDecision",
    "Peer",
    "Received",
    "Recipients",
    "RotationPolicy",
    "SendResult",
    "SessionOrigin",
    "SharedSession",
    "StoredMessage",
    "Verdict",
    "accept_room_key",
    "activate",
    "check_group_message",
    "create_group",
    "next_change",
    "plan_recipients",
    "rotation_reason",
    "sign_change",
    "verify_chain",
]
