"""Stream frames and signed objects: round trips, size limits and decoder fuzzing.

The property under fuzz is the one ``strongroom.proto`` promises: whatever bytes arrive,
the decoders return a value or raise ``RemoteProtocolError``; nothing else escapes.
"""

from __future__ import annotations

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
MUTATION_FUZZ = settings(FUZZ, max_examples=100)
ROUND_TRIP = settings(max_examples=50, deadline=None)

WIRE_CODES = frozenset(code.value for code in proto.ErrorCode)

# --- strategies for valid values -------------------------------------------------

DEVICE_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

device_ids = st.text(DEVICE_ALPHABET, min_size=16, max_size=16)
envelope_ids = st.binary(min_size=16, max_size=16)
seqs = st.integers(min_value=1, max_value=2**63 - 1)
ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
bodies = st.binary(min_size=1, max_size=256)
short_text = st.text(max_size=16)
# A valid subset of user ids (the full pattern via from_regex is slow to generate).
user_ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
keys = st.text(B64_ALPHABET, min_size=43, max_size=44)

challenges = st.builds(
    proto.Challenge,
    nonce=st.binary(min_size=32, max_size=32),
    server=short_text,
    version=ints,
)
welcomes = st.builds(
    proto.Welcome,
    device_id=device_ids,
    user=short_text,
    otk_count=ints,
    server_time=ints,
    pending=ints,
)
delivers = st.builds(
    proto.Deliver,
    seq=seqs,
    id=envelope_ids,
    sender=device_ids,
    at=ints,
    body=bodies,
    shared=st.booleans(),
)
accepteds = st.builds(
    proto.Accepted, id=envelope_ids, at=ints, skipped=st.lists(short_text, max_size=4)
)
errors = st.builds(
    proto.Error,
    code=short_text,
    detail=short_text,
    ref=st.none() | st.binary(max_size=32),
)
pongs = st.builds(proto.Pong, n=ints)
server_frames: st.SearchStrategy[proto.ServerFrame] = st.one_of(
    challenges, welcomes, delivers, accepteds, errors, pongs
)

hellos = st.builds(
    proto.Hello,
    device_id=device_ids,
    signature=st.binary(min_size=64, max_size=64),
    client_version=short_text,
    version=ints,
)
copies = st.builds(proto.Copy, device=device_ids, body=bodies)
blob_ids = st.from_regex(r"\A[a-z2-7]{26}\Z")
expiries = st.none() | ints
sends = st.builds(
    proto.Send,
    id=envelope_ids,
    copies=st.lists(copies, min_size=1, max_size=4),
    expires_at=expiries,
    blobs=st.lists(blob_ids, max_size=3),
)
shared_sends = st.builds(
    proto.SendShared,
    id=envelope_ids,
    devices=st.lists(device_ids, min_size=1, max_size=8),
    body=bodies,
    expires_at=expiries,
    blobs=st.lists(blob_ids, max_size=3),
)
acks = st.builds(proto.Ack, upto=seqs)
pings = st.builds(proto.Ping, n=ints)
client_frames: st.SearchStrategy[proto.ClientFrame] = st.one_of(
    hellos, sends, shared_sends, acks, pings
)

payloads = st.builds(
    proto.Payload,
    sender_user=user_ids,
    sender_device=device_ids,
    recipient_user=user_ids,
    recipient_device=device_ids,
    conversation=short_text,
    message_id=envelope_ids,
    counter=seqs,
    sent_at=ints,
    content=st.one_of(
        st.builds(proto.Text, body=short_text, reply_to=st.none() | envelope_ids),
        st.builds(proto.Edit, target=envelope_ids, body=short_text),
        st.builds(
            proto.Reaction,
            target=envelope_ids,
            emoji=st.text(min_size=1, max_size=proto.MAX_REACTION),
            remove=st.booleans(),
        ),
        st.builds(
            proto.Receipt,
            kind=st.sampled_from(proto.ReceiptKind),
            targets=st.lists(envelope_ids, min_size=1, max_size=4),
        ),
        st.builds(
            proto.FileRef,
            blob=blob_ids,
            key=st.binary(min_size=32, max_size=32),
            digest=st.binary(min_size=32, max_size=32),
            size=st.integers(min_value=0, max_value=2**40),
            chunk=st.integers(min_value=1024, max_value=1 << 20),
            name=st.text(min_size=1, max_size=40),
            mime=short_text,
            caption=short_text,
        ),
        st.builds(
            proto.Timer, seconds=st.none() | st.integers(min_value=1, max_value=86400)
        ),
    ),
    v=ints,
    expires_at=expiries,
)
olm_envelopes = st.builds(
    proto.OlmEnvelope,
    sender_key=keys,
    type=st.integers(min_value=0, max_value=1),
    ciphertext=bodies,
)
certificates = st.builds(
    proto.DeviceCertificate,
    org=short_text,
    user=user_ids,
    device_id=device_ids,
    ed25519=keys,
    curve25519=keys,
    name=short_text,
    issued_at=ints,
)
activation_starts = st.builds(
    proto.ActivationStart, user=user_ids, pake=st.binary(min_size=33, max_size=33)
)

