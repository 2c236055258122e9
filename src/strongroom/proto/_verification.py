"""Interactive device verification: the short-authentication-string (SAS) steps.

Two people compare seven emoji (or three numbers) on their two devices; if they match,
each device knows that the other device's certified Ed25519 key is the one its owner
holds, so neither the server nor the authority key can have swapped it unseen.

The steps travel as one content kind, ``Verification``, over Olm only and to one device
only (never in a group, never fanned out to a user's other devices): ``flow`` names one
verification, ``step`` says where it is.  The order, in which the initiator (A) and the
responder (B) send them (the state machine is ``strongroom.client``'s ``SasFlow``)::

    A → B  request   "I want to verify this device of yours"
    B → A  accept    commitment = SHA-256(B's SAS key ‖ flow ‖ request bytes)
    A → B  key       A's ephemeral Curve25519 SAS key
    B → A  key       B's key; A checks it against the commitment
    (both show the emoji/numbers; each person confirms that they match)
    A ↔ B  mac       HMAC over the sender's own device key, under the shared secret
    A ↔ B  done      the other's MAC verified; the device is marked verified
    A ↔ B  cancel    at any time, with a code

B commits to its key before it sees A's, and A reveals its key before it sees B's, so
neither side can choose its key to make the short string match a man in the middle's.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from ._objects import Key, _decode, _decoder_for

__all__ = [
    "SAS_METHODS",
    "Verification",
    "VerificationCancel",
    "VerificationCancelCode",
    "VerificationStep",
    "VerifyAccept",
    "VerifyDone",
    "VerifyKey",
    "VerifyMac",
    "VerifyRequest",
    "decode_verification",
]

#: What the short string is shown as; both are derived from the same bytes.
SAS_METHODS = ("emoji", "decimal")

FlowId = Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
Digest = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Mac = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class VerifyRequest(msgspec.Struct, frozen=True, tag="request"):
    """The initiator asks to verify the recipient device (and offers its methods)."""

    methods: Annotated[list[str], msgspec.Meta(max_length=8)] = msgspec.field(
        default_factory=lambda: list(SAS_METHODS)
    )


class VerifyAccept(msgspec.Struct, frozen=True, tag="accept"):
    """The responder agrees, committing to the SAS key it will send."""

    commitment: Digest


class VerifyKey(msgspec.Struct, frozen=True, tag="key"):
    """An ephemeral Curve25519 SAS public key (unpadded base64)."""

    key: Key


class VerifyMac(msgspec.Struct, frozen=True, tag="mac"):
    """The sender's MAC of its own certified Ed25519 key, and of the list of key ids."""

    key_mac: Mac
    keys_mac: Mac


class VerifyDone(msgspec.Struct, frozen=True, tag="done"):
    """The sender verified the other side's MAC: the flow is over, successfully."""


class VerificationCancelCode(enum.StrEnum):
    """Why a flow ended early.  Values are wire strings and never change."""

    USER = "user"  # the person declined or cancelled
    MISMATCH = "mismatch"  # the person said the emoji or numbers differ
    KEY_MISMATCH = "key_mismatch"  # a MAC or the commitment did not check out
    UNEXPECTED = "unexpected"  # a step out of order
    TIMEOUT = "timeout"  # the flow took too long
    UNKNOWN = "unknown"  # a flow the device does not know (e.g. restarted)


class VerificationCancel(msgspec.Struct, frozen=True, tag="cancel"):
    code: VerificationCancelCode
    reason: Annotated[str, msgspec.Meta(max_length=200)] = ""


VerificationStep = (
    VerifyRequest
    | VerifyAccept
    | VerifyKey
    | VerifyMac
    | VerifyDone
    | VerificationCancel
)


class Verification(msgspec.Struct, frozen=True, tag="verification"):
    """One step of the verification ``flow`` (16 random bytes the initiator chose)."""

    flow: FlowId
    step: VerificationStep
    v: int = 1


_verification_decoder = _decoder_for(Verification)


def decode_verification(data: bytes) -> Verification:
    """Raises ``RemoteProtocolError`` only."""
    return _decode(_verification_decoder, data, "verification step")
