"""Passcode protection of the device store: the store secret wrapped under Argon2id.

Rules:

1. The store secret (32 random bytes: the SQLCipher key, and the root of the pickle key)
   never changes when a passcode is set, changed or removed; only its wrapping does.  So
   the database is never re-encrypted, and a copy of an unprotected ``device.key`` taken
   before a passcode was set keeps opening the store (docs/security.md says so).
2. ``device.key`` holds either the secret as 64 hex digits and a newline (an unprotected
   store, exactly as the first release wrote it) or a JSON document, ``WrappedKey``::

       {"format": "strongroom-device-key", "version": 1, "kdf": "argon2id",
        "time_cost": 3, "memory_kib": 65536, "parallelism": 1, "max_tries": 10,
        "salt": <16 bytes, base64>, "nonce": <12 bytes>, "sealed": <48 bytes>}

   ``sealed`` = AES-256-GCM(key = Argon2id(passcode, salt, time_cost, memory, lanes),
   nonce, secret, associated data = ``_header``), and ``_header`` is the domain string,
   the version, the Argon2id parameters, ``max_tries`` and the salt in fixed-width
   big-endian form.  A header changed on disk therefore makes the right passcode fail,
   exactly as a wrong one does: nobody can quietly raise ``max_tries`` or weaken the KDF
   and still have the file open.
3. Whatever ``device.key`` holds, reading it gives a secret, a ``WrappedKey`` or a
   ``ConfigError``; never another exception (``decode_key_file``, fuzzed in the tests).
   KDF parameters are bounded on reading, so that a damaged file cannot make the device
   allocate gigabytes or spin for minutes.
4. Wrong passcodes are counted in ``passcode.tries`` (0600) beside the store.  A try is
   counted, and synced, *before* the KDF runs and cleared only after the passcode opened
   the key, so killing the process mid-way never gives a free guess; an exclusive lock on
   that file serialises tries between processes.  When the count reaches ``max_tries``
   the device wipes itself (``_wipe.wipe_home``).
5. The counter stops a person at the keyboard, not someone with the disk: whoever can
   copy or write the home can reset the counter, or guess offline against a copy of
   ``device.key``.  Against them the defence is Argon2id's cost (``DEFAULT_KDF``, about a
   quarter of a second and 64 MiB per guess) and the passcode's length.
6. A passcode is compared as text: NFC-normalised and UTF-8 encoded, so that the same
   characters typed through different input methods give the same key.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import struct
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec
from argon2.exceptions import HashingError
from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from strongroom.errors import (
    ClientError,
    ConfigError,
    DecryptionError,
    DeviceWipedError,
    NotActivatedError,
    PasscodeRequiredError,
    WrongPasscodeError,
)

from ._wipe import (
    KEY_FILE,
    TRIES_FILE,
    raise_if_wiped,
    replace_file,
    wipe_home,
    wiped,
)

__all__ = [
    "DEFAULT_KDF",
    "DEFAULT_MAX_TRIES",
    "DEFAULT_MIN_LENGTH",
    "TEST_KDF_ENV",
    "TOO_MANY_TRIES",
    "KdfParams",
    "WrappedKey",
    "change_passcode",
    "decode_key_file",
    "encode_key_file",
    "is_protected",
    "kdf_params",
    "new_key_file",
    "open_secret",
    "protect_home",
    "read_key_file",
    "remove_passcode",
    "unwrap_secret",
    "wrap_secret",
]

SECRET_SIZE = 32
SALT_SIZE = 16
NONCE_SIZE = 12
FORMAT: Final = "strongroom-device-key"
VERSION: Final = 1
DEFAULT_MAX_TRIES = 10
DEFAULT_MIN_LENGTH = 6
TOO_MANY_TRIES = "too many wrong passcodes"
#: Cheaper Argon2id parameters for test suites only, as ``time_cost,memory_kib,lanes``.
TEST_KDF_ENV = "STRONGROOM_TEST_PASSCODE_KDF"

_DOMAIN = b"strongroom/v1/device-key/argon2id+aes-256-gcm\x00"
# Bounds on reading (rule 3): far above any sensible setting, far below a denial of service.
_MAX_TIME_COST = 64
_MAX_MEMORY_KIB = 1024 * 1024  # 1 GiB
_MAX_LANES = 16
_MAX_TRIES = 1000


class KdfParams(msgspec.Struct, frozen=True):
    """Argon2id cost: passes over memory, memory in KiB, lanes (parallelism)."""

    time_cost: int
    memory_kib: int
    parallelism: int


#: RFC 9106's second recommended option (t=3, 64 MiB, p=1 lane per guess): about a
#: quarter of a second on one core of a current laptop.
DEFAULT_KDF = KdfParams(time_cost=3, memory_kib=64 * 1024, parallelism=1)


class _Format(msgspec.Struct, frozen=True):
    format: str
    version: int


class WrappedKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``device.key`` of a protected store (rule 2)."""

    format: Literal["strongroom-device-key"]
    version: Literal[1]
    kdf: Literal["argon2id"]
    time_cost: Annotated[int, msgspec.Meta(ge=1, le=_MAX_TIME_COST)]
    memory_kib: Annotated[int, msgspec.Meta(ge=8, le=_MAX_MEMORY_KIB)]
    parallelism: Annotated[int, msgspec.Meta(ge=1, le=_MAX_LANES)]
    max_tries: Annotated[int, msgspec.Meta(ge=1, le=_MAX_TRIES)]
    salt: Annotated[bytes, msgspec.Meta(min_length=SALT_SIZE, max_length=SALT_SIZE)]
    nonce: Annotated[bytes, msgspec.Meta(min_length=NONCE_SIZE, max_length=NONCE_SIZE)]
    sealed: Annotated[
        bytes, msgspec.Meta(min_length=SECRET_SIZE + 16, max_length=SECRET_SIZE + 16)
    ]

    @property
    def params(self) -> KdfParams:
        return KdfParams(self.time_cost, self.memory_kib, self.parallelism)


