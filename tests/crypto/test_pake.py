"""The activation PAKE: SPAKE2 on the activation code, then sealed messages."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import math
import re
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom import crypto
from strongroom.errors import ActivationError

CODE = "7K2M-QX9D-4HRT"
USER = "alice"


@dataclass
class Run:
    """Both ends of one activation after the SPAKE2 exchange."""

    client: crypto.ActivationClient
    server: crypto.ActivationServer
    keys: crypto.ActivationKeys
    client_message: bytes
    server_message: bytes


def activate(
    client_code: str = CODE,
    server_code: str = CODE,
    client_user: str = USER,
    server_user: str = USER,
) -> Run:
    client = crypto.ActivationClient(client_user, client_code)
    server = crypto.ActivationServer(server_user, crypto.code_password(server_code))
    client_message = client.start()
    server_message = server.start()
    server.finish(client_message)
    client.finish(server_message)
    keys = crypto.ActivationKeys(server.shared_key)
    return Run(client, server, keys, client_message, server_message)


@pytest.fixture
def run() -> Run:
    return activate()


@pytest.fixture
def wrong_code_run() -> Run:
    return activate(client_code="7K2M-QX9D-4HRV")


codes = st.lists(st.sampled_from(crypto.CODE_ALPHABET), min_size=12, max_size=12).map(
    "".join
)


# --- the happy path ---------------------------------------------------------------


def test_messages_have_the_wire_size(run: Run) -> None:
    # ActivationStart/Started carry exactly 33 bytes: a side byte and a point.
    assert len(run.client_message) == len(run.server_message) == 33
    assert run.client_message != run.server_message


def test_confirm_checks_with_the_right_code(run: Run) -> None:
    assert len(run.client.confirm) == 32
    assert run.keys.check_confirm(run.client.confirm)
    assert run.keys.transcript_id == run.client.transcript_id
    assert run.client.transcript_id != run.client.confirm


def test_registration_seals_and_opens(run: Run) -> None:
    registration = b"the device's keys" * 10
    sealed = run.client.seal(registration)
    assert registration not in sealed
    assert len(sealed) == len(registration) + 12 + 16  # nonce and tag
    assert run.keys.open_registration(sealed) == registration
    assert run.client.seal(registration) != sealed  # a fresh nonce every time


def test_grant_seals_and_opens(run: Run) -> None:
    grant = b"authority key and certificate"
    sealed = run.keys.seal_grant(grant)
    assert grant not in sealed
    assert run.client.open_grant(sealed) == grant


def test_directions_use_different_keys(run: Run) -> None:
    with pytest.raises(ActivationError):
        run.keys.open_registration(run.keys.seal_grant(b"grant"))
    with pytest.raises(ActivationError):
        run.client.open_grant(run.client.seal(b"registration"))


def test_each_run_derives_fresh_keys(run: Run) -> None:
    other = activate()
    assert other.client.confirm != run.client.confirm
    assert not run.keys.check_confirm(other.client.confirm)
    with pytest.raises(ActivationError):
        run.keys.open_registration(other.client.seal(b"registration"))


@pytest.mark.parametrize("index", [0, 11, 12, 20, -1])
def test_tampered_sealed_message_does_not_open(run: Run, index: int) -> None:
    sealed = bytearray(run.client.seal(b"registration"))
    sealed[index] ^= 0x01
    with pytest.raises(ActivationError):
        run.keys.open_registration(bytes(sealed))
    grant = bytearray(run.keys.seal_grant(b"grant"))
    grant[index] ^= 0x01
    with pytest.raises(ActivationError):
        run.client.open_grant(bytes(grant))


@pytest.mark.parametrize("length", [0, 5, 12, 27])
def test_truncated_sealed_message_does_not_open(run: Run, length: int) -> None:
    sealed = run.client.seal(b"registration")[:length]
    with pytest.raises(ActivationError):
        run.keys.open_registration(sealed)


def test_code_as_typed_by_a_person_still_matches() -> None:
    typed = activate(client_code="7k2m qx9d 4hrt")
    assert typed.keys.check_confirm(typed.client.confirm)


# --- the wrong code ---------------------------------------------------------------


def test_wrong_code_fails_confirm(wrong_code_run: Run) -> None:
    assert not wrong_code_run.keys.check_confirm(wrong_code_run.client.confirm)
    assert wrong_code_run.keys.transcript_id != wrong_code_run.client.transcript_id


def test_wrong_code_registration_does_not_open(wrong_code_run: Run) -> None:
    with pytest.raises(ActivationError):
        wrong_code_run.keys.open_registration(wrong_code_run.client.seal(b"reg"))


def test_grant_from_a_wrong_code_server_does_not_open(wrong_code_run: Run) -> None:
    with pytest.raises(ActivationError):
        wrong_code_run.client.open_grant(wrong_code_run.keys.seal_grant(b"grant"))


def test_another_users_code_does_not_match() -> None:
    # The same code, but the server runs the exchange for a different user.
    run = activate(server_user="bob")
    assert not run.keys.check_confirm(run.client.confirm)


@settings(max_examples=30, deadline=None)
@given(codes, codes)
def test_distinct_codes_never_confirm(client_code: str, server_code: str) -> None:
    if client_code == server_code:
        server_code = server_code[:-1] + ("1" if server_code[-1] != "1" else "2")
    run = activate(client_code=client_code, server_code=server_code)
    assert not run.keys.check_confirm(run.client.confirm)


# --- misuse and malformed messages ------------------------------------------------


def test_keys_are_not_available_before_the_exchange() -> None:
    client = crypto.ActivationClient(USER, CODE)
    client.start()
    with pytest.raises(ActivationError):
        _ = client.confirm
    with pytest.raises(ActivationError):
        client.seal(b"registration")
    server = crypto.ActivationServer(USER, crypto.code_password(CODE))
    server.start()
    with pytest.raises(ActivationError):
        _ = server.shared_key


@pytest.mark.parametrize(
    "message",
    [b"", b"B", b"B" + bytes(31), b"B" + bytes(40), bytes(33)],
    ids=["empty", "side-only", "short", "long", "no-side"],
)
def test_client_refuses_malformed_server_message(message: bytes) -> None:
    client = crypto.ActivationClient(USER, CODE)
    client.start()
    with pytest.raises(ActivationError):
        client.finish(message)


@pytest.mark.parametrize(
    "message",
    [b"", b"A", b"A" + bytes(31), b"A" + bytes(40), bytes(33)],
    ids=["empty", "side-only", "short", "long", "no-side"],
)
def test_server_refuses_malformed_device_message(message: bytes) -> None:
    server = crypto.ActivationServer(USER, crypto.code_password(CODE))
    server.start()
    with pytest.raises(ActivationError):
        server.finish(message)


def test_reflected_messages_are_refused() -> None:
    client = crypto.ActivationClient(USER, CODE)
    with pytest.raises(ActivationError):
        client.finish(client.start())
    server = crypto.ActivationServer(USER, crypto.code_password(CODE))
    with pytest.raises(ActivationError):
        server.finish(server.start())


# spake2 raises NotOnCurve (neither a SPAKEError nor a ValueError) for a message whose
# point does not decode: finish() must still answer with ActivationError.


def test_server_refuses_a_device_message_off_the_curve() -> None:
    server = crypto.ActivationServer(USER, crypto.code_password(CODE))
    server.start()
    with pytest.raises(ActivationError):
        server.finish(b"A" * 33)


def test_client_refuses_a_server_message_off_the_curve() -> None:
    client = crypto.ActivationClient(USER, CODE)
    client.start()
    with pytest.raises(ActivationError):
        client.finish(b"B" * 33)


@settings(max_examples=50, deadline=None)
@given(point=st.binary(min_size=32, max_size=32))
def test_finish_raises_only_activation_error(point: bytes) -> None:
    # Arbitrary points with the right side byte: about half are not on the curve.
    server = crypto.ActivationServer(USER, crypto.code_password(CODE))
    server.start()
    with contextlib.suppress(ActivationError):
        server.finish(b"A" + point)
    client = crypto.ActivationClient(USER, CODE)
    client.start()
    with contextlib.suppress(ActivationError):
        client.finish(b"B" + point)


# --- codes ------------------------------------------------------------------------


def test_alphabet_is_crockford_base32() -> None:
    assert len(crypto.CODE_ALPHABET) == len(set(crypto.CODE_ALPHABET)) == 32
    assert not set("ILOU") & set(crypto.CODE_ALPHABET)


@pytest.mark.parametrize(
    "typed",
    [
        "7K2M-QX9D-4HRT",
        "7k2m-qx9d-4hrt",
        "7K2MQX9D4HRT",
        "7K2M QX9D 4HRT",
        " 7k2m - qx9d - 4hrt ",
    ],
)
def test_normalise_undoes_case_dashes_and_spaces(typed: str) -> None:
    assert crypto.normalise_code(typed) == "7K2MQX9D4HRT"


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("OOOO-oooo-0000", "000000000000"),
        ("IIII-iiii-1111", "111111111111"),
        ("LLLL-llll-1111", "111111111111"),
        ("10LI-0O1l-ABCD", "10110011ABCD"),
    ],
)
def test_normalise_reads_o_as_zero_and_i_l_as_one(typed: str, expected: str) -> None:
    assert crypto.normalise_code(typed) == expected


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "7K2M-QX9D-4HR",
        "7K2M-QX9D-4HRTX",
        "7K2M-QX9D-4HRU",  # U is not in the alphabet
        "7K2M_QX9D_4HRT",
        "7K2M-QX9D-4HR!",
        "7K2M\tQX9D\t4HRT",
        "\uff17K2M-QX9D-4HRT",  # a full-width digit seven
    ],
)
def test_normalise_refuses_what_cannot_be_a_code(typed: str) -> None:
    with pytest.raises(ActivationError):
        crypto.normalise_code(typed)


@settings(max_examples=200, deadline=None)
@given(
    st.text(max_size=20)
    | st.text(
        crypto.CODE_ALPHABET + crypto.CODE_ALPHABET.lower() + "oilOIL -uU_",
        min_size=10,
        max_size=16,
    )
)
def test_normalise_returns_a_code_or_refuses(text: str) -> None:
    try:
        code = crypto.normalise_code(text)
    except ActivationError:
        return
    assert len(code) == 12
    assert set(code) <= set(crypto.CODE_ALPHABET)
    assert crypto.normalise_code(code) == code


@settings(max_examples=100, deadline=None)
@given(codes)
def test_normalise_is_identity_on_codes(code: str) -> None:
    assert crypto.normalise_code(code) == code
    dashed = "-".join((code[:4], code[4:8], code[8:]))
    assert crypto.normalise_code(dashed.lower()) == code


def test_generated_codes_normalise_and_carry_60_bits() -> None:
    generated = [crypto.generate_code() for _ in range(400)]
    for code in generated:
        assert re.fullmatch(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}", code)
        normalised = crypto.normalise_code(code)
        assert normalised == code.replace("-", "")
        assert len(normalised) * math.log2(len(crypto.CODE_ALPHABET)) == 60
    assert len(set(generated)) == len(generated)
    # every symbol turns up (4800 draws from 32 symbols: missing one is ~1e-60)
    counts = collections.Counter("".join(generated).replace("-", ""))
    assert set(counts) == set(crypto.CODE_ALPHABET)


def test_code_password_known_answer() -> None:
    expected = hashlib.sha256(
        b"strongroom/v1/activation-code\x00" + b"7K2MQX9D4HRT"
    ).digest()
    assert crypto.code_password(CODE) == expected
    assert crypto.code_password("7k2m qx9d 4hrt") == expected
    assert crypto.code_password(CODE) == crypto.code_password(CODE)


def test_code_password_refuses_a_malformed_code() -> None:
    with pytest.raises(ActivationError):
        crypto.code_password("not a code")


@settings(max_examples=100, deadline=None)
@given(codes, codes)
def test_code_password_differs_per_code(first: str, second: str) -> None:
    expected = hashlib.sha256(
        b"strongroom/v1/activation-code\x00" + first.encode()
    ).digest()
    assert crypto.code_password(first) == expected
    if first != second:
        assert crypto.code_password(first) != crypto.code_password(second)
