"""Group wire objects: ids, signing input, hashing, round trips, limits and decoder fuzzing.

As for frames, the property under fuzz is that whatever bytes arrive, the group decoders
return a value or raise ``RemoteProtocolError``; nothing else escapes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom import proto
from strongroom.errors import LocalProtocolError, RemoteProtocolError

FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
ROUND_TRIP = settings(max_examples=50, deadline=None)

DEVICE_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

group_ids = st.binary(min_size=16, max_size=16).map(proto.new_group_id)
device_ids = st.text(DEVICE_ALPHABET, min_size=16, max_size=16)
user_ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
hashes = st.binary(min_size=32, max_size=32)
keys = st.text(B64_ALPHABET, min_size=43, max_size=43)
users = st.lists(user_ids, max_size=8, unique=True).map(sorted)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
seqs = st.integers(min_value=0, max_value=2**63 - 1)
heads = st.builds(proto.ChainHead, seq=seqs, hash=hashes)
signed = st.builds(
    proto.Signed,
    body=st.binary(max_size=64),
    signature=st.binary(min_size=64, max_size=64),
)

changes = st.builds(
    proto.GroupChange,
    group=group_ids,
    seq=seqs,
    prev=hashes,
    action=st.sampled_from(proto.GroupAction),
    subject=user_ids,
    members=users,
    admins=users,
    name=st.text(max_size=proto.MAX_GROUP_NAME),
    author=user_ids,
    author_device=device_ids,
    at=ints,
    v=ints,
)
room_keys = st.builds(
    proto.RoomKey,
    group=group_ids,
    session_id=keys,
    session_key=st.text(B64_ALPHABET, min_size=1, max_size=400),
    head=heads,
    entries=st.lists(signed, max_size=3),
    v=ints,
)
group_payloads = st.builds(
    proto.GroupPayload,
    sender_user=user_ids,
    sender_device=device_ids,
    group=group_ids,
    message_id=st.binary(min_size=16, max_size=16),
    sent_at=ints,
    head=heads,
    content=st.builds(proto.Text, body=st.text(max_size=32)),
    v=ints,
)
megolm_envelopes = st.builds(
    proto.MegolmEnvelope,
    session_id=keys,
    ciphertext=st.binary(min_size=1, max_size=256),
)

Decoder = Callable[[bytes], object]
DECODERS: dict[str, tuple[Decoder, st.SearchStrategy[msgspec.Struct]]] = {
    "group_change": (proto.decode_group_change, changes),
    "room_key": (proto.decode_room_key, room_keys),
    "group_payload": (proto.decode_group_payload, group_payloads),
    "megolm_envelope": (proto.decode_megolm_envelope, megolm_envelopes),
}


# --- ids, domains and hashes ------------------------------------------------------------


def test_group_ids_are_base32_of_sixteen_random_bytes() -> None:
    group = proto.new_group_id(bytes(range(16)))
    assert group == "aaaqeayeaudaocajbifqydiob4"
    assert proto.GROUP_ID_RE.fullmatch(group)
    with pytest.raises(LocalProtocolError):
        proto.new_group_id(b"too short")


@given(entropy=st.binary(min_size=16, max_size=16))
def test_every_group_id_is_valid_and_names_its_conversation(entropy: bytes) -> None:
    group = proto.new_group_id(entropy)
    assert proto.GROUP_ID_RE.fullmatch(group)
    conversation = proto.group_conversation(group)
    assert conversation == f"group:{group}"
    assert proto.group_of_conversation(conversation) == group


def test_other_conversations_are_not_groups() -> None:
    assert proto.group_of_conversation(proto.conversation_for("ann", "bob")) is None
    assert proto.group_of_conversation("group:") is None
    assert proto.group_of_conversation("group:NOT-A-GROUP-ID") is None
    assert proto.group_of_conversation("dm:" + "a" * 26) is None


def test_the_group_domain_follows_the_naming_and_is_distinct() -> None:
    assert proto.DOMAIN_GROUP_CHANGE == b"strongroom/v1/group-change"
    others = {
        proto.DOMAIN_CERTIFICATE,
        proto.DOMAIN_REVOCATION,
        proto.DOMAIN_HELLO,
        proto.DOMAIN_HTTP,
        proto.DOMAIN_ONE_TIME_KEY,
        proto.DOMAIN_REGISTRATION,
    }
    assert proto.DOMAIN_GROUP_CHANGE not in others
    assert proto.group_change_signing_input(b"body") == proto.signing_input(
        proto.DOMAIN_GROUP_CHANGE, b"body"
    )


def test_entry_hash_is_sha256_of_the_signed_bytes_not_the_signature() -> None:
    entry = proto.Signed(b"some body", bytes(64))
    expected = hashlib.sha256(b"strongroom/v1/group-change\x00some body").digest()
    assert proto.entry_hash(entry) == expected
    assert proto.entry_hash(proto.Signed(b"some body", b"\x01" * 64)) == expected
    assert len(proto.GENESIS_PREV) == 32 and not any(proto.GENESIS_PREV)


def test_action_values_are_stable_wire_strings() -> None:
    assert [action.value for action in proto.GroupAction] == [
        "create",
        "add",
        "remove",
        "promote",
        "demote",
        "leave",
        "rename",
    ]


# --- round trips and the wire shape ---------------------------------------------------


@ROUND_TRIP
@given(change=changes)
def test_group_change_round_trip(change: proto.GroupChange) -> None:
    assert proto.decode_group_change(proto.encode(change)) == change


@ROUND_TRIP
@given(key=room_keys)
def test_room_key_round_trip(key: proto.RoomKey) -> None:
    assert proto.decode_room_key(proto.encode(key)) == key


@ROUND_TRIP
@given(payload=group_payloads)
def test_group_payload_round_trip(payload: proto.GroupPayload) -> None:
    assert proto.decode_group_payload(proto.encode(payload)) == payload


@ROUND_TRIP
@given(envelope=megolm_envelopes)
def test_megolm_envelope_round_trip(envelope: proto.MegolmEnvelope) -> None:
    assert proto.decode_megolm_envelope(proto.encode(envelope)) == envelope


def _change(**overrides: object) -> proto.GroupChange:
    fields: dict[str, object] = {
        "group": proto.new_group_id(bytes(16)),
        "seq": 0,
        "prev": proto.GENESIS_PREV,
        "action": proto.GroupAction.CREATE,
        "subject": "ann",
        "members": ["ann", "bob"],
        "admins": ["ann"],
        "name": "ops",
        "author": "ann",
        "author_device": "a" * 16,
        "at": 1,
    }
    fields.update(overrides)
    return proto.GroupChange(**fields)  # type: ignore[arg-type]


def test_tags_are_on_the_wire() -> None:
    raw = msgspec.msgpack.decode(proto.encode(_change()))
    assert raw["type"] == "group-change"
    assert raw["action"] == "create"
    key = proto.RoomKey(
        group=proto.new_group_id(bytes(16)),
        session_id="A" * 43,
        session_key="key",
        head=proto.ChainHead(0, bytes(32)),
    )
    assert msgspec.msgpack.decode(proto.encode(key))["type"] == "room-key"


def test_a_group_change_is_not_a_certificate_and_back() -> None:
    with pytest.raises(RemoteProtocolError):
        proto.decode_certificate(proto.encode(_change()))
    cert = proto.DeviceCertificate(
        org="o", user="ann", device_id="a" * 16, ed25519="A" * 43, curve25519="B" * 43,
        name="n", issued_at=1,
    )  # fmt: skip
    with pytest.raises(RemoteProtocolError):
        proto.decode_group_change(proto.encode(cert))


@pytest.mark.parametrize(
    "overrides",
    [
        {"group": "not-a-group-id"},
        {"seq": -1},
        {"prev": b"short"},
        {"members": ["Not A User"]},
        {"members": [f"user{i}" for i in range(proto.MAX_GROUP_MEMBERS + 1)]},
        {"name": "x" * (proto.MAX_GROUP_NAME + 1)},
        {"author_device": "TOO-SHORT"},
    ],
)
def test_group_change_schema_is_enforced(overrides: dict[str, object]) -> None:
    raw = msgspec.msgpack.decode(proto.encode(_change()))
    raw.update(overrides)
    with pytest.raises(RemoteProtocolError, match="malformed group change"):
        proto.decode_group_change(msgspec.msgpack.encode(raw))


def test_an_unknown_action_is_refused() -> None:
    raw = msgspec.msgpack.decode(proto.encode(_change()))
    raw["action"] = "annex"
    with pytest.raises(RemoteProtocolError):
        proto.decode_group_change(msgspec.msgpack.encode(raw))


def test_unknown_fields_are_ignored_for_evolution() -> None:
    raw = msgspec.msgpack.decode(proto.encode(_change()))
    raw["later"] = "a field from a newer client"
    assert proto.decode_group_change(msgspec.msgpack.encode(raw)) == _change()


def test_a_room_key_cannot_be_group_content() -> None:
    # Key and control messages travel only over Olm: the group payload refuses them.
    payload = msgspec.msgpack.decode(
        proto.encode(
            proto.GroupPayload(
                sender_user="ann",
                sender_device="a" * 16,
                group=proto.new_group_id(bytes(16)),
                message_id=bytes(16),
                sent_at=1,
                head=proto.ChainHead(0, bytes(32)),
                content=proto.Text("hi"),
            )
        )
    )
    payload["content"] = msgspec.msgpack.decode(
        proto.encode(
            proto.RoomKey(
                group=proto.new_group_id(bytes(16)),
                session_id="A" * 43,
                session_key="key",
                head=proto.ChainHead(0, bytes(32)),
            )
        )
    )
    with pytest.raises(RemoteProtocolError):
        proto.decode_group_payload(msgspec.msgpack.encode(payload))


def test_the_largest_entry_fits_in_one_olm_copy_with_its_room_key() -> None:
    longest = [
        f"{i:03d}" + "x" * 60 for i in range(proto.MAX_GROUP_MEMBERS)
    ]  # 63 characters each
    change = _change(members=longest, admins=longest, name="n" * proto.MAX_GROUP_NAME)
    entry = proto.Signed(proto.encode(change), bytes(64))
    key = proto.RoomKey(
        group=change.group,
        session_id="A" * 43,
        session_key="K" * 400,
        head=proto.ChainHead(0, bytes(32)),
        entries=[entry],
    )
    assert proto.decode_room_key(proto.encode(key)) == key
    # Headroom for the Olm payload around it and Olm's own overhead.
    assert len(proto.encode(key)) < proto.MAX_BODY_BYTES * 0.6


# --- fuzzing ------------------------------------------------------------------------------


@FUZZ
@given(name=st.sampled_from(sorted(DECODERS)), data=st.binary(max_size=512))
def test_fuzz_arbitrary_bytes(name: str, data: bytes) -> None:
    decode, _ = DECODERS[name]
    try:
        decode(data)
    except RemoteProtocolError as exc:
        assert exc.code == "bad_request"


@FUZZ
@given(name=st.sampled_from(sorted(DECODERS)), data=st.data())
def test_fuzz_mutated_valid_input(name: str, data: st.DataObject) -> None:
    decode, strategy = DECODERS[name]
    encoded = bytearray(proto.encode(data.draw(strategy)))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        index = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
        encoded[index] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded)))
    try:
        decode(bytes(encoded[:cut]))
    except RemoteProtocolError as exc:
        assert exc.code == "bad_request"


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_deep_nesting_and_bad_utf8_are_protocol_errors(name: str) -> None:
    decode, _ = DECODERS[name]
    for data in (b"\x91" * 100_000, b"\x81\xa4type\xa3\xff\xfe\xfd"):
        with pytest.raises(RemoteProtocolError):
            decode(data)
