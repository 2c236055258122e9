"""Lawful-access escrow: threshold ElGamal-style key agreement over ristretto255.

Composed from libsodium's ristretto255 group and scalar operations (rbcl) and the
``cryptography`` package's HKDF and AES-256-GCM; nothing here is a new primitive.

- Ceremony: a secret scalar s, S = s·B; Shamir shares s_i = f(i) of a random polynomial
  f of degree k-1 with f(0) = s; Feldman commitments C_j = a_j·B let custodian i check
  s_i·B = Σ_j C_j·i^j without learning anything else.
- Scope: h = H(domain ‖ org ‖ conversation ‖ day) reduced mod L; the scope key is
  P = h·S, computable by anyone from public data.
- Sealing: a device picks e per scope, publishes E = e·B once and seals each message of
  that scope under K = HKDF(e·P ‖ E ‖ scope) with AES-256-GCM.
- Release: custodian i returns D_i = s_i·(h·E) with a Chaum-Pedersen proof that
  log_B(Y_i) = log_{hE}(D_i), where Y_i = s_i·B comes from the commitments; k valid
  partials combine by Lagrange interpolation at 0 into s·h·E = e·P, hence K for that
  (scope, E) and no other.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from typing import cast

import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from strongroom.errors import CryptoError

__all__ = [
    "Ceremony",
    "Partial",
    "Share",
    "check_share",
    "combine",
    "copy_aad",
    "key_for",
    "make_partial",
    "new_ceremony",
    "new_ephemeral",
    "open_copy",
    "scope_point",
    "scope_scalar",
    "seal_copy",
    "share_public",
    "verify_partial",
]


def _typed(name: str) -> Callable[..., bytes]:
    """libsodium's function ``name``, loaded on first use (most processes never need
    escrow)."""

    def call(*args: bytes) -> bytes:
        import rbcl  # type: ignore[import-untyped]

        return cast(bytes, getattr(rbcl, name)(*args))

    return call


_add = _typed("crypto_core_ristretto255_add")
_is_valid_point = _typed("crypto_core_ristretto255_is_valid_point")
_scalar_add = _typed("crypto_core_ristretto255_scalar_add")
_scalar_invert = _typed("crypto_core_ristretto255_scalar_invert")
_scalar_mul = _typed("crypto_core_ristretto255_scalar_mul")
_scalar_negate = _typed("crypto_core_ristretto255_scalar_negate")
_scalar_random = _typed("crypto_core_ristretto255_scalar_random")
_scalar_reduce = _typed("crypto_core_ristretto255_scalar_reduce")
_scalar_sub = _typed("crypto_core_ristretto255_scalar_sub")
_smul = _typed("crypto_scalarmult_ristretto255")
_smul_base = _typed("crypto_scalarmult_ristretto255_base")

DOMAIN_SCOPE = b"strongroom/v1/escrow-scope"
DOMAIN_PROOF = b"strongroom/v1/escrow-dleq"
DOMAIN_KEY = b"strongroom/v1/escrow-key"
MAX_CUSTODIANS = 32

_B = _smul_base


def _scalar(n: int) -> bytes:
    """A small non-negative integer as a scalar (little-endian, reduced)."""
    return _scalar_reduce(n.to_bytes(64, "little"))


def _hash_scalar(*parts: bytes) -> bytes:
    digest = hashlib.sha512()
    for part in parts:
        digest.update(len(part).to_bytes(4, "big") + part)
    return _scalar_reduce(digest.digest())


def _mul(scalar: bytes, point: bytes) -> bytes:
    try:
        return _smul(scalar, point)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise CryptoError("not a valid ristretto255 point or scalar") from exc


def _valid_point(point: bytes) -> bool:
    return len(point) == 32 and bool(_is_valid_point(point))


class Share(msgspec.Struct, frozen=True):
    """Custodian ``index``'s share (secret: only ever in the custodian's sealed file)."""

    index: int
    value: bytes


class Ceremony(msgspec.Struct, frozen=True):
    """What a ceremony hands out: the public key, the commitments, one share each."""

    public: bytes  # S = s·B
    commitments: list[bytes]  # C_0 = S, C_1 .. C_{k-1}
    shares: list[Share]


def new_ceremony(custodians: int, threshold: int) -> Ceremony:
    """Split a fresh secret k-of-n.  The secret exists only inside this call."""
    if not 1 <= threshold <= custodians <= MAX_CUSTODIANS:
        raise CryptoError(
            f"need 1 <= threshold <= custodians <= {MAX_CUSTODIANS} "
            f"(got {threshold} of {custodians})"
        )
    coefficients = [_scalar_random() for _ in range(threshold)]
    commitments = [_B(a) for a in coefficients]
    shares = []
    for i in range(1, custodians + 1):
        x = _scalar(i)
        value = _scalar(0)
        for a in reversed(coefficients):  # Horner: f(i)
            value = _scalar_add(_scalar_mul(value, x), a)
        shares.append(Share(i, value))
    return Ceremony(commitments[0], commitments, shares)


def share_public(commitments: Sequence[bytes], index: int) -> bytes:
    """Y_i = Σ_j C_j·i^j: what s_i·B must be (Feldman)."""
    if not commitments or not all(_valid_point(c) for c in commitments):
        raise CryptoError("the escrow commitments are not valid points")
    x = _scalar(index)
    power = _scalar(1)
    total: bytes | None = None
    for c in commitments:
        term = _mul(power, c)
        total = term if total is None else _add(total, term)
        power = _scalar_mul(power, x)
    assert total is not None
    return total


def check_share(share: Share, commitments: Sequence[bytes]) -> bool:
    """Whether the share is the one the commitments promise for its index."""
    if not 1 <= share.index <= MAX_CUSTODIANS or len(share.value) != 32:
        return False
    try:
        return _B(share.value) == share_public(commitments, share.index)
    except (CryptoError, RuntimeError, ValueError, TypeError):
        return False


def scope_scalar(org: str, conversation: str, day: str) -> bytes:
    """h for one conversation-day (``day`` is the UTC date, ``YYYY-MM-DD``)."""
    return _hash_scalar(DOMAIN_SCOPE, org.encode(), conversation.encode(), day.encode())


def scope_point(escrow_public: bytes, h: bytes) -> bytes:
    """P = h·S: the scope's public key."""
    if not _valid_point(escrow_public):
        raise CryptoError("the escrow public key is not a valid point")
    return _mul(h, escrow_public)


