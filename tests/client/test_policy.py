"""IT's orders on the device: only the pinned authority's, only for this device, never
older than what is enforced (known answers and adversarial cases, no server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom import crypto, proto
from strongroom.client import LocalStore, policy_in_force
from strongroom.client._policy import (
    accept_policy,
    accept_wipe,
    rules_in_force,
)
from strongroom.errors import OrderRefusedError

AUTHORITY = crypto.AuthorityKey.generate()
OTHER = crypto.AuthorityKey.generate()
ORG = "Test Ministry"
DEVICE_ID = "abcdefghijklmnop"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStore]:
    s = LocalStore.create(tmp_path / "home")
    for key, value in (
        ("authority_key", AUTHORITY.public.raw),
        ("org", ORG.encode()),
        ("user", b"alice"),
        ("device_id", DEVICE_ID.encode()),
    ):
        s.set_meta(key, value)
    yield s
    s.close()


def policy(
    version: int, user: str = "alice", org: str = ORG, **rules: object
) -> proto.Policy:
    return proto.Policy(
        org=org,
        user=user,
        version=version,
        issued_at=1000 * version,
        rules=msgspec.convert(rules, proto.PolicyRules),
    )


def test_a_signed_policy_is_kept_and_shown(store: LocalStore) -> None:
    assert policy_in_force(store) is None
    assert rules_in_force(store) == proto.PolicyRules()
    got, new = accept_policy(store, AUTHORITY.sign_policy(policy(3, retention_days=7)))
    assert (got.version, new) == (3, True)
    shown = policy_in_force(store)
    assert shown is not None and shown.version == 3
    assert shown.rules == ["messages are deleted from devices after 7 days"]
    assert rules_in_force(store).retention_days == 7
    # the same document again is fine and not new; a newer one replaces it
    assert (
        accept_policy(store, AUTHORITY.sign_policy(policy(3, retention_days=7)))[1]
        is False
    )
    accept_policy(store, AUTHORITY.sign_policy(policy(4, escrow=True)))
    shown = policy_in_force(store)
    assert shown is not None and shown.escrow and shown.version == 4


@pytest.mark.parametrize(
    ("signed", "why"),
    [
        (OTHER.sign_policy(policy(5)), "not signed by this organisation's authority"),
        (
            proto.Signed(proto.encode(policy(5)), bytes(64)),
            "not signed by this organisation's authority",
        ),
        (AUTHORITY.sign_policy(policy(5, user="bob")), "made for bob"),
        (AUTHORITY.sign_policy(policy(5, org="Other Org")), "not for this device"),
        (AUTHORITY.sign_policy(policy(1)), "an old policy replayed"),
        (AUTHORITY.sign_policy(policy(2, escrow=True)), "a second, different policy"),
    ],
)
def test_bad_policies_are_refused_and_change_nothing(
    store: LocalStore, signed: proto.Signed, why: str
) -> None:
    accept_policy(store, AUTHORITY.sign_policy(policy(2, retention_days=30)))
    with pytest.raises(OrderRefusedError, match=why):
        accept_policy(store, signed)
    shown = policy_in_force(store)
    assert shown is not None and shown.version == 2
    assert rules_in_force(store).retention_days == 30


def test_a_damaged_stored_policy_enforces_nothing(store: LocalStore) -> None:
    accept_policy(store, AUTHORITY.sign_policy(policy(2, passcode_required=True)))
    data = bytearray(store.get_meta("policy") or b"")
    data[-1] ^= 1
    store.set_meta("policy", bytes(data))
    assert policy_in_force(store) is None


def test_wipe_orders_only_for_this_device_from_the_authority(store: LocalStore) -> None:
    mine = proto.WipeOrder(org=ORG, device_id=DEVICE_ID, ordered_at=5)
    assert accept_wipe(store, AUTHORITY.sign_wipe_order(mine)) == mine
    other = proto.WipeOrder(org=ORG, device_id="qrstuvwxyzabcdef", ordered_at=5)
    with pytest.raises(OrderRefusedError, match="not this device"):
        accept_wipe(store, AUTHORITY.sign_wipe_order(other))
    with pytest.raises(OrderRefusedError, match="not signed"):
        accept_wipe(store, OTHER.sign_wipe_order(mine))
    # a policy's signature is no wipe order's (domain separation)
    signed = AUTHORITY.sign_policy(policy(9))
    with pytest.raises(OrderRefusedError):
        accept_wipe(store, proto.Signed(proto.encode(mine), signed.signature))


def test_arbitrary_bytes_are_never_a_policy(store: LocalStore) -> None:
    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300), st.binary(min_size=64, max_size=64))
    def check(body: bytes, signature: bytes) -> None:
        with pytest.raises(OrderRefusedError):
            accept_policy(store, proto.Signed(body, signature))

    check()
    assert policy_in_force(store) is None


def test_version_comparison() -> None:
    assert proto.version_at_least("strongroom/0.1.0", "0.1")
    assert proto.version_at_least("strongroom/1.10.0", "1.9.9")
    assert not proto.version_at_least("strongroom/0.1.0", "0.2")
    assert not proto.version_at_least("strongroom/garbage", "0.1")


def test_policy_values_parse_with_clear_errors() -> None:
    assert proto.parse_policy_value("retention_days", "30") == 30
    assert proto.parse_policy_value("retention_days", "none") is None
    assert proto.parse_policy_value("escrow", "on") is True
    assert proto.parse_policy_value("min_client_version", "0.2.1") == "0.2.1"
    for key, value, why in (
        ("retention", "3", "not a policy setting"),
        ("retention_days", "soon", "whole number"),
        ("retention_days", "0", "retention_days"),
        ("escrow", "maybe", "true or false"),
        ("passcode_min_length", "2", "passcode_min_length"),
        ("min_client_version", "new", "min_client_version"),
    ):
        with pytest.raises(ValueError, match=why):
            proto.parse_policy_value(key, value)
