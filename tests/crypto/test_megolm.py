"""Megolm group sessions (vodozemac): round trips, tampering, late joiners, pickles."""

from __future__ import annotations

import base64
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom import crypto
from strongroom.errors import CryptoError, DecryptionError

PICKLE_KEY = bytes(range(32))
NOW = 1_700_000_000_000

# --- known answers ------------------------------------------------------------------
# A session pickled once under PICKLE_KEY.  Megolm is deterministic from a given ratchet
# state (AES-CBC with derived IV, deterministic Ed25519), so its first message is fixed:
# these pin vodozemac's pickle format and wire format across upgrades.

KAT_PICKLE = (
    "spg1sNTw7yGFv148SDEw0LwQFC6Mseo3ixDvDkMI1AbH9gbNU9J2z5f7xo95LWWCzh0MoZqSkjl4/dRKTsH"
    "S3x3gnq7eA6H1H3vc/uPjmKQbBS3OzmNNp98GpdpB+DSHfbIZgzt/K60Wws++34iUbu7Dw3lSjyYj8n2b7Z"
    "AaM/qtolExt3o4Y3OybLezQiHNLgf28jhbRb2YnGdWBI/jNiXhCaftjDBdAythptiV8v2XjwFTTMAxU6d38"
    "XNAE7qDDlYmpt9TcC9kw7fr88Q7nbru6jIyeU2xdW20gucrlq0irt3chYscmjsPXjNgVxuVDVa0qWV9vfL+"
    "VIQVMfJuZgSWcyQhTB/E9biufoHOvsJCKqS+gz5zENTc01Sqr8zRb46M3xluM3aYlYB/FkTm9GK/sficbm3"
    "2TFwSPGKB6GiCBTEZR3NDU2DmxiUKyCMoLgHabW7LAe/oWxX2qE7ZRGk+GPjPjdQFN/6ZajVrr6e7HgxFjv"
    "MrSLeSgIWm7xiWd//UUZdX5hXHFewPJP+fVbS9t2DCTMueIn1p+j9AxvNLlUoKRRuRg/ibpVm6uIDBRoY8I"
    "da1JLfpqnSdO2Z4m6fsXfeDITZ6hOYudyA+HNn1N2EP/4cKSEcipLqA/Tadc9qhT7ptkxoD0SQZ7RqHjlyp"
    "aq7LyjOLBehS8ErTTAZttVVlxu22/QH6wzUoBhKksPwaPZkWkGv9YR9zPpDV6s1LwP/MqDofA4yjQArikyD"
    "Xd0ba447HMVyPsUUclNPezuNR7wV6Smw3yJSjUwk6GHxz+C1T5dElIbn7+AB80Q81SPr7EfiQUC63vr1KCf"
    "eIbT3oOdzzfuCHKKNVeLROpMjxj0RVjMczhrKtA40HuTK5bQUM0qWyJ1x1rlCCbRnQhB1pnXVmKuE"
)
KAT_SESSION_ID = "3aHfFzJ3WHaR44jzq57YJl8dDLLWyaRxkyhyHazjAI8"
KAT_SESSION_KEY = (
    "AgAAAAAgssQTvZ+L+MhU+Eq5Cev35breT4O+xKZkQHW3K1AT+s6vbdhbSUG38mzdFD8+/ZFTJ1QYuPVdHvc"
    "S7QDyAX2s1U2HnzmjX9RJkU/H/ym04CiUQgxxabL+xXgbLIrmkI1gQOZ1Ik+zCzTS5REhsPVIdN811+iJxO"
    "EYJFqA6E3MsN2h3xcyd1h2keOI86ue2CZfHQyy1smkcZMoch2s4wCPq+y7xpe5Jy/YOoHdrf+64Hc9edbY0"
    "ElxvTFwaNNwAsF1El97H8KqMTPeNz5eefHem3b+oCt+TbRjAX18XL9WAA"
)
KAT_PLAINTEXT = b"strongroom known answer"
KAT_CIPHERTEXT = base64.b64decode(
    "AwgAEiB6FDrNrE4eEyHWPgwMniTPEEuzQx+zKxeVodfjaUArm20AL9aelslZjrquSjnzJ2ngRNzXDAkWnv2"
    "vjGdps3Dof4gdukg4rCO4m/qOZIOKvBgFmt0LDP5UeUzGAi/JioXlcqIevri9BQ=="
)


def _kat_outbound() -> crypto.OutboundGroupSession:
    stored = json.dumps({"created_at": NOW, "pickle": KAT_PICKLE})
    return crypto.OutboundGroupSession.from_pickle(stored, PICKLE_KEY)


