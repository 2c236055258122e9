"""Groups on the wire: the signed membership chain, room keys and group payloads.

A group's membership is a hash chain of ``GroupChange`` entries.  Each entry is a full
snapshot (members, admins, name) *after* one action, signed by the Ed25519 key of the
author's device and linked to its predecessor by ``prev``, the SHA-256 of the bytes the
predecessor's signature covers.  A snapshot, rather than a delta, makes a verifier's job a
comparison, and makes a fork (two members holding different snapshots at the same ``seq``)
visible in one hash.  What a client checks, and in which order, is in
``strongroom.client._groups``; this module only says what the bytes are.

Entries travel as ``Signed(body, signature)`` like certificates: the signature covers
``signing_input(DOMAIN_GROUP_CHANGE, body)`` and the verifier checks it on the exact bytes
received.  Unlike a certificate, the key that signed an entry is named *inside* the body
(``author_device``), so a verifier decodes the body to find the key, checks the signature,
and only then believes anything the body says.

Three things ride with the chain:

- ``RoomKey`` travels over Olm, one copy per member device: a sending device's Megolm
  session key, the chain head the sender had verified when it shared it, and the entries
  the recipient may lack (so a signed removal reaches the other members through the
  remover even when the server withholds it).
- ``GroupPayload`` is what is inside a Megolm message: sender, group, message id and the
  sender's chain head, so that members notice when the server shows them different chains.
- ``MegolmEnvelope`` is the body the server fans out: the session id and the ciphertext.

Schema evolution follows ``_frames``: new fields get defaults, a released field's type
never changes, a tag is never reused.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import re
from typing import Annotated, TypeVar

import msgspec

from strongroom.errors import LocalProtocolError, RemoteProtocolError

from ._codes import DECODE_ERRORS, MAX_BODY_BYTES
from ._objects import DeviceId, Key, Signed, UserId, signing_input

__all__ = [
    "DOMAIN_GROUP_CHANGE",
    "GENESIS_PREV",
    "GROUP_ID_RE",
    "MAX_CHAIN_BATCH",
    "MAX_GROUP_MEMBERS",
    "MAX_GROUP_NAME",
    "ChainHead",
    "GroupAction",
    "GroupChange",
    "MegolmEnvelope",
    "RoomKey",
    "decode_group_change",
    "decode_megolm_envelope",
    "decode_room_key",
    "entry_hash",
    "group_change_signing_input",
    "group_conversation",
    "group_of_conversation",
    "new_group_id",
]

DOMAIN_GROUP_CHANGE = b"strongroom/v1/group-change"

#: ``prev`` of the entry that creates a group: there is nothing before it.
GENESIS_PREV = bytes(32)

#: Members of one group.  A full snapshot of members and admins must fit, with room to
#: spare, into one Olm copy (``MAX_BODY_BYTES``) inside a ``RoomKey``: 256 user ids of the
#: longest kind (63 characters) twice over is about 33 KiB.
MAX_GROUP_MEMBERS = 256
#: Characters in a group's name.
MAX_GROUP_NAME = 100
#: Chain entries carried in one ``RoomKey`` (or handed out in one answer).
MAX_CHAIN_BATCH = 256

#: Group ids: 16 random bytes in lowercase base32, no padding (the device-id alphabet).
GROUP_ID_PATTERN = r"^[a-z2-7]{26}$"
GROUP_ID_RE = re.compile(GROUP_ID_PATTERN)

GroupId = Annotated[str, msgspec.Meta(pattern=GROUP_ID_PATTERN)]
Hash = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Seq = Annotated[int, msgspec.Meta(ge=0)]
Users = Annotated[list[UserId], msgspec.Meta(max_length=MAX_GROUP_MEMBERS)]
GroupName = Annotated[str, msgspec.Meta(max_length=MAX_GROUP_NAME)]
SessionKey = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
Ciphertext = Annotated[bytes, msgspec.Meta(min_length=1, max_length=MAX_BODY_BYTES)]


def new_group_id(entropy: bytes) -> str:
    """A group id from 16 random bytes (the caller supplies them: ``os.urandom(16)``).

    Raises ``LocalProtocolError`` for any other length.
    """
    if len(entropy) != 16:
        raise LocalProtocolError("a group id is made from exactly 16 random bytes")
    return base64.b32encode(entropy).decode("ascii").rstrip("=").lower()


def group_conversation(group: str) -> str:
    """The conversation id of a group, as ``Payload.conversation`` carries it."""
    return f"group:{group}"


def group_of_conversation(conversation: str) -> str | None:
    """The group id in a group conversation id, or ``None`` for any other conversation."""
    kind, _, group = conversation.partition(":")
    if kind != "group" or GROUP_ID_RE.fullmatch(group) is None:
        return None
    return group


class GroupAction(enum.StrEnum):
    """What one chain entry does.  Values are wire strings and never change."""

    CREATE = "create"  # seq 0 only: the author is the first admin
    ADD = "add"  # an admin adds a user
    REMOVE = "remove"  # an admin removes another member
    PROMOTE = "promote"  # an admin makes a member an admin
    DEMOTE = "demote"  # an admin takes admin away (the group keeps at least one)
    LEAVE = "leave"  # any member removes themselves
    RENAME = "rename"  # an admin changes the name


class GroupChange(msgspec.Struct, frozen=True, tag="group-change"):
    """One entry of a group's membership chain: the state *after* ``action``.

    ``members`` and ``admins`` are sorted and free of duplicates (a verifier compares them
    with the snapshot it computes, so any other order is refused).  ``name`` is the
    group's name after the entry (it changes only on ``create`` and ``rename``).  ``at`` is
    the author's clock in milliseconds: informative, never trusted for ordering.
    """

    group: GroupId
    seq: Seq
    prev: Hash
    action: GroupAction
    subject: UserId
    members: Users
    admins: Users
    name: GroupName
    author: UserId
    author_device: DeviceId
    at: int
    v: int = 1


class ChainHead(msgspec.Struct, frozen=True, array_like=True):
    """Where a device's verified chain of one group ends: ``seq`` and ``entry_hash``."""

    seq: Seq
    hash: Hash