# --- the composition (pure) --------------------------------------------------------------


def _header(
    params: KdfParams, max_tries: int, salt: bytes, version: int = VERSION
) -> bytes:
    fixed = struct.pack(
        ">IIIII",
        version,
        params.time_cost,
        params.memory_kib,
        params.parallelism,
        max_tries,
    )
    return _DOMAIN + fixed + salt


def _passcode_bytes(passcode: str) -> bytes:
    try:
        return unicodedata.normalize("NFC", passcode).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ClientError("the passcode holds characters that cannot be used") from exc


def _derive(passcode: str, salt: bytes, params: KdfParams) -> bytes:
    try:
        return hash_secret_raw(
            _passcode_bytes(passcode),
            salt,
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            hash_len=32,
            type=Type.ID,
        )
    except HashingError as exc:
        raise ConfigError(f"Argon2id refused its parameters: {exc}") from exc


def wrap_secret(
    secret: bytes,
    passcode: str,
    *,
    params: KdfParams,
    max_tries: int,
    salt: bytes,
    nonce: bytes,
) -> WrappedKey:
    """Seal ``secret`` under ``passcode`` (rule 2).  Pure: salt and nonce are given, so
    that the composition has known-answer vectors; callers pass fresh random ones."""
    if len(secret) != SECRET_SIZE or len(salt) != SALT_SIZE or len(nonce) != NONCE_SIZE:
        raise ValueError("secret, salt or nonce has the wrong size")
    kek = _derive(passcode, salt, params)
    sealed = AESGCM(kek).encrypt(nonce, secret, _header(params, max_tries, salt))
    return WrappedKey(
        format=FORMAT,
        version=VERSION,
        kdf="argon2id",
        time_cost=params.time_cost,
        memory_kib=params.memory_kib,
        parallelism=params.parallelism,
        max_tries=max_tries,
        salt=salt,
        nonce=nonce,
        sealed=sealed,
    )


def unwrap_secret(wrapped: WrappedKey, passcode: str) -> bytes:
    """The store secret.  Raises ``DecryptionError`` when the passcode is wrong or the
    document was altered (the two cannot be told apart, on purpose)."""
    kek = _derive(passcode, wrapped.salt, wrapped.params)
    header = _header(wrapped.params, wrapped.max_tries, wrapped.salt, wrapped.version)
    try:
        return AESGCM(kek).decrypt(wrapped.nonce, wrapped.sealed, header)
    except InvalidTag as exc:
        raise DecryptionError("the passcode does not open this device's key") from exc


def encode_key_file(wrapped: WrappedKey) -> bytes:
    return msgspec.json.encode(wrapped) + b"\n"


def decode_key_file(data: bytes, where: str = KEY_FILE) -> bytes | WrappedKey:
    """What ``device.key`` holds: the secret (unprotected) or a ``WrappedKey``.

    Raises ``ConfigError`` for anything else (rule 3).
    """
    text = data.strip()
    if text.startswith(b"{"):
        try:
            head = msgspec.json.decode(text, type=_Format)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ConfigError(f"{where} is damaged: {exc}") from exc
        if head.format != FORMAT:
            raise ConfigError(f"{where} is not a Strongroom device key")
        if head.version > VERSION:
            raise ConfigError(
                f"{where} was written by a newer Strongroom (key format "
                f"{head.version}); upgrade the app"
            )
        try:
            wrapped = msgspec.json.decode(text, type=WrappedKey)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ConfigError(f"{where} is damaged: {exc}") from exc
        if wrapped.memory_kib < 8 * wrapped.parallelism:
            raise ConfigError(f"{where} is damaged: too little memory for its lanes")
        return wrapped
    try:
        secret = bytes.fromhex(text.decode("ascii"))
    except ValueError as exc:  # UnicodeDecodeError is a ValueError
        raise ConfigError(f"{where} is damaged") from exc
    if len(secret) != SECRET_SIZE:
        raise ConfigError(f"{where} is damaged: the key has the wrong length")
    return secret


