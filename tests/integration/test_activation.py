"""Activation over an untrusted network: SPAKE2 on the code, single use, expiry, burning."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from _proxy import TcpProxy
from conftest import Org, arun
from strongroom import client, crypto
from strongroom.errors import ActivationError


def test_the_code_never_crosses_the_wire(org: Org) -> None:
    org.add_user("alice")
    code = org.code("alice")

    with TcpProxy(org.server.port) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        arun(client.activate(org.root / "alice", url, "alice", code, "phone"))
        sent = proxy.recorded()
    assert b"/v1/activation/finish" in sent  # we did record the whole exchange
    normalised = crypto.normalise_code(code)
    for form in (code, normalised, code.lower(), code.replace("-", "")):
        assert form.encode() not in sent
    assert crypto.code_password(code) not in sent
    assert crypto.code_password(code).hex().encode() not in sent


def _activate(org: Org, user: str, code: str, home: str) -> None:
    arun(client.activate(org.root / home, org.url, user, code, home))


def test_codes_are_single_use(org: Org) -> None:
    org.add_user("alice")
    code = org.code("alice")
    _activate(org, "alice", code, "first")
    with pytest.raises(ActivationError, match="no activation code"):
        _activate(org, "alice", code, "second")
    assert not (
        org.root / "second"
    ).exists()  # a failed activation leaves nothing behind


def test_codes_expire(org: Org) -> None:
    org.add_user("alice")
    code = org.code("alice", ttl_seconds=1)
    time.sleep(1.2)
    with pytest.raises(ActivationError, match="expired"):
        _activate(org, "alice", code, "late")


def test_three_wrong_tries_burn_the_code(org: Org) -> None:
    org.add_user("alice")
    code = org.code("alice")
    wrong = crypto.generate_code()
    with pytest.raises(ActivationError) as first:
        _activate(org, "alice", wrong, "try1")
    assert first.value.tries_left == 2
    with pytest.raises(ActivationError) as second:
        _activate(org, "alice", wrong, "try2")
    assert second.value.tries_left == 1
    with pytest.raises(ActivationError, match="burned"):
        _activate(org, "alice", wrong, "try3")
    with pytest.raises(ActivationError, match="burned"):
        _activate(org, "alice", code, "right-but-too-late")
    # A new code from IT works.
    _activate(org, "alice", org.code("alice"), "fresh")


def test_a_server_without_the_code_cannot_activate_a_device(
    org: Org, tmp_path: Path
) -> None:
    # A second organisation's server (say, an impostor the network redirected us to) knows
    # a code for alice, but not the code IT gave us.
    impostor = Org(tmp_path / "impostor")
    with impostor.server:
        impostor.add_user("alice")
        impostor.code("alice")
        real_code = crypto.generate_code()
        with pytest.raises(ActivationError):
            arun(client.activate(tmp_path / "dev", impostor.url, "alice", real_code))
    assert not (tmp_path / "dev").exists()


def test_the_device_pins_the_authority_from_activation(org: Org) -> None:
    home = org.activate("alice")
    store = client.LocalStore.open(home)
    try:
        pinned = store.get_meta("authority_key")
    finally:
        store.close()
    assert pinned == org.data.load_authority().public.raw