def test_known_answer_encrypt() -> None:
    outbound = _kat_outbound()
    assert outbound.session_id == KAT_SESSION_ID
    assert outbound.session_key == KAT_SESSION_KEY
    assert outbound.created_at == NOW
    assert outbound.message_index == 0
    assert outbound.encrypt(KAT_PLAINTEXT) == KAT_CIPHERTEXT
    assert outbound.message_index == 1


def test_known_answer_decrypt() -> None:
    inbound = crypto.InboundGroupSession.from_session_key(KAT_SESSION_KEY)
    assert inbound.session_id == KAT_SESSION_ID
    assert inbound.first_known_index == 0
    assert crypto.megolm_message_index(KAT_CIPHERTEXT) == 0
    assert inbound.decrypt(KAT_CIPHERTEXT) == crypto.GroupDecrypted(KAT_PLAINTEXT, 0)


# --- round trips --------------------------------------------------------------------


def _pair() -> tuple[crypto.OutboundGroupSession, crypto.InboundGroupSession]:
    outbound = crypto.OutboundGroupSession.create(NOW)
    inbound = crypto.InboundGroupSession.from_session_key(outbound.session_key)
    return outbound, inbound


def test_round_trip_in_order_and_out_of_order() -> None:
    outbound, inbound = _pair()
    assert inbound.session_id == outbound.session_id
    ciphertexts = [outbound.encrypt(f"message {i}".encode()) for i in range(5)]
    assert outbound.message_index == 5
    for i in (3, 0, 4, 1, 2):
        decrypted = inbound.decrypt(ciphertexts[i])
        assert decrypted == (f"message {i}".encode(), i)
        assert crypto.megolm_message_index(ciphertexts[i]) == i


def test_one_ciphertext_serves_every_member() -> None:
    outbound = crypto.OutboundGroupSession.create(NOW)
    members = [
        crypto.InboundGroupSession.from_session_key(outbound.session_key)
        for _ in range(3)
    ]
    ciphertext = outbound.encrypt(b"to all of you")
    assert {member.decrypt(ciphertext).plaintext for member in members} == {
        b"to all of you"
    }


def test_a_replay_decrypts_again_so_callers_must_track_indices() -> None:
    # Documented behaviour the client relies on knowing: Megolm has no replay guard.
    outbound, inbound = _pair()
    ciphertext = outbound.encrypt(b"once")
    assert inbound.decrypt(ciphertext) == inbound.decrypt(ciphertext)


@settings(max_examples=60, deadline=None)
@given(plaintext=st.binary(max_size=2048))
def test_round_trip_any_plaintext(plaintext: bytes) -> None:
    outbound, inbound = _pair()
    assert inbound.decrypt(outbound.encrypt(plaintext)).plaintext == plaintext


# --- what must not decrypt ----------------------------------------------------------

TAMPER_OUTBOUND, TAMPER_INBOUND = _pair()
TAMPER_CIPHERTEXT = TAMPER_OUTBOUND.encrypt(b"do not touch")


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_tampered_ciphertext_is_refused(data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=len(TAMPER_CIPHERTEXT) - 1))
    mask = data.draw(st.integers(min_value=1, max_value=255))
    tampered = bytearray(TAMPER_CIPHERTEXT)
    tampered[index] ^= mask
    with pytest.raises(DecryptionError):
        TAMPER_INBOUND.decrypt(bytes(tampered))


@settings(max_examples=100, deadline=None)
@given(garbage=st.binary(max_size=200))
def test_garbage_is_a_decryption_error(garbage: bytes) -> None:
    with pytest.raises(DecryptionError):
        TAMPER_INBOUND.decrypt(garbage)


def test_a_non_canonical_encoding_of_a_valid_message_is_refused() -> None:
    # Byte 1 tags the message index (field 1, varint 0).  Re-tagged as an unknown field,
    # the parser skips it, the index defaults to 0, and vodozemac's re-encoding still
    # verifies: the same message under different bytes.  We refuse it.
    inbound = crypto.InboundGroupSession.from_session_key(KAT_SESSION_KEY)
    assert KAT_CIPHERTEXT[1] == 0x08
    malleated = KAT_CIPHERTEXT[:1] + b"\x18" + KAT_CIPHERTEXT[2:]
    with pytest.raises(DecryptionError, match="canonically"):
        inbound.decrypt(malleated)


def test_a_message_of_another_session_is_refused() -> None:
    other, _ = _pair()
    with pytest.raises(DecryptionError, match="does not decrypt in this session"):
        TAMPER_INBOUND.decrypt(other.encrypt(b"elsewhere"))