# --- the device home ----------------------------------------------------------------------


def kdf_params() -> KdfParams:
    """``DEFAULT_KDF``, unless a test suite set ``STRONGROOM_TEST_PASSCODE_KDF``.

    Raises ``ConfigError`` when that variable is malformed.
    """
    value = os.environ.get(TEST_KDF_ENV)
    if not value:
        return DEFAULT_KDF
    try:
        t, m, p = (int(part) for part in value.split(","))
    except ValueError as exc:
        raise ConfigError(
            f"{TEST_KDF_ENV} must be time_cost,memory_kib,lanes (like 1,8,1)"
        ) from exc
    if not (1 <= t <= _MAX_TIME_COST and 1 <= p <= _MAX_LANES):
        raise ConfigError(f"{TEST_KDF_ENV} is out of range")
    if not 8 * p <= m <= _MAX_MEMORY_KIB:
        raise ConfigError(f"{TEST_KDF_ENV} is out of range")
    return KdfParams(t, m, p)


def read_key_file(home: Path) -> bytes | WrappedKey:
    """Read ``home``'s key file.  Raises ``NotActivatedError`` if there is none and
    ``ConfigError`` if it is damaged."""
    path = home / KEY_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise NotActivatedError(
            f"no activated device in {home}: run `strongroom device activate` first"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror}") from exc
    return decode_key_file(data, str(path))


def is_protected(home: Path) -> bool:
    """Whether ``home``'s store needs a passcode.  Raises ``ConfigError`` if the key file
    is damaged; a home without one is not protected."""
    try:
        return isinstance(read_key_file(home), WrappedKey)
    except NotActivatedError:
        return False


def new_key_file(
    secret: bytes,
    passcode: str | None,
    *,
    min_length: int = DEFAULT_MIN_LENGTH,
    max_tries: int = DEFAULT_MAX_TRIES,
    params: KdfParams | None = None,
) -> bytes:
    """The contents of a new key file for ``secret``: hex without a passcode, else a
    ``WrappedKey``.  Raises ``ClientError`` if the passcode is too short."""
    if passcode is None:
        return secret.hex().encode() + b"\n"
    _check_new(passcode, min_length, max_tries)
    wrapped = wrap_secret(
        secret,
        passcode,
        params=params or kdf_params(),
        max_tries=max_tries,
        salt=secrets.token_bytes(SALT_SIZE),
        nonce=secrets.token_bytes(NONCE_SIZE),
    )
    return encode_key_file(wrapped)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def open_secret(
    home: Path, passcode: str | None, *, clock: Callable[[], int] = _wall_ms
) -> bytes:
    """The store secret of ``home``; ``passcode`` is ignored for an unprotected store.

    Raises ``DeviceWipedError`` (wiped before, or by this very try), ``PasscodeRequiredError``,
    ``WrongPasscodeError`` (with ``tries_left``), ``NotActivatedError`` and ``ConfigError``.
    """
    raise_if_wiped(home)
    key = read_key_file(home)
    if isinstance(key, bytes):
        return key  # the secret never changes (rule 1), so no lock is needed
    if passcode is None:
        raise PasscodeRequiredError(
            "this device is protected by a passcode: give it to open the device"
        )
    with _tries(home) as tries:
        return _unlock(home, tries, passcode, clock)


def protect_home(
    home: Path,
    passcode: str,
    *,
    min_length: int = DEFAULT_MIN_LENGTH,
    max_tries: int = DEFAULT_MAX_TRIES,
    params: KdfParams | None = None,
) -> None:
    """Protect ``home``'s unprotected store with ``passcode``.

    Raises ``ClientError`` (passcode shorter than ``min_length``, or the store already
    has a passcode), ``DeviceWipedError``, ``NotActivatedError``, ``ConfigError``.
    """
    _check_new(passcode, min_length, max_tries)
    refusal = "this device already has a passcode: change it with the current one"
    with _locked(home, False, refusal) as (tries, key):
        assert isinstance(key, bytes)
        _rewrite(home, key, passcode, max_tries, params)
        tries.write(0)