class RoomKey(msgspec.Struct, frozen=True, tag="room-key"):
    """A Megolm session key, sent over Olm to each member device.

    ``head`` is the chain head the sender had verified when it shared the key; ``entries``
    are chain entries the recipient may lack, oldest first (possibly none).  The recipient
    believes the key only if the chain it verifies names the sender as a member.
    """

    group: GroupId
    session_id: Key
    session_key: SessionKey
    head: ChainHead
    entries: Annotated[list[Signed], msgspec.Meta(max_length=MAX_CHAIN_BATCH)] = []
    v: int = 1


class MegolmEnvelope(msgspec.Struct, frozen=True, array_like=True):
    """The body the server stores once and fans out: a Megolm session id and ciphertext."""

    session_id: Key
    ciphertext: Ciphertext


def group_change_signing_input(body: bytes) -> bytes:
    """What an author device signs for a chain entry."""
    return signing_input(DOMAIN_GROUP_CHANGE, body)


def entry_hash(entry: Signed) -> bytes:
    """The SHA-256 of the bytes an entry's signature covers: what the next ``prev`` holds.

    The hash covers the domain and the body, not the signature, so an entry is the same
    entry whatever valid signature it carries.
    """
    return hashlib.sha256(group_change_signing_input(entry.body)).digest()


T = TypeVar("T")

_change_decoder = msgspec.msgpack.Decoder(GroupChange)
_room_key_decoder = msgspec.msgpack.Decoder(RoomKey)
_megolm_decoder = msgspec.msgpack.Decoder(MegolmEnvelope)


def _decode(decoder: msgspec.msgpack.Decoder[T], data: bytes, what: str) -> T:
    try:
        return decoder.decode(data)
    except DECODE_ERRORS as exc:
        raise RemoteProtocolError(f"malformed {what}: {exc}", "bad_request") from exc


def decode_group_change(data: bytes) -> GroupChange:
    """Raises ``RemoteProtocolError`` only."""
    return _decode(_change_decoder, data, "group change")


def decode_room_key(data: bytes) -> RoomKey:
    """Raises ``RemoteProtocolError`` only."""
    return _decode(_room_key_decoder, data, "room key")


def decode_megolm_envelope(data: bytes) -> MegolmEnvelope:
    """Raises ``RemoteProtocolError`` only."""
    return _decode(_megolm_decoder, data, "Megolm envelope")
