"""What is inside the encryption: the payloads and every kind of content they carry.

Two envelopes, one content vocabulary:

- ``Payload`` is inside an Olm message, one per recipient device: routing fields the
  recipient checks against what the server and the session say, a per-device-pair counter,
  and ``OlmContent``.  Key and control messages (``RoomKey``) travel only this way.
- ``GroupPayload`` is inside a Megolm message, one ciphertext for every member: sender,
  group, the sender's verified chain head, and ``UserContent``.

``UserContent`` is what a person sends: text (optionally a reply), an edit of one's own
message, a reaction, a delivery or read receipt, a file, or a change of the conversation's
disappearing-message timer.  Each is a tagged struct; a tag is never reused, new fields
get defaults.  ``expires_at`` (milliseconds, sender's clock) asks every device to delete
the message then; the same time rides outside the encryption in the ``Send`` frame so
the server can drop copies nobody fetched.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from ._codes import MAX_BODY_BYTES
from ._groups import ChainHead, GroupId, RoomKey
from ._objects import DeviceId, EnvelopeId, UserId, _decode, _decoder_for
from ._verification import Verification

__all__ = [
    "MAX_FILE_NAME",
    "MAX_REACTION",
    "MAX_RECEIPT_TARGETS",
    "Edit",
    "FileRef",
    "GroupPayload",
    "OlmContent",
    "Payload",
    "Reaction",
    "Receipt",
    "ReceiptKind",
    "Text",
    "Timer",
    "UserContent",
    "decode_group_payload",
    "decode_payload",
]

MAX_TEXT = 16_000
MAX_REACTION = 32
MAX_RECEIPT_TARGETS = 256
MAX_FILE_NAME = 255
BlobId = Annotated[str, msgspec.Meta(pattern=r"^[a-z2-7]{26}$")]
Body = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]


class Text(msgspec.Struct, frozen=True, tag="text"):
    """A message; ``reply_to`` names the message it answers (same conversation)."""

    body: Body
    reply_to: EnvelopeId | None = None


class Edit(msgspec.Struct, frozen=True, tag="edit"):
    """The new text of one of the sender's own earlier messages."""

    target: EnvelopeId
    body: Body


class Reaction(msgspec.Struct, frozen=True, tag="reaction"):
    """An emoji on a message; ``remove`` takes the sender's earlier one back."""

    target: EnvelopeId
    emoji: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_REACTION)]
    remove: bool = False


class ReceiptKind(enum.StrEnum):
    DELIVERED = "delivered"
    READ = "read"


class Receipt(msgspec.Struct, frozen=True, tag="receipt"):
    """The old "D" and "R": these messages reached (or were read on) the sender's device."""

    kind: ReceiptKind
    targets: Annotated[
        list[EnvelopeId], msgspec.Meta(min_length=1, max_length=MAX_RECEIPT_TARGETS)
    ]


class FileRef(msgspec.Struct, frozen=True, tag="file"):
    """An attachment: where its ciphertext is, and what opens and checks it.

    ``key`` is a fresh AES-256-GCM key for this file alone; ``digest`` the SHA-256 of the
    whole ciphertext blob (checked before anything is decrypted); ``size`` the plaintext
    length and ``chunk`` the plaintext chunk size (``strongroom.crypto`` seals chunks).
    """

    blob: BlobId
    key: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    digest: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    size: Annotated[int, msgspec.Meta(ge=0)]
    chunk: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_FILE_NAME)]
    mime: Annotated[str, msgspec.Meta(max_length=255)] = "application/octet-stream"
    caption: Body = ""


class Timer(msgspec.Struct, frozen=True, tag="timer"):
    """The conversation's disappearing-message timer from now on (None: off)."""

    seconds: Annotated[int, msgspec.Meta(ge=1, le=366 * 86400)] | None


UserContent = Text | Edit | Reaction | Receipt | FileRef | Timer
# ``Verification`` (device-to-device SAS steps) is control, like ``RoomKey``: Olm only.
OlmContent = Text | Edit | Reaction | Receipt | FileRef | Timer | RoomKey | Verification


class Payload(msgspec.Struct, frozen=True):
    """What is inside an Olm message.

    The receiving device checks every routing field here against what the server and the
    Olm session say (see ``strongroom.client``): the server's routing data is a claim, this is
    the truth.  ``counter`` counts messages from ``sender_device`` to ``recipient_device``.
    """

    sender_user: UserId
    sender_device: DeviceId
    recipient_user: UserId
    recipient_device: DeviceId
    conversation: str
    message_id: EnvelopeId
    counter: Annotated[int, msgspec.Meta(ge=1)]
    sent_at: int
    content: OlmContent
    v: int = 1
    expires_at: int | None = None


class GroupPayload(msgspec.Struct, frozen=True):
    """What is inside a Megolm message.

    One ciphertext goes to every member, so there is no recipient and no per-pair counter:
    the Megolm message index counts instead.  ``head`` is the sender's verified chain head
    when it sent: a member whose own head differs at the same ``seq`` has been shown a
    different chain (a fork); a member whose head is behind must fetch newer entries.
    """

    sender_user: UserId
    sender_device: DeviceId
    group: GroupId
    message_id: EnvelopeId
    sent_at: int
    head: ChainHead
    content: UserContent
    v: int = 1
    expires_at: int | None = None


_payload_decoder = _decoder_for(Payload)
_group_payload_decoder = _decoder_for(GroupPayload)

assert MAX_BODY_BYTES > MAX_TEXT * 4  # a full text fits in one encrypted body


def decode_payload(data: bytes) -> Payload:
    """Raises ``RemoteProtocolError`` only."""
    return _decode(_payload_decoder, data, "payload")


def decode_group_payload(data: bytes) -> GroupPayload:
    """Raises ``RemoteProtocolError`` only."""
    return _decode(_group_payload_decoder, data, "group payload")