def test_a_truncated_message_is_refused() -> None:
    with pytest.raises(DecryptionError):
        TAMPER_INBOUND.decrypt(TAMPER_CIPHERTEXT[:-10])
    with pytest.raises(DecryptionError):
        crypto.megolm_message_index(b"")


# --- late joiners ---------------------------------------------------------------------


def test_a_late_joiner_reads_from_its_index_on_never_before() -> None:
    outbound = crypto.OutboundGroupSession.create(NOW)
    early = [outbound.encrypt(f"before {i}".encode()) for i in range(3)]
    late = crypto.InboundGroupSession.from_session_key(outbound.session_key)
    assert late.first_known_index == 3
    after = outbound.encrypt(b"after")
    assert late.decrypt(after) == (b"after", 3)
    for ciphertext in early:
        with pytest.raises(DecryptionError):
            late.decrypt(ciphertext)


def test_export_at_an_index_hides_everything_before_it() -> None:
    outbound, inbound = _pair()
    ciphertexts = [outbound.encrypt(f"m{i}".encode()) for i in range(6)]
    exported = inbound.export_at(4)
    assert exported is not None
    imported = crypto.InboundGroupSession.from_export(exported)
    assert imported.session_id == inbound.session_id
    assert imported.first_known_index == 4
    assert imported.decrypt(ciphertexts[5]).plaintext == b"m5"
    for ciphertext in ciphertexts[:4]:
        with pytest.raises(DecryptionError):
            imported.decrypt(ciphertext)
    # Nothing before what a session knows can be exported from it.
    assert imported.export_at(2) is None
    assert imported.export_at(-1) is None
    assert imported.export_at(2**40) is None


def test_malformed_keys_are_crypto_errors() -> None:
    for bad in ("", "not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(CryptoError):
            crypto.InboundGroupSession.from_session_key(bad)
        with pytest.raises(CryptoError):
            crypto.InboundGroupSession.from_export(bad)
    # A session key is not an exported key, nor the other way round.
    outbound, inbound = _pair()
    exported = inbound.export_at(0)
    assert exported is not None
    with pytest.raises(CryptoError):
        crypto.InboundGroupSession.from_export(outbound.session_key)
    with pytest.raises(CryptoError):
        crypto.InboundGroupSession.from_session_key(exported)


# --- pickles ----------------------------------------------------------------------------


def test_outbound_pickle_round_trip_keeps_the_ratchet_and_creation_time() -> None:
    outbound, inbound = _pair()
    outbound.encrypt(b"one")
    key = os.urandom(32)
    restored = crypto.OutboundGroupSession.from_pickle(outbound.pickle(key), key)
    assert restored.session_id == outbound.session_id
    assert restored.message_index == 1
    assert restored.created_at == NOW
    assert inbound.decrypt(restored.encrypt(b"two")) == (b"two", 1)


def test_inbound_pickle_round_trip() -> None:
    outbound, inbound = _pair()
    key = os.urandom(32)
    restored = crypto.InboundGroupSession.from_pickle(inbound.pickle(key), key)
    assert restored.session_id == inbound.session_id
    assert restored.first_known_index == 0
    assert restored.decrypt(outbound.encrypt(b"hi")).plaintext == b"hi"


def test_a_wrong_pickle_key_fails_clearly() -> None:
    outbound, inbound = _pair()
    key, wrong = os.urandom(32), os.urandom(32)
    with pytest.raises(DecryptionError, match="does not open with this key"):
        crypto.OutboundGroupSession.from_pickle(outbound.pickle(key), wrong)
    with pytest.raises(DecryptionError, match="does not open with this key"):
        crypto.InboundGroupSession.from_pickle(inbound.pickle(key), wrong)
    with pytest.raises(DecryptionError, match="does not open with this key"):
        crypto.InboundGroupSession.from_pickle(inbound.pickle(key), b"short")


def test_a_malformed_pickle_fails_clearly() -> None:
    key = os.urandom(32)
    for bad in ("", "{}", "not json", json.dumps({"created_at": "x", "pickle": ""})):
        with pytest.raises(DecryptionError):
            crypto.OutboundGroupSession.from_pickle(bad, key)
    with pytest.raises(DecryptionError):
        crypto.InboundGroupSession.from_pickle("garbage", key)


def test_pickling_under_a_short_key_is_a_crypto_error() -> None:
    outbound, inbound = _pair()
    with pytest.raises(CryptoError):
        outbound.pickle(b"short")
    with pytest.raises(CryptoError):
        inbound.pickle(b"short")
