"""The SAS state machine as a pair on a fake wire: no server, no Olm, just the steps."""

from __future__ import annotations

import msgspec
import pytest

from strongroom import crypto, proto
from strongroom.client import FlowState, SasFlow
from strongroom.client._verification import _Side

A = _Side("alice", "aaaaaaaaaaaaaaaa", crypto.DeviceAccount.generate().ed25519)
B = _Side("bob", "bbbbbbbbbbbbbbbb", crypto.DeviceAccount.generate().ed25519)


def pair() -> tuple[SasFlow, SasFlow]:
    flow = b"\x01" * 16
    a = SasFlow(flow, A, B, True, FlowState.REQUESTED, 0)
    b = SasFlow(flow, B, A, False, FlowState.INCOMING, 0)
    return a, b


def wire(step: proto.VerificationStep) -> proto.VerificationStep:
    """As the other side decodes it."""
    sent = proto.Verification(b"\x01" * 16, step)
    return proto.decode_verification(proto.encode(sent)).step


def deliver(
    to: SasFlow, steps: list[proto.VerificationStep]
) -> list[proto.VerificationStep]:
    out: list[proto.VerificationStep] = []
    for step in steps:
        out += to.receive(wire(step))
    return out


def run_to_comparison() -> tuple[SasFlow, SasFlow]:
    a, b = pair()
    accept = b.accept()
    key_a = deliver(a, accept)
    key_b = deliver(b, key_a)
    assert deliver(a, key_b) == []
    assert a.state is b.state is FlowState.COMPARING
    return a, b


def test_both_sides_show_the_same_string_and_verify() -> None:
    a, b = run_to_comparison()
    assert a.emoji() == b.emoji() and len(a.emoji()) == 7
    assert a.decimals() == b.decimals()
    assert all(1000 <= n <= 9191 for n in a.decimals())
    mac_a = a.confirm()
    assert a.state is FlowState.CONFIRMED
    assert deliver(b, mac_a) == []  # held until Bob's person confirms
    done = b.confirm()
    assert [type(s) for s in done] == [proto.VerifyMac, proto.VerifyDone]
    assert b.state is FlowState.VERIFIED
    assert [type(s) for s in deliver(a, done)] == [proto.VerifyDone]
    assert a.done and a.state.value == "verified"  # (mypy narrowed it to CONFIRMED)


def test_a_swapped_device_key_is_refused() -> None:
    """Bob's device holds another key than the one certified to Alice: its MAC fails."""
    a, b = run_to_comparison()
    a.them = _Side(B.user, B.device, crypto.DeviceAccount.generate().ed25519)
    deliver(b, a.confirm())
    answer = deliver(a, b.confirm())
    assert a.state is FlowState.CANCELLED and "middle" in a.reason
    assert isinstance(answer[0], proto.VerificationCancel)
    assert answer[0].code is proto.VerificationCancelCode.KEY_MISMATCH


def test_a_key_other_than_the_committed_one_is_refused() -> None:
    a, b = pair()
    deliver(a, b.accept())
    other = crypto.SasKeys().public_key
    answer = a.receive(proto.VerifyKey(other))
    assert a.state is FlowState.CANCELLED
    assert isinstance(answer[0], proto.VerificationCancel)


def test_a_mismatch_cancels_both() -> None:
    a, b = run_to_comparison()
    cancel = a.mismatch()
    assert a.state is FlowState.CANCELLED
    deliver(b, cancel)
    assert b.state is FlowState.CANCELLED and "mismatch" in b.reason


@pytest.mark.parametrize(
    "step",
    [proto.VerifyMac("x", "y"), proto.VerifyKey("k" * 43), proto.VerifyDone()],
)
def test_steps_out_of_order_cancel(step: proto.VerificationStep) -> None:
    a, _ = pair()
    answer = a.receive(step)
    assert a.state is FlowState.CANCELLED
    assert isinstance(answer[0], proto.VerificationCancel)
    assert answer[0].code is proto.VerificationCancelCode.UNEXPECTED


def test_verification_is_olm_content_only() -> None:
    step = proto.Verification(b"\x02" * 16, proto.VerifyRequest())
    decoded = msgspec.msgpack.decode(proto.encode(step), type=proto.OlmContent)
    assert decoded == step
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(proto.encode(step), type=proto.UserContent)
