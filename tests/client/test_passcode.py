"""Passcode protection of the device store and the wipe, on real files and real SQLCipher.

Argon2id runs with cheap parameters here (``CHEAP``) except where the production
defaults themselves are the subject.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import tempfile
import unicodedata
from pathlib import Path

import pytest
from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.client import LocalStore
from strongroom.client._passcode import (
    DEFAULT_KDF,
    TEST_KDF_ENV,
    KdfParams,
    WrappedKey,
    change_passcode,
    decode_key_file,
    encode_key_file,
    kdf_params,
    protect_home,
    remove_passcode,
    unwrap_secret,
    wrap_secret,
)
from strongroom.client._wipe import wipe_home, wiped
from strongroom.errors import (
    ClientError,
    ConfigError,
    DecryptionError,
    DeviceWipedError,
    NotActivatedError,
    PasscodeRequiredError,
    WrongPasscodeError,
)

CHEAP = KdfParams(time_cost=1, memory_kib=8, parallelism=1)
PASSCODE = "correct horse"
MARKER = "marker-5f1d7c2a9e3b"


def _device(home: Path, passcode: str | None = None, max_tries: int = 10) -> bytes:
    """An 'activated' store holding ``MARKER``.  Returns the store secret when the store
    is unprotected (read from its hex key file), else nothing."""
    store = LocalStore.create(home, passcode, max_tries=max_tries, kdf=CHEAP)
    with store.transaction():
        store.set_meta("device_id", b"DEVICE")
        store.set_meta("note", MARKER.encode())
    store.close()
    key = (home / "device.key").read_bytes()
    return b"" if passcode else bytes.fromhex(key.decode())


def _everything(home: Path) -> bytes:
    """The bytes of every file left in ``home``, to grep."""
    return b"".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())


def _note(home: Path, passcode: str | None = None) -> bytes | None:
    store = LocalStore.open(home, passcode)
    try:
        return store.get_meta("note")
    finally:
        store.close()


# --- the composition ------------------------------------------------------------------------


SECRET = bytes(range(32))
SALT = bytes(range(100, 116))
NONCE = bytes(range(200, 212))


@pytest.mark.parametrize(
    ("params", "sealed"),
    [
        (
            CHEAP,
            "f3a7c7a1ee71fd23b081c496953002caadce7e84edcb46b0591992506db373e7"
            "6a574a5214e2fc225bcc5737a18dd62e",
        ),
        (
            DEFAULT_KDF,
            "401cf1bb4b9dfd1a13d0b90cd63c10a374186d6dbcd30d56c543ed5d07874939"
            "94f73607544eca8c96cef9970b393629",
        ),
    ],
)
def test_key_wrap_known_answer(params: KdfParams, sealed: str) -> None:
    """Argon2id + AES-256-GCM key wrap: a pinned vector, and the same bytes rebuilt
    from the documented layout with the primitives alone."""
    wrapped = wrap_secret(
        SECRET, PASSCODE, params=params, max_tries=10, salt=SALT, nonce=NONCE
    )
    assert wrapped.sealed.hex() == sealed
    kek = hash_secret_raw(
        PASSCODE.encode(),
        SALT,
        time_cost=params.time_cost,
        memory_cost=params.memory_kib,
        parallelism=params.parallelism,
        hash_len=32,
        type=Type.ID,
    )
    header = (
        b"strongroom/v1/device-key/argon2id+aes-256-gcm\x00"
        + struct.pack(
            ">IIIII", 1, params.time_cost, params.memory_kib, params.parallelism, 10
        )
        + SALT
    )
    assert AESGCM(kek).encrypt(NONCE, SECRET, header).hex() == sealed
    assert unwrap_secret(wrapped, PASSCODE) == SECRET
    with pytest.raises(DecryptionError):
        unwrap_secret(wrapped, PASSCODE + "!")
    document = json.loads(encode_key_file(wrapped))
    assert document["format"] == "strongroom-device-key" and document["version"] == 1
    assert base64.b64decode(document["sealed"]).hex() == sealed
    assert decode_key_file(encode_key_file(wrapped)) == wrapped


def test_production_parameters_are_strong_and_tests_may_lower_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert (DEFAULT_KDF.time_cost, DEFAULT_KDF.memory_kib) == (3, 64 * 1024)
    assert DEFAULT_KDF.parallelism == 1
    monkeypatch.delenv(TEST_KDF_ENV, raising=False)
    assert kdf_params() == DEFAULT_KDF
    monkeypatch.setenv(TEST_KDF_ENV, "1,8,1")
    assert kdf_params() == CHEAP
    for bad in ("1,8", "x,8,1", "0,8,1", "1,4,1", "1,8,0"):
        monkeypatch.setenv(TEST_KDF_ENV, bad)
        with pytest.raises(ConfigError, match=TEST_KDF_ENV):
            kdf_params()


def test_the_passcode_is_compared_as_normalised_text() -> None:
    composed = unicodedata.normalize("NFC", "café-passcode")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    wrapped = wrap_secret(
        SECRET, composed, params=CHEAP, max_tries=3, salt=SALT, nonce=NONCE
    )
    assert unwrap_secret(wrapped, decomposed) == SECRET


# --- the key file: any bytes give a secret, a wrapped key or ConfigError ---------------------

_VALID = json.loads(
    encode_key_file(
        wrap_secret(SECRET, PASSCODE, params=CHEAP, max_tries=3, salt=SALT, nonce=NONCE)
    )
)
_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=80)
    | st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def _near_documents(draw: st.DrawFn) -> bytes:
    """A valid key document with one field replaced, dropped or added."""
    document = dict(_VALID)
    field = draw(st.sampled_from([*document, "extra"]))
    if draw(st.booleans()) and field in document:
        del document[field]
    else:
        document[field] = draw(_JSON_VALUES)
    return json.dumps(document).encode()


_KEY_FILES = (
    st.binary(max_size=300)
    | st.text(alphabet="0123456789abcdefABCDEF \n", max_size=80).map(str.encode)
    | _near_documents()
)


@settings(max_examples=400, deadline=None)
@given(_KEY_FILES)
def test_any_bytes_in_the_key_file_decode_or_give_config_error(data: bytes) -> None:
    try:
        key = decode_key_file(data)
    except ConfigError:
        return
    assert (isinstance(key, bytes) and len(key) == 32) or isinstance(key, WrappedKey)


@settings(max_examples=40, deadline=None)
@given(_KEY_FILES)
def test_any_bytes_in_a_real_key_file_give_a_clear_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        home = Path(directory) / "home"
        _device(home)
        (home / "device.key").write_bytes(data)
        try:
            _note(home, PASSCODE)
        except (ConfigError, WrongPasscodeError) as exc:
            assert str(exc)


# --- opening a home -----------------------------------------------------------------------


def test_an_unprotected_home_keeps_the_hex_key_file(tmp_path: Path) -> None:
    secret = _device(tmp_path / "home")
    key_file = (tmp_path / "home" / "device.key").read_text()
    assert key_file == secret.hex() + "\n"
    assert _note(tmp_path / "home") == MARKER.encode()
    assert _note(tmp_path / "home", "any passcode is ignored") == MARKER.encode()
    store = LocalStore.open(tmp_path / "home")
    assert store.protected is False
    store.close()
    assert not (tmp_path / "home" / "passcode.tries").exists()


def test_a_protected_store_opens_only_with_its_passcode(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _device(home, PASSCODE)
    with pytest.raises(PasscodeRequiredError, match="passcode"):
        LocalStore.open(home)
    store = LocalStore.open(home, PASSCODE)
    assert store.protected is True
    assert store.get_meta("note") == MARKER.encode()
    store.close()
    on_disk = _everything(home)
    assert PASSCODE.encode() not in on_disk
    assert MARKER.encode() not in on_disk
    assert (home / "device.key").stat().st_mode & 0o777 == 0o600
    assert (home / "passcode.tries").stat().st_mode & 0o777 == 0o600


def test_protecting_a_home_keeps_its_data_and_overwrites_the_hex_key(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    secret = _device(home)
    protect_home(home, PASSCODE, max_tries=5, params=CHEAP)
    on_disk = _everything(home)
    assert secret.hex().encode() not in on_disk and secret not in on_disk
    assert PASSCODE.encode() not in on_disk
    assert _note(home, PASSCODE) == MARKER.encode()
    with pytest.raises(ClientError, match="already has a passcode"):
        protect_home(home, "another passcode", params=CHEAP)


def test_wrong_passcodes_are_counted_and_a_right_one_resets_the_count(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    _device(home, PASSCODE, max_tries=3)
    with pytest.raises(WrongPasscodeError, match="2 tries left") as first:
        _note(home, "wrong")
    assert first.value.tries_left == 2
    with pytest.raises(WrongPasscodeError, match="1 try left") as second:
        _note(home, "wrong again")
    assert second.value.tries_left == 1
    assert _note(home, PASSCODE) == MARKER.encode()
    with pytest.raises(WrongPasscodeError) as third:
        _note(home, "wrong")
    assert third.value.tries_left == 2


def test_a_changed_header_makes_the_right_passcode_fail(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _device(home, PASSCODE, max_tries=3)
    document = json.loads((home / "device.key").read_bytes())
    document["max_tries"] = 1000
    (home / "device.key").write_text(json.dumps(document))
    with pytest.raises(WrongPasscodeError):
        _note(home, PASSCODE)


def test_too_many_wrong_passcodes_wipe_the_device(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _device(home, PASSCODE, max_tries=3)
    for leftover in (".abcdefghijklmnopqrstuvwxyz.part", "account.pickle"):
        (home / leftover).write_bytes(MARKER.encode())
    (home / "notes.txt").write_text("a person's own file")
    for _ in range(2):
        with pytest.raises(WrongPasscodeError):
            _note(home, "wrong")
    with pytest.raises(DeviceWipedError, match="wiped") as wiping:
        _note(home, "wrong")
    assert wiping.value.reason == "too many wrong passcodes"
    assert str(wiping.value).startswith("wrong passcode: this device was wiped")
    assert sorted(p.name for p in home.iterdir()) == ["WIPED", "notes.txt"]
    assert MARKER.encode() not in _everything(home)

    record = wiped(home)
    assert record is not None and record.reason == "too many wrong passcodes"
    with pytest.raises(DeviceWipedError) as later:
        _note(home, PASSCODE)
    assert str(later.value) == record.sentence()
    assert "activate it again with a new code from IT" in str(later.value)
    with pytest.raises(DeviceWipedError):
        protect_home(home, PASSCODE, params=CHEAP)

    _device(home)  # activating again in the same home starts afresh
    assert wiped(home) is None and _note(home) == MARKER.encode()


def test_a_remote_wipe_uses_the_same_function(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _device(home)
    wipe_home(home, "wipe order from IT", at_ms=1_700_000_000_000)
    wipe_home(home, "wipe order from IT", at_ms=1_700_000_000_000)  # idempotent
    assert not (home / "device.key").exists() and not (home / "device.db").exists()
    with pytest.raises(DeviceWipedError) as refused:
        _note(home)
    assert str(refused.value) == (
        "this device was wiped (wipe order from IT) at 2023-11-14 22:13:20 UTC; "
        "activate it again with a new code from IT"
    )
    assert refused.value.at_ms == 1_700_000_000_000


def test_a_wipe_cut_short_is_finished_by_the_next_open(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _device(home)
    other = tmp_path / "other"
    _device(other)
    wipe_home(other, "wipe order from IT", at_ms=1_700_000_000_000)
    # the marker made it to disk, the deletion did not
    os.replace(other / "WIPED", home / "WIPED")
    with pytest.raises(DeviceWipedError):
        _note(home)
    assert not (home / "device.key").exists() and not (home / "device.db").exists()


def test_a_damaged_wipe_record_still_means_wiped(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _device(home)
    (home / "WIPED").write_bytes(b"\xff not json")
    with pytest.raises(DeviceWipedError, match="reason unknown"):
        _note(home)


def test_change_and_remove_the_passcode(tmp_path: Path) -> None:
    home = tmp_path / "home"
    secret = _device(home)
    protect_home(home, PASSCODE, max_tries=4, params=CHEAP)
    with pytest.raises(WrongPasscodeError) as wrong:
        change_passcode(home, "not it", "new passcode", params=CHEAP)
    assert wrong.value.tries_left == 3
    with pytest.raises(ClientError, match="at least 6"):
        change_passcode(home, PASSCODE, "short", params=CHEAP)
    change_passcode(home, PASSCODE, "new passcode", params=CHEAP)
    with pytest.raises(WrongPasscodeError) as old:
        _note(home, PASSCODE)
    assert old.value.tries_left == 3  # max_tries kept; the success reset the count
    assert _note(home, "new passcode") == MARKER.encode()
    change_passcode(home, "new passcode", "newer passcode", max_tries=2, params=CHEAP)
    assert json.loads((home / "device.key").read_bytes())["max_tries"] == 2

    with pytest.raises(WrongPasscodeError):
        remove_passcode(home, "not it")
    remove_passcode(home, "newer passcode")
    assert (home / "device.key").read_text() == secret.hex() + "\n"
    assert not (home / "passcode.tries").exists()
    assert _note(home) == MARKER.encode()
    with pytest.raises(ClientError, match="no passcode to remove"):
        remove_passcode(home, "newer passcode")
    with pytest.raises(ClientError, match="no passcode to change"):
        change_passcode(home, "newer passcode", "another one", params=CHEAP)
    assert not (home / "passcode.tries").exists()


def test_a_too_short_passcode_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    with pytest.raises(ClientError, match="at least 8 characters"):
        LocalStore.create(tmp_path / "home", "1234567", min_length=8, kdf=CHEAP)
    assert not (tmp_path / "home").exists()
    with pytest.raises(ClientError, match="at least 1 character"):
        LocalStore.create(tmp_path / "home", "", min_length=0, kdf=CHEAP)
    _device(tmp_path / "home")
    with pytest.raises(ClientError, match="at least 12"):
        protect_home(tmp_path / "home", "short one", min_length=12, params=CHEAP)
    assert _note(tmp_path / "home") == MARKER.encode()


def test_a_home_without_a_device_says_so(tmp_path: Path) -> None:
    with pytest.raises(NotActivatedError):
        LocalStore.open(tmp_path / "nothing", PASSCODE)
    with pytest.raises(NotActivatedError):
        protect_home(tmp_path / "nothing", PASSCODE, params=CHEAP)
    assert not (tmp_path / "nothing").exists()
