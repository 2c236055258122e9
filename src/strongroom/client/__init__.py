"""The Strongroom device SDK: activation, the encrypted local store, sending and receiving.

``Device`` is the core (decisions, no network); ``Client`` drives it over HTTP and the
stream; ``activate`` turns an empty device home into an activated device.
"""

from ._activation import ActivatedDevice, activate
from ._client import ACK_DELAY, ACK_EVERY, CLIENT_VERSION, Client, SendResult
from ._contacts import fetch_directory
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
from ._history import ConversationSummary, History, HistoryItem, SearchHit
from ._policy import PolicyInForce, policy_in_force
from ._session import (
    Arrived,
    Backoff,
    Event,
    HistoryChanged,
    Session,
    Status,
    StatusChanged,
    VerificationChanged,
    Warned,
    is_transient,
)
from ._store import LocalStore, Peer, StoredMessage
from ._transfers import Progress, download_file, safe_file_name, upload_file
from ._verification import DeviceTrust, FlowState, SasFlow, Verifications, fingerprint

__all__ = [
    "ACK_DELAY",
    "ACK_EVERY",
    "CLIENT_VERSION",
    "ActivatedDevice",
    "Arrived",
    "Backoff",
    "Client",
    "ConversationSummary",
    "Device",
    "DeviceLookup",
    "DeviceTrust",
    "Event",
    "FlowState",
    "GroupChainError",
    "GroupForkError",
    "GroupRollbackError",
    "GroupState",
    "GroupView",
    "HeadCheck",
    "History",
    "HistoryChanged",
    "HistoryItem",
    "KeyDecision",
    "LocalStore",
    "MessageDecision",
    "Peer",
    "PolicyInForce",
    "Progress",
    "Received",
    "Recipients",
    "RotationPolicy",
    "SasFlow",
    "SearchHit",
    "SendResult",
    "Session",
    "SessionOrigin",
    "SharedSession",
    "Status",
    "StatusChanged",
    "StoredMessage",
    "Verdict",
    "VerificationChanged",
    "Verifications",
    "Warned",
    "accept_room_key",
    "activate",
    "check_group_message",
    "create_group",
    "download_file",
    "fetch_directory",
    "fingerprint",
    "is_transient",
    "next_change",
    "plan_recipients",
    "policy_in_force",
    "rotation_reason",
    "safe_file_name",
    "sign_change",
    "upload_file",
    "verify_chain",
]
