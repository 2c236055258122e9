"""Device identity (vodozemac accounts), one-time keys and Olm sessions."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom import crypto, proto
from strongroom.errors import CryptoError, DecryptionError, SignatureError

DEVICE_ID_RE = re.compile(r"[a-z2-7]{16}")

# Module-level accounts for the hypothesis tests (function-scoped fixtures do not mix
# with @given).
ACCOUNT = crypto.DeviceAccount.generate()
GARBAGE_SENDER = crypto.DeviceAccount.generate()
GARBAGE_TARGET = crypto.DeviceAccount.generate()
GARBAGE_SESSION = GARBAGE_SENDER.create_outbound(
    GARBAGE_TARGET.curve25519, GARBAGE_TARGET.new_one_time_keys(1)[0].key
)


@pytest.fixture(scope="module")
def alice() -> crypto.DeviceAccount:
    return crypto.DeviceAccount.generate()


@pytest.fixture(scope="module")
def bob() -> crypto.DeviceAccount:
    return crypto.DeviceAccount.generate()


@dataclass
class Conversation:
    """Alice opened a session to Bob with one of his one-time keys; Bob answered it."""

    alice: crypto.DeviceAccount
    bob: crypto.DeviceAccount
    outbound: crypto.OlmSession  # Alice's
    inbound: crypto.OlmSession  # Bob's
    pre_key: tuple[int, bytes]


@pytest.fixture
def conversation() -> Conversation:
    alice = crypto.DeviceAccount.generate()
    bob = crypto.DeviceAccount.generate()
    (otk,) = bob.new_one_time_keys(1)
    outbound = alice.create_outbound(bob.curve25519, otk.key)
    pre_key = outbound.encrypt(b"hello bob")
    inbound, plaintext = bob.create_inbound(alice.curve25519, pre_key[1])
    assert plaintext == b"hello bob"
    return Conversation(alice, bob, outbound, inbound, pre_key)


# --- identity ---------------------------------------------------------------------


def test_device_id_is_derived_from_the_ed25519_key(alice: crypto.DeviceAccount) -> None:
    raw = base64.b64decode(alice.ed25519 + "=" * (-len(alice.ed25519) % 4))
    assert len(raw) == 32
    expected = base64.b32encode(hashlib.sha256(raw).digest()).decode().lower()[:16]
    assert alice.device_id == expected
    assert crypto.device_id_for(alice.ed25519) == alice.device_id
    assert DEVICE_ID_RE.fullmatch(alice.device_id)
    assert proto.valid_device_id(alice.device_id)


def test_device_ids_differ_between_accounts(
    alice: crypto.DeviceAccount, bob: crypto.DeviceAccount
) -> None:
    assert alice.device_id != bob.device_id
    assert alice.ed25519 != bob.ed25519
    assert alice.curve25519 != bob.curve25519


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_device_id_for_any_key_is_16_base32_chars(raw: bytes) -> None:
    key = crypto.b64encode(raw)
    device_id = crypto.device_id_for(key)
    assert DEVICE_ID_RE.fullmatch(device_id)
    assert crypto.device_id_for(key) == device_id
    # padded and unpadded spellings of the key name the same device
    assert crypto.device_id_for(base64.b64encode(raw).decode()) == device_id


def test_device_id_for_refuses_malformed_base64() -> None:
    with pytest.raises(CryptoError):
        crypto.device_id_for("not base64!")


# --- signatures -------------------------------------------------------------------


def test_sign_and_verify(alice: crypto.DeviceAccount) -> None:
    signature = alice.sign(b"some bytes")
    assert len(signature) == 64
    crypto.verify_ed25519(alice.ed25519, b"some bytes", signature)
    # an independent check with cryptography
    raw = base64.b64decode(alice.ed25519 + "=" * (-len(alice.ed25519) % 4))
    Ed25519PublicKey.from_public_bytes(raw).verify(signature, b"some bytes")


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=64), extra=st.binary(min_size=1, max_size=4))
def test_verify_refuses_modified_data(data: bytes, extra: bytes) -> None:
    account = ACCOUNT
    signature = account.sign(data)
    crypto.verify_ed25519(account.ed25519, data, signature)
    with pytest.raises(SignatureError):
        crypto.verify_ed25519(account.ed25519, data + extra, signature)
    if data:
        with pytest.raises(SignatureError):
            crypto.verify_ed25519(
                account.ed25519, bytes([data[0] ^ 1]) + data[1:], signature
            )


def test_verify_refuses_bad_signatures_and_keys(
    alice: crypto.DeviceAccount, bob: crypto.DeviceAccount
) -> None:
    signature = alice.sign(b"data")
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    for key, sig in [
        (alice.ed25519, flipped),
        (alice.ed25519, signature[:63]),
        (alice.ed25519, b""),
        (bob.ed25519, signature),  # someone else's key
        ("not base64!", signature),
        (crypto.b64encode(b"short"), signature),
        (alice.curve25519, signature),  # the wrong kind of key
    ]:
        with pytest.raises(SignatureError):
            crypto.verify_ed25519(key, b"data", sig)


# --- one-time keys ----------------------------------------------------------------


def test_one_time_keys_are_signed(alice: crypto.DeviceAccount) -> None:
    keys = alice.new_one_time_keys(5)
    assert len(keys) == 5
    assert len({k.key_id for k in keys}) == len({k.key for k in keys}) == 5
    for otk in keys:
        assert otk.fallback is False
        crypto.verify_one_time_key(alice.device_id, alice.ed25519, otk)
        # the documented signing input, rebuilt by hand
        crypto.verify_ed25519(
            alice.ed25519,
            b"strongroom/v1/one-time-key\x00"
            + b"\x00".join(
                (alice.device_id.encode(), otk.key_id.encode(), otk.key.encode(), b"O")
            ),
            otk.signature,
        )


def test_each_batch_is_fresh(alice: crypto.DeviceAccount) -> None:
    first = alice.new_one_time_keys(3)
    second = alice.new_one_time_keys(3)
    assert not {k.key for k in first} & {k.key for k in second}
    assert not {k.key_id for k in first} & {k.key_id for k in second}


def test_fallback_key_is_signed_as_fallback(alice: crypto.DeviceAccount) -> None:
    fallback = alice.new_fallback_key()
    assert fallback.fallback is True
    crypto.verify_one_time_key(alice.device_id, alice.ed25519, fallback)
    with pytest.raises(SignatureError):
        crypto.verify_one_time_key(
            alice.device_id,
            alice.ed25519,
            proto.OneTimeKey(
                key_id=fallback.key_id,
                key=fallback.key,
                signature=fallback.signature,
                fallback=False,
            ),
        )


def test_one_time_key_survives_the_wire(alice: crypto.DeviceAccount) -> None:
    (otk,) = alice.new_one_time_keys(1)
    body = proto.encode_json(proto.UploadKeys(one_time_keys=[otk]))
    (decoded,) = proto.decode_json(body, proto.UploadKeys).one_time_keys
    assert decoded == otk
    crypto.verify_one_time_key(alice.device_id, alice.ed25519, decoded)


def test_tampered_one_time_keys_are_refused(
    alice: crypto.DeviceAccount, bob: crypto.DeviceAccount
) -> None:
    otk, other = alice.new_one_time_keys(2)
    bobs = bob.new_one_time_keys(1)[0]
    forgeries = [
        proto.OneTimeKey(otk.key_id, other.key, otk.signature, otk.fallback),
        proto.OneTimeKey(otk.key_id, bobs.key, otk.signature, otk.fallback),
        proto.OneTimeKey(other.key_id, otk.key, otk.signature, otk.fallback),
        proto.OneTimeKey(otk.key_id, otk.key, otk.signature, not otk.fallback),
        proto.OneTimeKey(
            otk.key_id, otk.key, bytes([otk.signature[0] ^ 1]) + otk.signature[1:]
        ),
    ]
    for forged in forgeries:
        with pytest.raises(SignatureError):
            crypto.verify_one_time_key(alice.device_id, alice.ed25519, forged)


def test_one_time_key_is_bound_to_its_device(
    alice: crypto.DeviceAccount, bob: crypto.DeviceAccount
) -> None:
    (otk,) = alice.new_one_time_keys(1)
    # claimed for another device id, even with the right signing key
    with pytest.raises(SignatureError):
        crypto.verify_one_time_key(bob.device_id, alice.ed25519, otk)
    # and not verifiable under another device's key
    with pytest.raises(SignatureError):
        crypto.verify_one_time_key(alice.device_id, bob.ed25519, otk)


# --- Olm sessions -----------------------------------------------------------------


def test_first_message_is_a_pre_key_message(conversation: Conversation) -> None:
    message_type, ciphertext = conversation.pre_key
    assert message_type == 0
    assert b"hello bob" not in ciphertext
    assert conversation.outbound.matches(message_type, ciphertext)
    assert conversation.inbound.matches(message_type, ciphertext)
    assert conversation.outbound.session_id == conversation.inbound.session_id


def test_conversation_both_ways(conversation: Conversation) -> None:
    c = conversation
    for i in range(3):
        message_type, ciphertext = c.inbound.encrypt(b"reply %d" % i)
        assert message_type == 1
        assert c.outbound.decrypt(message_type, ciphertext) == b"reply %d" % i
        message_type, ciphertext = c.outbound.encrypt(b"message %d" % i)
        assert message_type == 1  # Bob answered, so no more pre-key messages
        assert not c.inbound.matches(message_type, ciphertext)
        assert c.inbound.decrypt(message_type, ciphertext) == b"message %d" % i


def test_out_of_order_messages_decrypt(conversation: Conversation) -> None:
    c = conversation
    first = c.inbound.encrypt(b"first")
    second = c.inbound.encrypt(b"second")
    assert c.outbound.decrypt(*second) == b"second"
    assert c.outbound.decrypt(*first) == b"first"


def test_pre_key_messages_repeat_until_answered(conversation: Conversation) -> None:
    c = conversation
    again = c.outbound.encrypt(b"are you there?")
    assert again[0] == 0
    assert c.inbound.decrypt(*again) == b"are you there?"


def test_replayed_normal_message_is_refused(conversation: Conversation) -> None:
    c = conversation
    message = c.inbound.encrypt(b"once")
    assert c.outbound.decrypt(*message) == b"once"
    with pytest.raises(DecryptionError):
        c.outbound.decrypt(*message)


def test_replayed_pre_key_message_is_refused(conversation: Conversation) -> None:
    c = conversation
    # into the session it created ...
    with pytest.raises(DecryptionError):
        c.inbound.decrypt(*c.pre_key)
    # ... and as a new session: its one-time key is spent
    with pytest.raises(DecryptionError):
        c.bob.create_inbound(c.alice.curve25519, c.pre_key[1])


def test_message_for_someone_else_is_refused(conversation: Conversation) -> None:
    c = conversation
    carol = crypto.DeviceAccount.generate()
    with pytest.raises(DecryptionError):
        carol.create_inbound(c.alice.curve25519, c.pre_key[1])


@pytest.mark.parametrize("index", [0, 10, -1])
def test_tampered_message_is_refused(conversation: Conversation, index: int) -> None:
    message_type, ciphertext = conversation.inbound.encrypt(b"integrity")
    tampered = bytearray(ciphertext)
    tampered[index] ^= 0x01
    with pytest.raises(DecryptionError):
        conversation.outbound.decrypt(message_type, bytes(tampered))
    # the genuine message still decrypts afterwards
    assert conversation.outbound.decrypt(message_type, ciphertext) == b"integrity"


@settings(max_examples=100, deadline=None)
@given(
    message_type=st.integers(min_value=0, max_value=1),
    ciphertext=st.binary(max_size=200),
)
def test_garbage_raises_only_decryption_error(
    message_type: int, ciphertext: bytes
) -> None:
    with pytest.raises(DecryptionError):
        GARBAGE_SESSION.decrypt(message_type, ciphertext)
    with pytest.raises(DecryptionError):
        GARBAGE_TARGET.create_inbound(GARBAGE_SENDER.curve25519, ciphertext)
    assert GARBAGE_SESSION.matches(message_type, ciphertext) is False


def test_session_needs_well_formed_keys(alice: crypto.DeviceAccount) -> None:
    with pytest.raises(CryptoError):
        alice.create_outbound("not a key", alice.curve25519)
    with pytest.raises(CryptoError):
        alice.create_outbound(alice.curve25519, "not a key")


# --- pickles ----------------------------------------------------------------------


def test_account_pickle_round_trip(alice: crypto.DeviceAccount) -> None:
    key = os.urandom(crypto.PICKLE_KEY_BYTES)
    pickle = alice.pickle(key)
    restored = crypto.DeviceAccount.from_pickle(pickle, key)
    assert restored.ed25519 == alice.ed25519
    assert restored.curve25519 == alice.curve25519
    assert restored.device_id == alice.device_id
    crypto.verify_ed25519(alice.ed25519, b"data", restored.sign(b"data"))


@pytest.mark.parametrize(
    "wrong", [bytes(32), b"\xff" * 32, b"short", b""], ids=["zeros", "ones", "5", "0"]
)
def test_account_pickle_with_the_wrong_key_is_refused(
    alice: crypto.DeviceAccount, wrong: bytes
) -> None:
    pickle = alice.pickle(os.urandom(crypto.PICKLE_KEY_BYTES))
    with pytest.raises(DecryptionError):
        crypto.DeviceAccount.from_pickle(pickle, wrong)


def test_session_pickle_round_trip(conversation: Conversation) -> None:
    c = conversation
    key = os.urandom(crypto.PICKLE_KEY_BYTES)
    restored = crypto.OlmSession.from_pickle(c.outbound.pickle(key), key)
    assert restored.session_id == c.outbound.session_id
    message = c.inbound.encrypt(b"after restart")
    assert restored.decrypt(*message) == b"after restart"
    assert c.inbound.decrypt(*restored.encrypt(b"and back")) == b"and back"


def test_session_pickle_with_the_wrong_key_is_refused(
    conversation: Conversation,
) -> None:
    pickle = conversation.outbound.pickle(os.urandom(crypto.PICKLE_KEY_BYTES))
    with pytest.raises(DecryptionError):
        crypto.OlmSession.from_pickle(pickle, os.urandom(crypto.PICKLE_KEY_BYTES))
    with pytest.raises(DecryptionError):
        crypto.OlmSession.from_pickle("garbage", bytes(crypto.PICKLE_KEY_BYTES))


def test_one_time_key_is_used_up_by_an_inbound_session_across_pickles() -> None:
    alice = crypto.DeviceAccount.generate()
    bob = crypto.DeviceAccount.generate()
    (otk,) = bob.new_one_time_keys(1)
    pre_key = alice.create_outbound(bob.curve25519, otk.key).encrypt(b"hi")
    key = os.urandom(crypto.PICKLE_KEY_BYTES)
    bob.create_inbound(alice.curve25519, pre_key[1])
    restored = crypto.DeviceAccount.from_pickle(bob.pickle(key), key)
    with pytest.raises(DecryptionError):
        restored.create_inbound(alice.curve25519, pre_key[1])


def test_a_non_canonical_encoding_of_a_valid_message_is_refused(
    conversation: Conversation,
) -> None:
    # A normal message: version, field 1 (ratchet key, 32 bytes), field 2 (chain index,
    # varint), field 4 (ciphertext), MAC.  The first reply of a chain has index 0;
    # re-tagged as an unknown field, the parser skips it, the index defaults to 0 and
    # vodozemac's re-encoding still verifies: one message under other bytes.  Refused.
    c = conversation
    message_type, ciphertext = c.inbound.encrypt(b"reply")
    assert message_type == 1
    assert ciphertext[1:3] == b"\x0a\x20" and ciphertext[35:37] == b"\x10\x00"
    malleated = ciphertext[:35] + b"\x18" + ciphertext[36:]
    with pytest.raises(DecryptionError, match="canonically"):
        c.outbound.decrypt(message_type, malleated)
    assert c.outbound.decrypt(message_type, ciphertext) == b"reply"  # the real one