registrations = st.builds(
    proto.ActivationRegistration,
    ed25519=keys,
    curve25519=keys,
    name=st.text(max_size=64),
    one_time_keys=st.lists(
        st.builds(
            proto.OneTimeKey,
            key_id=st.text(B64_ALPHABET, min_size=1, max_size=32),
            key=keys,
            signature=st.binary(min_size=64, max_size=64),
            fallback=st.booleans(),
        ),
        max_size=3,
    ),
    fallback=st.none(),
    proof=st.binary(min_size=64, max_size=64),
)


# --- mutations of valid encodings ------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, originals: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding with one to four bytes flipped, cut, inserted or deleted."""
    data = bytearray(draw(originals))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        at = draw(st.integers(min_value=0, max_value=len(data)))
        if kind == "flip" and at < len(data):
            data[at] ^= draw(st.integers(min_value=1, max_value=255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif at < len(data):
            del data[at]
    return bytes(data)


def _frame_bytes(
    frames: st.SearchStrategy[proto.ServerFrame | proto.ClientFrame],
) -> st.SearchStrategy[bytes]:
    return frames.map(proto.encode_frame)


def _struct_bytes(
    structs: st.SearchStrategy[msgspec.Struct],
) -> st.SearchStrategy[bytes]:
    return structs.map(proto.encode)


Decoder = Callable[[bytes], object]

DECODERS: dict[str, Decoder] = {
    "client_frame": proto.decode_client_frame,
    "server_frame": proto.decode_server_frame,
    "payload": proto.decode_payload,
    "olm_envelope": proto.decode_olm_envelope,
    "certificate": proto.decode_certificate,
    "revocation": proto.decode_revocation,
    "json_activation_start": lambda d: proto.decode_json(d, proto.ActivationStart),
    "json_activation_finish": lambda d: proto.decode_json(d, proto.ActivationFinish),
    "json_registration": lambda d: proto.decode_json(d, proto.ActivationRegistration),
    "json_upload_keys": lambda d: proto.decode_json(d, proto.UploadKeys),
    "json_claim_request": lambda d: proto.decode_json(d, proto.ClaimRequest),
    "msgpack_registration": lambda d: proto.decode_msgpack(
        d, proto.ActivationRegistration
    ),
    "msgpack_grant": lambda d: proto.decode_msgpack(d, proto.ActivationGrant),
}

#: For each decoder, valid inputs whose mutations are the most interesting fuzz seeds.
SEEDS: dict[str, st.SearchStrategy[bytes]] = {
    "client_frame": _frame_bytes(client_frames),
    "server_frame": _frame_bytes(server_frames),
    "payload": _struct_bytes(payloads),
    "olm_envelope": _struct_bytes(olm_envelopes),
    "certificate": _struct_bytes(certificates),
    "revocation": _struct_bytes(
        st.builds(
            proto.Revocation,
            org=short_text,
            device_id=device_ids,
            revoked_at=ints,
            reason=short_text,
        )
    ),
    "json_activation_start": activation_starts.map(proto.encode_json),
    "json_activation_finish": st.builds(
        proto.ActivationFinish,
        session=st.from_regex(r"[A-Za-z0-9_-]{22,64}", fullmatch=True),
        confirm=st.binary(min_size=32, max_size=32),
        sealed=st.binary(min_size=28, max_size=64),
    ).map(proto.encode_json),
    "json_registration": registrations.map(proto.encode_json),
    "msgpack_registration": registrations.map(proto.encode),
    "msgpack_grant": st.builds(
        proto.ActivationGrant,
        org=short_text,
        authority_key=st.binary(min_size=32, max_size=32),
        certificate=st.builds(
            proto.Signed,
            body=st.binary(max_size=64),
            signature=st.binary(min_size=64, max_size=64),
        ),
    ).map(proto.encode),
    "json_upload_keys": st.builds(
        proto.UploadKeys,
        one_time_keys=st.just([]),
        fallback=st.none(),
    ).map(proto.encode_json),
    "json_claim_request": st.builds(
        proto.ClaimRequest, devices=st.lists(device_ids, min_size=1, max_size=3)
    ).map(proto.encode_json),
}


def _only_protocol_error(decode: Decoder, data: bytes) -> None:
    """Decode, allowing success or RemoteProtocolError with a wire code, nothing else."""
    try:
        decode(data)
    except RemoteProtocolError as exc:
        assert exc.code in WIRE_CODES


# --- round trips ------------------------------------------------------------------


@ROUND_TRIP
@given(server_frames)
def test_server_frame_round_trip(frame: proto.ServerFrame) -> None:
    data = proto.encode_frame(frame)
    decoded = proto.decode_server_frame(data)
    assert decoded == frame
    assert type(decoded) is type(frame)


@ROUND_TRIP
@given(client_frames)
def test_client_frame_round_trip(frame: proto.ClientFrame) -> None:
    data = proto.encode_frame(frame)
    decoded = proto.decode_client_frame(data)
    assert decoded == frame
    assert type(decoded) is type(frame)


@ROUND_TRIP
@given(server_frames)
def test_server_frame_is_not_a_client_frame(frame: proto.ServerFrame) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        proto.decode_client_frame(proto.encode_frame(frame))
    assert info.value.code == "bad_frame"


@ROUND_TRIP
@given(client_frames)
def test_client_frame_is_not_a_server_frame(frame: proto.ClientFrame) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        proto.decode_server_frame(proto.encode_frame(frame))
    assert info.value.code == "bad_frame"


@ROUND_TRIP
@given(payloads)
def test_payload_round_trip(payload: proto.Payload) -> None:
    assert proto.decode_payload(proto.encode(payload)) == payload


@ROUND_TRIP
@given(olm_envelopes)
def test_olm_envelope_round_trip(envelope: proto.OlmEnvelope) -> None:
    assert proto.decode_olm_envelope(proto.encode(envelope)) == envelope


@ROUND_TRIP
@given(certificates)
def test_certificate_round_trip(cert: proto.DeviceCertificate) -> None:
    assert proto.decode_certificate(proto.encode(cert)) == cert


@ROUND_TRIP
@given(activation_starts)
def test_json_round_trip(start: proto.ActivationStart) -> None:
    assert proto.decode_json(proto.encode_json(start), proto.ActivationStart) == start


def test_frame_tag_is_on_the_wire() -> None:
    raw = msgspec.msgpack.decode(proto.encode_frame(proto.Ping(n=7)))
    assert raw == {"t": "ping", "n": 7}


def test_unknown_fields_are_ignored_for_evolution() -> None:
    data = msgspec.msgpack.encode({"t": "ping", "n": 3, "future": [1, 2]})
    assert proto.decode_client_frame(data) == proto.Ping(n=3)


# --- schema constraints are enforced on decode ------------------------------------

DEVICE = "abcdefghijklmnop"
ENVELOPE = bytes(range(16))


@pytest.mark.parametrize(
    "frame",
    [
        proto.Deliver(seq=0, id=ENVELOPE, sender=DEVICE, at=0, body=b"x"),
        proto.Deliver(seq=1, id=ENVELOPE[:15], sender=DEVICE, at=0, body=b"x"),
        proto.Deliver(seq=1, id=ENVELOPE, sender="ABCDEFGHIJKLMNOP", at=0, body=b"x"),
        proto.Deliver(seq=1, id=ENVELOPE, sender=DEVICE, at=0, body=b""),
        proto.Deliver(
            seq=1,
            id=ENVELOPE,
            sender=DEVICE,
            at=0,
            body=b"x" * (proto.MAX_BODY_BYTES + 1),
        ),
        proto.Challenge(nonce=b"n" * 31, server="s"),
        proto.Accepted(id=ENVELOPE + b"!", at=0),
        proto.Welcome(device_id="short", user="u", otk_count=0, server_time=0),
    ],
    ids=lambda frame: type(frame).__name__,
)
def test_server_decoder_enforces_schema(frame: proto.ServerFrame) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        proto.decode_server_frame(proto.encode_frame(frame))
    assert info.value.code == "bad_frame"


@pytest.mark.parametrize(
    "frame",
    [
        proto.Hello(device_id=DEVICE, signature=b"s" * 63),
        proto.Hello(device_id=DEVICE + "a", signature=b"s" * 64),
        proto.Send(id=ENVELOPE, copies=[]),
        proto.Send(
            id=ENVELOPE,
            copies=[proto.Copy(device=DEVICE, body=b"x")] * (proto.MAX_COPIES + 1),
        ),
        proto.Send(id=ENVELOPE, copies=[proto.Copy(device="nope", body=b"x")]),
        proto.Ack(upto=0),
    ],
    ids=lambda frame: type(frame).__name__,
)
def test_client_decoder_enforces_schema(frame: proto.ClientFrame) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        proto.decode_client_frame(proto.encode_frame(frame))
    assert info.value.code == "bad_frame"


@pytest.mark.parametrize(
    "raw",
    [
        {"t": "launch", "n": 1},
        {"n": 1},
        {"t": "ping"},
        {"t": "ping", "n": "1"},
        {"t": 1, "n": 1},
        [1, 2, 3],
    ],
)
def test_client_decoder_refuses_malformed_structure(raw: object) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        proto.decode_client_frame(msgspec.msgpack.encode(raw))
    assert info.value.code == "bad_frame"


def test_decode_json_refuses_with_bad_request() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        proto.decode_json(b'{"user": "Alice", "pake": ""}', proto.ActivationStart)
    assert info.value.code == "bad_request"


# --- size limit -------------------------------------------------------------------


def _error_of_size(size: int) -> proto.Error:
    """An Error frame whose encoding is exactly ``size`` bytes (size well above 64 KiB)."""
    probe = 100_000
    overhead = len(proto.encode_frame(proto.Error(code="x", detail="d" * probe)))
    frame = proto.Error(code="x", detail="d" * (size - overhead + probe))
    assert len(msgspec.msgpack.encode(frame)) == size
    return frame


def _hello_of_size(size: int) -> proto.Hello:
    probe = 100_000
    sig = b"s" * 64
    overhead = len(
        proto.encode_frame(
            proto.Hello(device_id=DEVICE, signature=sig, client_version="v" * probe)
        )
    )
    frame = proto.Hello(
        device_id=DEVICE, signature=sig, client_version="v" * (size - overhead + probe)
    )
    assert len(msgspec.msgpack.encode(frame)) == size
    return frame


def test_frame_at_the_limit_round_trips() -> None:
    server = _error_of_size(proto.MAX_FRAME_BYTES)
    assert proto.decode_server_frame(proto.encode_frame(server)) == server
    client = _hello_of_size(proto.MAX_FRAME_BYTES)
    assert proto.decode_client_frame(proto.encode_frame(client)) == client


def test_encoding_an_oversized_frame_is_a_local_error() -> None:
    for frame in (
        _error_of_size(proto.MAX_FRAME_BYTES + 1),
        _hello_of_size(proto.MAX_FRAME_BYTES + 1),
    ):
        with pytest.raises(LocalProtocolError) as info:
            proto.encode_frame(frame)
        assert info.value.code == "frame_too_large"
        assert not isinstance(info.value, RemoteProtocolError)


def test_decoding_an_oversized_frame_is_a_remote_error() -> None:
    server = msgspec.msgpack.encode(_error_of_size(proto.MAX_FRAME_BYTES + 1))
    with pytest.raises(RemoteProtocolError) as info:
        proto.decode_server_frame(server)
    assert info.value.code == "frame_too_large"
    client = msgspec.msgpack.encode(_hello_of_size(proto.MAX_FRAME_BYTES + 1))
    with pytest.raises(RemoteProtocolError) as info:
        proto.decode_client_frame(client)
    assert info.value.code == "frame_too_large"


@pytest.mark.parametrize(
    "decode", [proto.decode_client_frame, proto.decode_server_frame]
)
def test_oversized_garbage_is_refused_by_size_before_parsing(
    decode: Decoder,
) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(b"\xc1" * (proto.MAX_FRAME_BYTES + 1))
    assert info.value.code == "frame_too_large"
    with pytest.raises(RemoteProtocolError) as info:
        decode(b"\xc1")
    assert info.value.code == "bad_frame"


# --- fuzz: only our protocol error escapes ----------------------------------------


@pytest.mark.parametrize("name", sorted(DECODERS))
@FUZZ
@given(data=st.binary(max_size=512))
def test_fuzz_arbitrary_bytes(name: str, data: bytes) -> None:
    _only_protocol_error(DECODERS[name], data)


@pytest.mark.parametrize("name", sorted(DECODERS))
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_fuzz_seeds_decode(name: str, data: st.DataObject) -> None:
    # The mutation fuzz starts from inputs the decoder accepts, not from noise.
    DECODERS[name](data.draw(SEEDS[name]))


@pytest.mark.parametrize("name", sorted(DECODERS))
@MUTATION_FUZZ
@given(data=st.data())
def test_fuzz_mutated_valid_input(name: str, data: st.DataObject) -> None:
    mutant = data.draw(mutated(SEEDS[name]), label="mutant")
    _only_protocol_error(DECODERS[name], mutant)


@pytest.mark.parametrize("name", ["client_frame", "server_frame"])
@MUTATION_FUZZ
@given(data=st.data())
def test_fuzz_frames_cross_direction(name: str, data: st.DataObject) -> None:
    # A frame of the other direction, mutated: the tag logic must not let anything through.
    other = "server_frame" if name == "client_frame" else "client_frame"
    _only_protocol_error(DECODERS[name], data.draw(mutated(SEEDS[other])))


def _deeply_nested(depth: int) -> bytes:
    """A MessagePack value: ``depth`` one-element arrays around a nil (1 byte a level)."""
    return b"\x91" * depth + b"\xc0"


def _with_unknown_field(known: dict[str, object], depth: int) -> bytes:
    enc = msgspec.msgpack.encode
    items = b"".join(enc(k) + enc(v) for k, v in known.items())
    return bytes([0x80 + len(known) + 1]) + items + enc("extra") + _deeply_nested(depth)


NESTED_DEPTH = 20_000  # 20 KB: far below the frame limit


# msgspec raises RecursionError on deeply nested values, even inside a field that is
# ignored; the decoders must map it like any other malformed input.
@pytest.mark.parametrize(
    ("decode", "data"),
    [
        (
            proto.decode_client_frame,
            _with_unknown_field({"t": "ping", "n": 1}, NESTED_DEPTH),
        ),
        (
            proto.decode_server_frame,
            _with_unknown_field({"t": "pong", "n": 1}, NESTED_DEPTH),
        ),
        (proto.decode_payload, _with_unknown_field({}, NESTED_DEPTH)),
        (
            proto.decode_certificate,
            _with_unknown_field({"type": "device-certificate"}, NESTED_DEPTH),
        ),
        (
            proto.decode_olm_envelope,
            b"\x94"
            + msgspec.msgpack.encode("A" * 43)
            + msgspec.msgpack.encode(0)
            + msgspec.msgpack.encode(b"x")
            + _deeply_nested(NESTED_DEPTH),
        ),
        (
            lambda d: proto.decode_json(d, proto.KeyCount),
            b'{"count": 1, "extra": '
            + b"[" * NESTED_DEPTH
            + b"]" * NESTED_DEPTH
            + b"}",
        ),
    ],
    ids=["client_frame", "server_frame", "payload", "certificate", "olm", "json"],
)
def test_deeply_nested_input_is_a_protocol_error(decode: Decoder, data: bytes) -> None:
    assert len(data) < proto.MAX_FRAME_BYTES
    with pytest.raises(RemoteProtocolError) as info:
        decode(data)
    assert info.value.code in WIRE_CODES
    assert isinstance(info.value.__cause__, RecursionError)


_enc = msgspec.msgpack.encode
_BAD_UTF8 = b"\xa2\xff\xfe"  # a MessagePack fixstr of two bytes that are not UTF-8


# msgspec raises UnicodeDecodeError (a ValueError, not a DecodeError) for a string that
# is not UTF-8; the decoders must map it like any other malformed input.
@pytest.mark.parametrize(
    ("decode", "data"),
    [
        (
            proto.decode_client_frame,
            b"\x82" + _enc("t") + _BAD_UTF8 + _enc("n") + _enc(1),
        ),
        (
            proto.decode_server_frame,
            b"\x82" + _enc("t") + _BAD_UTF8 + _enc("n") + _enc(1),
        ),
        (proto.decode_payload, b"\x81" + _enc("sender_user") + _BAD_UTF8),
        (proto.decode_certificate, b"\x81" + _enc("type") + _BAD_UTF8),
        (proto.decode_revocation, b"\x81" + _enc("type") + _BAD_UTF8),
        (proto.decode_olm_envelope, b"\x93" + _BAD_UTF8 + _enc(0) + _enc(b"x")),
        (
            lambda d: proto.decode_json(d, proto.ActivationStart),
            b'{"user": "\xff\xfe"}',
        ),
    ],
    ids=[
        "client_frame",
        "server_frame",
        "payload",
        "certificate",
        "revocation",
        "olm",
        "json",
    ],
)
def test_invalid_utf8_is_a_protocol_error(decode: Decoder, data: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(data)
    assert info.value.code in WIRE_CODES
    assert isinstance(info.value.__cause__, UnicodeDecodeError)