def change_passcode(
    home: Path,
    old: str,
    new: str,
    *,
    min_length: int = DEFAULT_MIN_LENGTH,
    max_tries: int | None = None,
    params: KdfParams | None = None,
    clock: Callable[[], int] = _wall_ms,
) -> None:
    """Replace the passcode of ``home``'s protected store; ``max_tries`` stays unless
    given, the KDF parameters become ``params`` (default: ``kdf_params()``).

    ``old`` is checked like any try: a wrong one is counted and can wipe the device.
    Raises ``ClientError`` (new passcode too short, or no passcode set), and what
    ``open_secret`` raises.
    """
    _check_new(new, min_length, 1 if max_tries is None else max_tries)
    refusal = "this device has no passcode to change: set one instead"
    with _locked(home, True, refusal) as (tries, key):
        assert isinstance(key, WrappedKey)
        secret = _unlock(home, tries, old, clock)
        tries_allowed = key.max_tries if max_tries is None else max_tries
        _rewrite(home, secret, new, tries_allowed, params)


def remove_passcode(
    home: Path, passcode: str, *, clock: Callable[[], int] = _wall_ms
) -> None:
    """Take the passcode off ``home``'s store (whether policy allows that is the
    caller's call).  ``passcode`` is checked like any try.

    Raises ``ClientError`` (no passcode set) and what ``open_secret`` raises.
    """
    with _locked(home, True, "this device has no passcode to remove") as (tries, _):
        secret = _unlock(home, tries, passcode, clock)
        replace_file(home / KEY_FILE, new_key_file(secret, None), shred_old=True)
        (home / TRIES_FILE).unlink(missing_ok=True)


# --- internals ------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(
    home: Path, protected: bool, refusal: str
) -> Iterator[tuple[_Tries, bytes | WrappedKey]]:
    """The counter, locked, and the key file read under the lock, provided the store is
    (or is not) ``protected``; else ``ClientError(refusal)``.  Checked before the lock
    too, so that a refusal or a missing device leaves no counter file behind."""
    raise_if_wiped(home)
    if isinstance(read_key_file(home), WrappedKey) != protected:
        raise ClientError(refusal)
    with _tries(home) as tries:
        key = read_key_file(home)
        if isinstance(key, WrappedKey) != protected:
            raise ClientError(refusal)
        yield tries, key


def _check_new(passcode: str, min_length: int, max_tries: int) -> None:
    length = len(unicodedata.normalize("NFC", passcode))
    needed = max(min_length, 1)
    if length < needed:
        raise ClientError(
            f"a passcode needs at least {needed} "
            f"{'character' if needed == 1 else 'characters'}"
        )
    _passcode_bytes(passcode)
    if not 1 <= max_tries <= _MAX_TRIES:
        raise ClientError(f"the number of tries must be between 1 and {_MAX_TRIES}")


def _rewrite(
    home: Path,
    secret: bytes,
    passcode: str,
    max_tries: int,
    params: KdfParams | None,
) -> None:
    data = new_key_file(
        secret, passcode, min_length=1, max_tries=max_tries, params=params
    )
    replace_file(home / KEY_FILE, data, shred_old=True)


def _unlock(
    home: Path, tries: _Tries, passcode: str, clock: Callable[[], int]
) -> bytes:
    """Try ``passcode`` against the key file with the counter locked (rule 4)."""
    key = read_key_file(home)  # again, under the lock: it may have changed meanwhile
    if isinstance(key, bytes):
        return key
    failed = tries.read()
    if failed < key.max_tries:
        tries.write(failed + 1)
        try:
            secret = unwrap_secret(key, passcode)
        except DecryptionError:
            failed += 1
        else:
            tries.write(0)
            return secret
    left = key.max_tries - failed
    if left > 0:
        raise WrongPasscodeError(
            f"wrong passcode: {left} {'try' if left == 1 else 'tries'} left "
            "before this device wipes itself",
            left,
        )
    wipe_home(home, TOO_MANY_TRIES, clock())
    record = wiped(home)
    assert record is not None
    raise DeviceWipedError(
        f"wrong passcode: {record.sentence()}", record.reason, record.at_ms
    )


class _Tries:
    """The wrong-passcode counter, open and exclusively locked."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def read(self) -> int:
        data = os.pread(self._fd, 32, 0)
        try:
            return max(int(data.decode("ascii").strip() or "0"), 0)
        except ValueError:
            return 0  # a damaged counter restarts (rule 5: it is no defence against disk access)

    def write(self, count: int) -> None:
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{count}\n".encode(), 0)
        os.fsync(self._fd)


@contextlib.contextmanager
def _tries(home: Path) -> Iterator[_Tries]:
    fd = os.open(home / TRIES_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield _Tries(fd)
    finally:
        os.close(fd)