def _key(shared: bytes, ephemeral: bytes, scope: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=DOMAIN_KEY + scope).derive(
        shared + ephemeral
    )


def new_ephemeral(escrow_public: bytes, h: bytes) -> tuple[bytes, bytes, bytes]:
    """(e, E, K) for a device's first message in a scope; keep e or K, publish E."""
    e = _scalar_random()
    ephemeral = _B(e)
    shared = _mul(e, scope_point(escrow_public, h))
    return e, ephemeral, _key(shared, ephemeral, h)


def copy_aad(sender_device: str, message_id: bytes) -> bytes:
    """What a sealed copy is bound to: the sending device and the message id."""
    return (
        b"strongroom/v1/escrow-copy\x00" + sender_device.encode() + b"\x00" + message_id
    )


def seal_copy(key: bytes, aad: bytes, plaintext: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_copy(key: bytes, aad: bytes, sealed: bytes) -> bytes:
    """Raises ``CryptoError`` if the key is not the scope's or the copy was altered."""
    try:
        return AESGCM(key).decrypt(sealed[:12], sealed[12:], aad)
    except Exception as exc:  # InvalidTag, short input
        raise CryptoError("the escrowed copy does not open with this key") from exc


class Partial(msgspec.Struct, frozen=True):
    """Custodian ``index``'s D = s_i·(h·E) for one E, with its proof (c, z)."""

    index: int
    ephemeral: bytes
    value: bytes
    c: bytes
    z: bytes


def _challenge(y: bytes, base: bytes, value: bytes, a1: bytes, a2: bytes) -> bytes:
    return _hash_scalar(DOMAIN_PROOF, y, base, value, a1, a2)


def make_partial(share: Share, h: bytes, ephemeral: bytes) -> Partial:
    """The custodian's part for one E of a scope, proven (Chaum-Pedersen)."""
    if not _valid_point(ephemeral):
        raise CryptoError("an ephemeral point of the request is not valid")
    base = _mul(h, ephemeral)
    value = _mul(share.value, base)
    r = _scalar_random()
    a1, a2 = _B(r), _mul(r, base)
    c = _challenge(_B(share.value), base, value, a1, a2)
    z = _scalar_add(r, _scalar_mul(c, share.value))
    return Partial(share.index, ephemeral, value, c, z)


def verify_partial(partial: Partial, commitments: Sequence[bytes], h: bytes) -> bool:
    """Whether D really is s_i·(h·E) for the share the commitments promise."""
    try:
        if not all(_valid_point(p) for p in (partial.ephemeral, partial.value)):
            return False
        if len(partial.c) != 32 or len(partial.z) != 32:
            return False
        y = share_public(commitments, partial.index)
        base = _mul(h, partial.ephemeral)
        neg_c = _scalar_negate(partial.c)
        # A1 = z·B - c·Y, A2 = z·base - c·D; then c must be the hash over them
        a1 = _add(_B(partial.z), _mul(neg_c, y))
        a2 = _add(_mul(partial.z, base), _mul(neg_c, partial.value))
        return _challenge(y, base, partial.value, a1, a2) == partial.c
    except (CryptoError, RuntimeError, ValueError, TypeError):
        return False


def _lagrange_at_zero(index: int, indices: Iterable[int]) -> bytes:
    num, den = _scalar(1), _scalar(1)
    for j in indices:
        if j == index:
            continue
        num = _scalar_mul(num, _scalar(j))
        den = _scalar_mul(
            den,
            _scalar_sub(_scalar(j), _scalar(index)),
        )
    return _scalar_mul(num, _scalar_invert(den))


def combine(partials: Sequence[Partial], h: bytes) -> bytes:
    """K for the scope and E of these partials (verified, distinct custodians).

    With fewer partials than the threshold the result is a key that opens nothing.
    """
    indices = [p.index for p in partials]
    if len(set(indices)) != len(indices) or len({p.ephemeral for p in partials}) != 1:
        raise CryptoError("partials must come from distinct custodians for one point")
    total: bytes | None = None
    for p in partials:
        term = _mul(_lagrange_at_zero(p.index, indices), p.value)
        total = term if total is None else _add(total, term)
    assert total is not None
    return _key(total, partials[0].ephemeral, h)


def key_for(e: bytes, escrow_public: bytes, h: bytes) -> bytes:
    """The device's own K for a scope whose e it kept."""
    return _key(_mul(e, scope_point(escrow_public, h)), _B(e), h)
