"""Escrow cryptography: shares check against commitments, k partials open exactly one
scope, k-1 open nothing, a wrong partial is caught (round trips and adversarial cases)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.crypto import _escrow as escrow
from strongroom.errors import CryptoError

ORG = "Test Ministry"


def test_shares_check_against_the_commitments() -> None:
    ceremony = escrow.new_ceremony(5, 3)
    assert len(ceremony.shares) == 5 and len(ceremony.commitments) == 3
    for share in ceremony.shares:
        assert escrow.check_share(share, ceremony.commitments)
    bad = escrow.Share(2, ceremony.shares[0].value)  # someone else's share
    assert not escrow.check_share(bad, ceremony.commitments)
    other = escrow.new_ceremony(5, 3)
    assert not escrow.check_share(ceremony.shares[0], other.commitments)


def test_every_k_subset_opens_the_scope_and_k_minus_1_does_not() -> None:
    ceremony = escrow.new_ceremony(4, 3)
    h = escrow.scope_scalar(ORG, "dm:alice:bob", "2026-11-28")
    _, ephemeral, key = escrow.new_ephemeral(ceremony.public, h)
    sealed = escrow.seal_copy(key, b"aad", b"meet at noon")
    partials = [escrow.make_partial(s, h, ephemeral) for s in ceremony.shares]
    for p in partials:
        assert escrow.verify_partial(p, ceremony.commitments, h)
    for subset in itertools.combinations(partials, 3):
        released = escrow.combine(list(subset), h)
        assert released == key
        assert escrow.open_copy(released, b"aad", sealed) == b"meet at noon"
    for pair in itertools.combinations(partials, 2):
        with pytest.raises(CryptoError):
            escrow.open_copy(escrow.combine(list(pair), h), b"aad", sealed)


def test_a_released_key_opens_no_other_scope() -> None:
    ceremony = escrow.new_ceremony(3, 2)
    day1 = escrow.scope_scalar(ORG, "dm:alice:bob", "2026-11-27")
    day2 = escrow.scope_scalar(ORG, "dm:alice:bob", "2026-11-28")
    other = escrow.scope_scalar(ORG, "dm:alice:carol", "2026-11-27")
    assert len({day1, day2, other}) == 3
    sealed = {}
    points = {}
    for h in (day1, day2, other):
        _, ephemeral, key = escrow.new_ephemeral(ceremony.public, h)
        sealed[h] = escrow.seal_copy(key, b"", b"secret of " + h[:4])
        points[h] = ephemeral
    released = escrow.combine(
        [escrow.make_partial(s, day1, points[day1]) for s in ceremony.shares[:2]], day1
    )
    assert escrow.open_copy(released, b"", sealed[day1]).startswith(b"secret of")
    for h in (day2, other):
        with pytest.raises(CryptoError):
            escrow.open_copy(released, b"", sealed[h])
        # and partials made for day1's scalar over another scope's point are no key
        wrong = escrow.combine(
            [escrow.make_partial(s, day1, points[h]) for s in ceremony.shares[:2]], h
        )
        with pytest.raises(CryptoError):
            escrow.open_copy(wrong, b"", sealed[h])


def test_a_wrong_partial_does_not_verify() -> None:
    ceremony = escrow.new_ceremony(3, 2)
    h = escrow.scope_scalar(ORG, "g:team", "2026-11-28")
    _, ephemeral, _ = escrow.new_ephemeral(ceremony.public, h)
    good = escrow.make_partial(ceremony.shares[0], h, ephemeral)
    liar = escrow.make_partial(escrow.Share(1, ceremony.shares[1].value), h, ephemeral)
    assert not escrow.verify_partial(liar, ceremony.commitments, h)
    swapped = escrow.Partial(
        good.index,
        good.ephemeral,
        escrow.new_ephemeral(ceremony.public, h)[1],
        good.c,
        good.z,
    )
    assert not escrow.verify_partial(swapped, ceremony.commitments, h)
    assert not escrow.verify_partial(
        good, ceremony.commitments, escrow.scope_scalar(ORG, "g:x", "2026-11-28")
    )
    assert escrow.verify_partial(good, ceremony.commitments, h)


def test_bad_ceremony_sizes_are_refused() -> None:
    for n, k in ((3, 4), (0, 0), (40, 2)):
        with pytest.raises(CryptoError):
            escrow.new_ceremony(n, k)


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_garbage_points_are_never_partials(value: bytes, proof: bytes) -> None:
    ceremony = escrow.new_ceremony(2, 2)
    h = escrow.scope_scalar(ORG, "c", "2026-01-01")
    _, ephemeral, _ = escrow.new_ephemeral(ceremony.public, h)
    assert not escrow.verify_partial(
        escrow.Partial(1, ephemeral, value, proof, proof), ceremony.commitments, h
    )
