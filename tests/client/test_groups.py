"""The group core: chain verification, forks and rollbacks, key sharing and rotation.

Every adversarial case of issue 3 that the core can decide alone is here, played by a
hostile server that can reorder, drop, replay and rewrite bytes but holds no member's
device key; plus property tests: random valid histories always verify and agree with a
simple model, and any single corrupted byte is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from strongroom import client, crypto, proto
from strongroom.client import (
    GroupChainError,
    GroupForkError,
    GroupRollbackError,
    GroupState,
    GroupView,
    HeadCheck,
    Peer,
    Recipients,
    RotationPolicy,
    SharedSession,
    Verdict,
    _groups,
)
from strongroom.errors import ClientError, CryptoError

Action = proto.GroupAction
ORG = "example"
T0 = 1_700_000_000_000
AUTHORITY = crypto.AuthorityKey.generate()
GROUP = proto.new_group_id(bytes(range(16)))
DAY = 86_400_000


@dataclass(frozen=True)
class Dev:
    """One device of one user: its account signs what it authors."""

    user: str
    account: crypto.DeviceAccount = field(default_factory=crypto.DeviceAccount.generate)

    @property
    def id(self) -> str:
        return self.account.device_id


ANN = Dev("ann")
ANN_LAPTOP = Dev("ann")
BOB = Dev("bob")
CAROL = Dev("carol")
DAVE = Dev("dave")
EVE = Dev("eve")  # certified, never a member
MALLORY = Dev("mallory")  # a key the server made up: no certificate


class Directory:
    """What a device believes about devices: certificates verified under the authority."""

    def __init__(self, devices: Sequence[Dev] = ()) -> None:
        self.peers: dict[str, Peer] = {}
        for dev in devices:
            self.certify(dev)

    def certify(self, dev: Dev) -> Peer:
        cert = proto.DeviceCertificate(
            org=ORG,
            user=dev.user,
            device_id=dev.id,
            ed25519=dev.account.ed25519,
            curve25519=dev.account.curve25519,
            name=f"{dev.user}'s device",
            issued_at=T0,
        )
        verified = AUTHORITY.public.verify_certificate(AUTHORITY.sign_certificate(cert))
        peer = Peer(
            device_id=verified.device_id,
            user=verified.user,
            ed25519=verified.ed25519,
            curve25519=verified.curve25519,
            name=verified.name,
        )
        self.peers[peer.device_id] = peer
        return peer

    def revoked(self, dev: Dev) -> Directory:
        """A copy in which a verified revocation names ``dev``."""
        signed = AUTHORITY.sign_revocation(proto.Revocation(ORG, dev.id, T0))
        revocation = AUTHORITY.public.verify_revocation(signed)
        copy = Directory()
        copy.peers = dict(self.peers)
        copy.peers[revocation.device_id] = msgspec.structs.replace(
            self.peers[dev.id], revoked=True
        )
        return copy

    def lookup(self, device_id: str) -> Peer | None:
        return self.peers.get(device_id)


DIRECTORY = Directory([ANN, ANN_LAPTOP, BOB, CAROL, DAVE, EVE])
LOOKUP = DIRECTORY.lookup


def sign(change: proto.GroupChange, dev: Dev) -> proto.Signed:
    return client.sign_change(change, dev.account)


def create(members: Sequence[str] = ("bob", "carol"), by: Dev = ANN) -> proto.Signed:
    change = client.create_group(
        GROUP, "ops", members, author=by.user, author_device=by.id, at=T0
    )
    return sign(change, by)


def change(
    state: GroupState,
    action: proto.GroupAction,
    subject: str,
    by: Dev,
    name: str | None = None,
) -> proto.Signed:
    made = client.next_change(
        state,
        action,
        subject,
        author=by.user,
        author_device=by.id,
        at=T0 + state.seq + 1,
        name=name,
    )
    return sign(made, by)


def forged(
    state: GroupState,
    action: proto.GroupAction,
    subject: str,
    signer: Dev,
    /,
    **overrides: object,
) -> proto.Signed:
    """An entry an honest admin (ann) could make, rewritten and signed by ``signer``."""
    made = client.next_change(
        state, action, subject, author="ann", author_device=ANN.id, at=T0
    )
    return sign(msgspec.structs.replace(made, **overrides), signer)


def _model(
    state: GroupState, action: proto.GroupAction, subject: str
) -> tuple[set[str], set[str]]:
    """What each action does to members and admins: an oracle written apart from the
    module's rule table."""
    members, admins = set(state.members), set(state.admins)
    if action is Action.ADD:
        members.add(subject)
    elif action in (Action.REMOVE, Action.LEAVE):
        members.discard(subject)
        admins.discard(subject)
    elif action is Action.PROMOTE:
        admins.add(subject)
    elif action is Action.DEMOTE:
        admins.discard(subject)
    return members, admins


def rogue(
    state: GroupState, action: proto.GroupAction, subject: str, by: Dev
) -> proto.Signed:
    """An entry the rules forbid, from a client that ignores them, signed by ``by``."""
    members, admins = _model(state, action, subject)
    made = proto.GroupChange(
        group=state.group,
        seq=state.seq + 1,
        prev=state.head_hash,
        action=action,
        subject=subject,
        members=sorted(members),
        admins=sorted(admins),
        name=state.name,
        author=by.user,
        author_device=by.id,
        at=T0,
    )
    return sign(made, by)


STEPS: list[tuple[proto.GroupAction, str, Dev, str | None]] = [
    (Action.ADD, "dave", ANN, None),
    (Action.PROMOTE, "bob", ANN, None),
    (Action.REMOVE, "carol", BOB, None),
    (Action.RENAME, "bob", BOB, "ops and friends"),
    (Action.DEMOTE, "ann", BOB, None),
    (Action.LEAVE, "dave", DAVE, None),
    (Action.ADD, "carol", BOB, None),
]


def honest_chain() -> tuple[list[proto.Signed], list[GroupState]]:
    entries = [create()]
    states = [GroupState.create(entries[0], LOOKUP)]
    for action, subject, by, name in STEPS:
        entries.append(change(states[-1], action, subject, by, name))
        states.append(states[-1].apply(entries[-1], LOOKUP))
    return entries, states


CHAIN, STATES = honest_chain()


def refused(entries: Sequence[proto.Signed], *words: str) -> GroupChainError:
    with pytest.raises(GroupChainError) as info:
        client.verify_chain(entries, LOOKUP)
    for word in words:
        assert word in str(info.value), str(info.value)
    return info.value


# --- honest chains --------------------------------------------------------------------


def test_an_honest_chain_verifies_step_by_step() -> None:
    assert [(s.seq, sorted(s.members), sorted(s.admins), s.name) for s in STATES] == [
        (0, ["ann", "bob", "carol"], ["ann"], "ops"),
        (1, ["ann", "bob", "carol", "dave"], ["ann"], "ops"),
        (2, ["ann", "bob", "carol", "dave"], ["ann", "bob"], "ops"),
        (3, ["ann", "bob", "dave"], ["ann", "bob"], "ops"),
        (4, ["ann", "bob", "dave"], ["ann", "bob"], "ops and friends"),
        (5, ["ann", "bob", "dave"], ["bob"], "ops and friends"),
        (6, ["ann", "bob"], ["bob"], "ops and friends"),
        (7, ["ann", "bob", "carol"], ["bob"], "ops and friends"),
    ]
    assert client.verify_chain(CHAIN, LOOKUP) == STATES[-1]


def test_heads_link_each_entry_to_the_one_before() -> None:
    for before, entry, after in zip(STATES[:-1], CHAIN[1:], STATES[1:], strict=True):
        body = proto.decode_group_change(entry.body)
        assert body.prev == before.head_hash
        assert after.head == proto.ChainHead(body.seq, proto.entry_hash(entry))
    assert proto.decode_group_change(CHAIN[0].body).prev == proto.GENESIS_PREV


def test_any_device_of_an_admin_may_author() -> None:
    state = GroupState.create(create(), LOOKUP)
    after = state.apply(change(state, Action.ADD, "dave", ANN_LAPTOP), LOOKUP)
    assert "dave" in after.members


def test_the_creator_is_always_a_member_and_the_first_admin() -> None:
    state = GroupState.create(create(members=["bob", "bob"]), LOOKUP)
    assert state.members == {"ann", "bob"}
    assert state.admins == {"ann"}


def test_the_last_member_may_leave_an_empty_group_behind() -> None:
    state = GroupState.create(create(members=[]), LOOKUP)
    empty = state.apply(change(state, Action.LEAVE, "ann", ANN), LOOKUP)
    assert empty.members == frozenset() and empty.admins == frozenset()
    with pytest.raises(ClientError):
        client.next_change(
            empty, Action.ADD, "bob", author="ann", author_device=ANN.id, at=T0
        )


# --- the adversarial cases of issue 3 -------------------------------------------------------


def test_an_entry_by_a_non_admin_is_refused() -> None:
    entry = rogue(STATES[0], Action.ADD, "eve", BOB)
    error = refused([CHAIN[0], entry], "entry 1", "bob is not an admin")
    assert error.seq == 1 and error.group == GROUP


def test_an_entry_by_a_non_member_is_refused() -> None:
    entry = rogue(STATES[0], Action.ADD, "eve", EVE)
    refused([CHAIN[0], entry], "entry 1", "eve is not a member")


def test_an_entry_by_an_uncertified_device_is_refused() -> None:
    entry = forged(STATES[0], Action.ADD, "mallory", MALLORY, author_device=MALLORY.id)
    refused([CHAIN[0], entry], "entry 1", f"{MALLORY.id} is not certified")


def test_an_entry_by_another_users_certified_device_is_refused() -> None:
    entry = forged(STATES[0], Action.ADD, "eve", EVE, author_device=EVE.id)
    refused([CHAIN[0], entry], "entry 1", "certified for eve, not for ann")


def test_an_entry_signed_by_the_wrong_key_is_refused() -> None:
    entry = forged(STATES[0], Action.ADD, "eve", BOB)  # claims ann's device, bob signs
    refused([CHAIN[0], entry], "entry 1", "signature is not by its author device")


def test_a_server_invented_member_is_refused() -> None:
    # The server rewrites a signed entry: the signature no longer covers the bytes.
    body = proto.decode_group_change(CHAIN[1].body)
    rewritten = msgspec.structs.replace(body, members=sorted([*body.members, "eve"]))
    tampered = proto.Signed(proto.encode(rewritten), CHAIN[1].signature)
    refused([CHAIN[0], tampered, *CHAIN[2:]], "entry 1", "signature")


def test_a_snapshot_that_does_not_follow_from_the_action_is_refused() -> None:
    # Even an admin's own device cannot slip in a member the action does not add.
    entry = forged(
        STATES[0],
        Action.ADD,
        "dave",
        ANN,
        members=["ann", "bob", "carol", "dave", "eve"],
    )
    refused([CHAIN[0], entry], "entry 1", "member list", "adds eve")
    entry = forged(STATES[0], Action.ADD, "dave", ANN, admins=["ann", "dave"])
    refused([CHAIN[0], entry], "entry 1", "admin list")
    entry = forged(STATES[0], Action.ADD, "dave", ANN, name="renamed on the side")
    refused([CHAIN[0], entry], "entry 1", "only a rename")
    unsorted = forged(
        STATES[0], Action.ADD, "dave", ANN, members=["dave", "carol", "bob", "ann"]
    )
    refused([CHAIN[0], unsorted], "entry 1", "not sorted")


def test_a_reordered_chain_is_refused() -> None:
    reordered = [CHAIN[0], CHAIN[2], CHAIN[1], *CHAIN[3:]]
    refused(reordered, "entry 2", "entry 1 was expected")


def test_a_chain_with_a_gap_or_a_repeat_is_refused() -> None:
    refused([CHAIN[0], CHAIN[1], CHAIN[3]], "entry 3", "entry 2 was expected")
    refused([CHAIN[0], CHAIN[1], CHAIN[1]], "entry 1", "entry 2 was expected")


def test_an_entry_that_does_not_link_is_refused() -> None:
    entry = forged(STATES[0], Action.ADD, "dave", ANN, prev=bytes(32))
    refused([CHAIN[0], entry], "entry 1", "does not link to entry 0")


def test_an_entry_of_another_group_is_refused() -> None:
    other = proto.new_group_id(b"\xff" * 16)
    entry = forged(STATES[0], Action.ADD, "dave", ANN, group=other)
    refused([CHAIN[0], entry], "entry 1", "another group")


def test_a_chain_must_start_with_its_creation() -> None:
    refused(CHAIN[1:], "entry 1", "must start with the group's creation")
    refused([], "at least its creation")
    again = forged(STATES[0], Action.ADD, "dave", ANN, action=Action.CREATE)
    refused([CHAIN[0], again], "entry 1", "created once")
    not_genesis = sign(
        msgspec.structs.replace(
            proto.decode_group_change(CHAIN[0].body), prev=b"\x01" * 32
        ),
        ANN,
    )
    refused([not_genesis], "entry 0", "links to nothing")
    creator_outside = sign(
        msgspec.structs.replace(
            proto.decode_group_change(CHAIN[0].body), members=["bob", "carol"]
        ),
        ANN,
    )
    refused([creator_outside], "entry 0", "creator")
    two_admins = sign(
        msgspec.structs.replace(
            proto.decode_group_change(CHAIN[0].body), admins=["ann", "bob"]
        ),
        ANN,
    )
    refused([two_admins], "entry 0", "admin list")


def test_garbage_in_place_of_an_entry_is_refused() -> None:
    refused([CHAIN[0], proto.Signed(b"\x00garbage", bytes(64))], "entry 1", "decode")
    refused([proto.Signed(b"", bytes(64))], "does not decode")


@pytest.mark.parametrize(
    ("seq", "action", "subject", "by", "why"),
    [
        (0, Action.ADD, "bob", ANN, "someone not yet a member"),
        (0, Action.REMOVE, "ann", ANN, "another member"),
        (0, Action.REMOVE, "eve", ANN, "another member"),
        (0, Action.PROMOTE, "eve", ANN, "a member who is not an admin"),
        (0, Action.PROMOTE, "ann", ANN, "a member who is not an admin"),
        (0, Action.DEMOTE, "ann", ANN, "other than the last"),
        (0, Action.DEMOTE, "bob", ANN, "other than the last"),
        (0, Action.LEAVE, "ann", ANN, "the last admin"),
        (0, Action.LEAVE, "bob", ANN, "the author"),
        (0, Action.RENAME, "bob", ANN, "the author"),
        (5, Action.RENAME, "ann", ANN, "not an admin"),
        (5, Action.REMOVE, "bob", ANN, "not an admin"),
        (6, Action.LEAVE, "dave", DAVE, "not a member"),
    ],
)
def test_the_rules_refuse_what_they_do_not_allow(
    seq: int, action: proto.GroupAction, subject: str, by: Dev, why: str
) -> None:
    state = STATES[seq]
    # The author's own client refuses to sign it ...
    with pytest.raises(ClientError, match=why):
        client.next_change(
            state,
            action,
            subject,
            author=by.user,
            author_device=by.id,
            at=T0,
            name="x" if action is Action.RENAME else None,
        )
    # ... and every verifier refuses it when a rogue client signs it anyway.
    entry = rogue(state, action, subject, by)
    refused([*CHAIN[: seq + 1], entry], f"entry {seq + 1}", why)


@pytest.mark.parametrize(
    ("action", "subject", "name", "why"),
    [
        (Action.CREATE, "ann", None, "created once"),
        (Action.RENAME, "ann", None, "new name"),
        (Action.ADD, "dave", "x", "new name"),
    ],
)
def test_next_change_refuses_create_and_a_misplaced_name(
    action: proto.GroupAction, subject: str, name: str | None, why: str
) -> None:
    with pytest.raises(ClientError, match=why):
        client.next_change(
            STATES[0],
            action,
            subject,
            author="ann",
            author_device=ANN.id,
            at=T0,
            name=name,
        )


def test_the_docs_table_is_the_rule_table() -> None:
    Effect = Callable[[frozenset[str], str], frozenset[str]]
    effects: dict[Effect, str] = {
        _groups._same: "unchanged",
        _groups._plus: "+ subject",
        _groups._minus: "\N{MINUS SIGN} subject",
    }
    doc = (Path(__file__).parents[2] / "docs" / "groups.md").read_text()
    for action, entry in _groups._RULES.items():
        who = "an admin" if entry.admin_only else "any member"
        row = (
            f"| `{action.value}` | {who} | {entry.subject} | "
            f"{effects[entry.members]} | {effects[entry.admins]} |"
        )
        assert row in doc, row


# --- revoked authors ----------------------------------------------------------------------


def test_a_new_entry_by_a_revoked_device_is_refused() -> None:
    revoked = DIRECTORY.revoked(ANN_LAPTOP)
    state = GroupState.create(create(), LOOKUP)
    entry = change(state, Action.ADD, "eve", ANN_LAPTOP)
    with pytest.raises(GroupChainError, match=f"{ANN_LAPTOP.id} has been revoked"):
        state.apply(entry, revoked.lookup)
    with pytest.raises(GroupChainError, match="entry 1"):
        client.verify_chain([CHAIN[0], entry], revoked.lookup)


def test_an_old_entry_by_a_since_revoked_device_stands_once_vouched_for() -> None:
    # ann's laptop added dave, then the laptop was stolen and revoked.  bob's later entry
    # commits to the laptop's: the chain still verifies for a device that joins now.
    start = GroupState.create(create(), LOOKUP)
    by_laptop = change(start, Action.ADD, "dave", ANN_LAPTOP)
    middle = start.apply(by_laptop, LOOKUP)
    promote = change(middle, Action.PROMOTE, "bob", ANN)
    after = middle.apply(promote, LOOKUP)
    vouched = change(after, Action.RENAME, "bob", BOB, name="after the theft")
    entries = [CHAIN[0], by_laptop, promote, vouched]
    revoked = DIRECTORY.revoked(ANN_LAPTOP)
    assert client.verify_chain(entries, revoked.lookup).name == "after the theft"
    # Without a later entry from a device in good standing, it is refused ...
    with pytest.raises(GroupChainError, match=r"entry 1.*revoked"):
        client.verify_chain(entries[:2], revoked.lookup)
    # ... and a view keeps what stands before it.
    view = GroupView()
    with pytest.raises(GroupChainError, match="entry 1"):
        view.update(entries[:2], revoked.lookup)
    assert view.state(GROUP) == start


# --- what a device verified, kept -----------------------------------------------------------


def test_a_view_grows_incrementally_and_accepts_repeats() -> None:
    view = GroupView()
    assert view.state(GROUP) is None
    assert view.update(CHAIN[:3], LOOKUP) == STATES[2]
    assert view.update(CHAIN[1:5], LOOKUP) == STATES[4]  # overlap, then new
    assert view.update(CHAIN[3:5], LOOKUP) == STATES[4]  # all known: nothing changes
    assert view.update(CHAIN[5:], LOOKUP) == STATES[-1]
    assert view.groups() == [GROUP]
    assert view.state_at(GROUP, 3) == STATES[3]
    assert view.state_at(GROUP, 99) is None
    assert view.entries(GROUP) == CHAIN
    assert view.entries(GROUP, after=5) == CHAIN[6:]
    one = len(CHAIN[6].body) + 64
    assert view.entries(GROUP, after=5, max_bytes=one) == CHAIN[6:7]


def test_a_view_keeps_the_verified_prefix_of_a_bad_batch() -> None:
    view = GroupView()
    bad = rogue(STATES[2], Action.ADD, "eve", CAROL)
    with pytest.raises(GroupChainError, match=r"entry 3.*carol is not an admin"):
        view.update([*CHAIN[:3], bad], LOOKUP)
    assert view.state(GROUP) == STATES[2]
    with pytest.raises(GroupChainError, match="entry 4"):
        view.update([CHAIN[4]], LOOKUP)  # a gap after our head
    assert view.update(CHAIN[3:], LOOKUP) == STATES[-1]


def test_a_replayed_old_chain_after_a_removal_is_refused() -> None:
    # Entry 3 removed carol.  The server hands out the chain as it was before.
    view = GroupView()
    view.update(CHAIN[:4], LOOKUP)
    assert "carol" not in view.state(GROUP).members  # type: ignore[union-attr]
    with pytest.raises(GroupRollbackError, match="ends at entry 2") as info:
        view.update(CHAIN[:3], LOOKUP)
    assert info.value.seq == 2
    assert view.state(GROUP) == STATES[3]
    # A member's room key may lag behind us: that is no rollback claim.
    assert view.update(CHAIN[:3], LOOKUP, stale_ok=True) == STATES[3]


def test_a_fork_is_refused_and_named() -> None:
    # Two validly signed entries at seq 1: ann adds dave for some, eve for others.
    view = GroupView()
    view.update(CHAIN[:2], LOOKUP)  # ann added dave
    other = change(STATES[0], Action.ADD, "eve", ANN)
    with pytest.raises(GroupForkError, match="entry 1") as info:
        view.update([CHAIN[0], other], LOOKUP)
    assert info.value.seq == 1
    with pytest.raises(GroupForkError):
        view.update([other, *CHAIN[2:]], LOOKUP)
    assert view.state(GROUP) == STATES[1]
    other_head = STATES[0].apply(other, LOOKUP).head
    assert view.check_head(GROUP, other_head) is HeadCheck.FORK


def test_a_forged_entry_at_a_known_place_is_a_chain_error_not_a_fork() -> None:
    view = GroupView()
    view.update(CHAIN[:2], LOOKUP)
    fake = forged(STATES[0], Action.ADD, "eve", MALLORY, author_device=MALLORY.id)
    with pytest.raises(GroupChainError, match="not certified") as info:
        view.update([CHAIN[0], fake], LOOKUP)
    assert not isinstance(info.value, GroupForkError)


def test_a_view_refuses_an_empty_or_undecodable_batch() -> None:
    view = GroupView()
    with pytest.raises(GroupChainError, match="no entries"):
        view.update([], LOOKUP)
    with pytest.raises(GroupChainError, match="does not decode"):
        view.update([proto.Signed(b"junk", bytes(64))], LOOKUP)


def test_a_view_restores_what_it_stored_even_after_a_revocation() -> None:
    # The laptop's entry was verified while the laptop was in good standing; after its
    # revocation the stored chain still loads (never rewound), but is not accepted anew.
    start = GroupState.create(create(), LOOKUP)
    by_laptop = change(start, Action.ADD, "dave", ANN_LAPTOP)
    view = GroupView()
    view.update([CHAIN[0], by_laptop], LOOKUP)
    stored = view.entries(GROUP)
    revoked = DIRECTORY.revoked(ANN_LAPTOP)
    restored = GroupView()
    assert restored.restore(stored, revoked.lookup) == view.state(GROUP)
    assert restored.entries(GROUP) == stored
    with pytest.raises(GroupChainError, match="revoked"):
        GroupView().update(stored, revoked.lookup)
    # A stored chain that does not verify does not load.
    with pytest.raises(GroupChainError, match="entry 1"):
        GroupView().restore([CHAIN[0], CHAIN[2]], LOOKUP)
    with pytest.raises(GroupChainError, match="creation"):
        GroupView().restore([], LOOKUP)


def test_authoring_refuses_what_the_wire_cannot_carry() -> None:
    many = [f"user{i}" for i in range(proto.MAX_GROUP_MEMBERS)]
    with pytest.raises(ClientError, match="limit of the wire format"):
        client.create_group(
            GROUP, "big", many, author="ann", author_device=ANN.id, at=T0
        )
    with pytest.raises(ClientError, match="limit of the wire format"):
        client.create_group(
            GROUP, "x" * 101, [], author="ann", author_device=ANN.id, at=T0
        )
    with pytest.raises(ClientError, match="limit of the wire format"):
        client.next_change(
            STATES[0],
            Action.ADD,
            "Not A User",
            author="ann",
            author_device=ANN.id,
            at=T0,
        )


def test_check_head() -> None:
    view = GroupView()
    assert view.check_head(GROUP, STATES[0].head) is HeadCheck.UNKNOWN
    view.update(CHAIN[:4], LOOKUP)
    assert view.check_head(GROUP, STATES[3].head) is HeadCheck.SAME
    assert view.check_head(GROUP, STATES[1].head) is HeadCheck.OLDER
    assert view.check_head(GROUP, STATES[5].head) is HeadCheck.NEWER
    assert view.check_head(GROUP, proto.ChainHead(2, bytes(32))) is HeadCheck.FORK


# --- who receives the key --------------------------------------------------------------------


def plan(state: GroupState, listed: dict[str, list[str]]) -> Recipients:
    return client.plan_recipients(
        state, listed, LOOKUP, self_user="ann", self_device=ANN.id
    )


def test_keys_go_to_the_certified_devices_of_members_and_our_other_devices() -> None:
    listed = {
        "ann": [ANN.id, ANN_LAPTOP.id],
        "bob": [BOB.id],
        "carol": [CAROL.id],
    }
    recipients = plan(STATES[0], listed)
    assert recipients.device_ids == {ANN_LAPTOP.id, BOB.id, CAROL.id}
    assert recipients.warnings == ()


def test_a_user_the_server_adds_to_the_member_list_gets_no_key() -> None:
    listed = {"ann": [ANN.id], "bob": [BOB.id], "carol": [CAROL.id], "eve": [EVE.id]}
    recipients = plan(STATES[0], listed)
    assert EVE.id not in recipients.device_ids
    assert any("eve is not a member" in w for w in recipients.warnings)


def test_a_device_the_server_adds_to_a_member_is_skipped() -> None:
    listed = {
        "bob": [BOB.id, MALLORY.id, EVE.id],
        "carol": [CAROL.id],
    }
    recipients = plan(STATES[0], listed)
    assert recipients.device_ids == {BOB.id, CAROL.id}
    assert any(f"{MALLORY.id} listed for bob: it is not certified" in w for w in recipients.warnings)  # fmt: skip
    assert any(f"{EVE.id} listed for bob: it is certified for eve" in w for w in recipients.warnings)  # fmt: skip


def test_revoked_devices_and_unreachable_members_are_reported() -> None:
    revoked = DIRECTORY.revoked(CAROL)
    recipients = client.plan_recipients(
        STATES[0],
        {"bob": [BOB.id], "carol": [CAROL.id]},
        revoked.lookup,
        self_user="ann",
        self_device=ANN.id,
    )
    assert recipients.device_ids == {BOB.id}
    assert any("it is revoked" in w for w in recipients.warnings)
    assert any("no device of carol" in w for w in recipients.warnings)


def test_a_non_member_cannot_send() -> None:
    with pytest.raises(ClientError, match="carol is not a member"):
        client.plan_recipients(
            STATES[3], {}, LOOKUP, self_user="carol", self_device=CAROL.id
        )


# --- rotation ---------------------------------------------------------------------------------


def shared_for(state: GroupState, recipients: Recipients) -> SharedSession:
    session = crypto.OutboundGroupSession.create(T0)
    return SharedSession.made_for(session, state, recipients)


BASE_LISTED = {"ann": [ANN.id], "bob": [BOB.id], "carol": [CAROL.id]}


def reason(
    shared: SharedSession | None,
    state: GroupState,
    recipients: Recipients,
    sent: int = 0,
    now: int = T0,
    policy: RotationPolicy | None = None,
) -> str | None:
    return client.rotation_reason(
        shared, sent=sent, state=state, recipients=recipients, now=now, policy=policy
    )


def test_rotation_defaults_follow_matrix() -> None:
    assert RotationPolicy() == RotationPolicy(max_messages=100, max_age_ms=604_800_000)


def test_rotation_keeps_a_session_while_nothing_changed() -> None:
    listed = {**BASE_LISTED, "dave": [DAVE.id]}
    recipients = plan(STATES[1], listed)
    shared = shared_for(STATES[1], recipients)
    assert reason(shared, STATES[1], recipients, sent=99, now=T0 + 6 * DAY) is None
    # A promotion or a rename changes no reader.
    assert STATES[2].admins != STATES[1].admins
    assert reason(shared, STATES[2], plan(STATES[2], listed)) is None


def test_rotation_reasons() -> None:
    recipients = plan(STATES[0], BASE_LISTED)
    shared = shared_for(STATES[0], recipients)
    assert (
        reason(None, STATES[0], recipients) == "there is no session for this group yet"
    )
    # membership
    grown = plan(STATES[1], {**BASE_LISTED, "dave": [DAVE.id]})
    assert "joined: dave" in (reason(shared, STATES[1], grown) or "")
    # a new device of a member
    laptop = plan(STATES[0], {**BASE_LISTED, "ann": [ANN.id, ANN_LAPTOP.id]})
    assert f"new: {ANN_LAPTOP.id}" in (reason(shared, STATES[0], laptop) or "")
    # a revocation: the device drops out of the recipients
    revoked = client.plan_recipients(
        STATES[0],
        BASE_LISTED,
        DIRECTORY.revoked(CAROL).lookup,
        self_user="ann",
        self_device=ANN.id,
    )
    assert f"revoked: {CAROL.id}" in (reason(shared, STATES[0], revoked) or "")
    # count and age
    assert "100 messages" in (reason(shared, STATES[0], recipients, sent=100) or "")
    week = T0 + 7 * DAY
    assert "older than 7 days" in (
        reason(shared, STATES[0], recipients, now=week) or ""
    )
    strict = RotationPolicy(max_messages=10, max_age_ms=DAY)
    assert reason(shared, STATES[0], recipients, sent=10, policy=strict)
    # a session of another group never serves this one
    other = replace(shared, group=proto.new_group_id(b"\x01" * 16))
    assert (
        reason(other, STATES[0], recipients) == "there is no session for this group yet"
    )


# --- room keys and group messages ---------------------------------------------------------------


def room_key(
    state: GroupState,
    session: crypto.OutboundGroupSession,
    entries: Sequence[proto.Signed] = (),
) -> proto.RoomKey:
    return proto.RoomKey(
        group=GROUP,
        session_id=session.session_id,
        session_key=session.session_key,
        head=state.head,
        entries=list(entries),
    )


def peer(dev: Dev, directory: Directory = DIRECTORY) -> Peer:
    found = directory.lookup(dev.id)
    assert found is not None
    return found


def payload(
    dev: Dev, head: proto.ChainHead, text: str = "hi", group: str = GROUP
) -> proto.GroupPayload:
    return proto.GroupPayload(
        sender_user=dev.user,
        sender_device=dev.id,
        group=group,
        message_id=bytes(16),
        sent_at=T0,
        head=head,
        content=proto.Text(text),
    )


def test_a_room_key_from_a_member_is_accepted() -> None:
    view = GroupView()
    view.update(CHAIN[:2], LOOKUP)
    session = crypto.OutboundGroupSession.create(T0)
    decision = client.accept_room_key(
        view, room_key(STATES[1], session), peer(BOB), LOOKUP
    )
    assert decision.verdict is Verdict.ACCEPT and decision.warnings == ()
    assert decision.session is not None
    assert decision.session.session_id == session.session_id
    assert decision.origin == client.SessionOrigin(
        GROUP, session.session_id, "bob", BOB.id
    )


def test_a_room_key_from_a_non_member_is_refused() -> None:
    view = GroupView()
    view.update(CHAIN[:2], LOOKUP)
    session = crypto.OutboundGroupSession.create(T0)
    decision = client.accept_room_key(
        view, room_key(STATES[1], session), peer(EVE), LOOKUP
    )
    assert decision.verdict is Verdict.DROP
    assert "eve, who is not a member" in decision.reason
    assert decision.session is None


def test_a_room_key_with_a_forked_head_is_refused() -> None:
    view = GroupView()
    view.update(CHAIN[:2], LOOKUP)
    other = STATES[0].apply(change(STATES[0], Action.ADD, "eve", ANN), LOOKUP)
    session = crypto.OutboundGroupSession.create(T0)
    decision = client.accept_room_key(view, room_key(other, session), peer(BOB), LOOKUP)
    assert decision.verdict is Verdict.DROP
    assert "different membership" in decision.reason and "entry 1" in decision.reason


def test_room_key_edge_cases() -> None:
    session = crypto.OutboundGroupSession.create(T0)
    key = room_key(STATES[1], session)
    # unknown group, nothing carried: fetch the chain first
    assert (
        client.accept_room_key(GroupView(), key, peer(BOB), LOOKUP).verdict
        is Verdict.DEFER
    )
    view = GroupView()
    view.update(CHAIN[:1], LOOKUP)
    # a sender unknown to our (older) state, but ahead of us: fetch, then decide
    ahead = room_key(STATES[1], session)
    assert (
        client.accept_room_key(view, ahead, peer(DAVE), LOOKUP).verdict is Verdict.DEFER
    )
    # a member ahead of us: keep the key, and fetch
    decision = client.accept_room_key(view, ahead, peer(BOB), LOOKUP)
    assert decision.verdict is Verdict.ACCEPT and decision.fetch
    # revoked sender, malformed key, a key that is not its session's
    revoked = peer(BOB, DIRECTORY.revoked(BOB))
    assert client.accept_room_key(view, key, revoked, LOOKUP).verdict is Verdict.DROP
    bad = msgspec.structs.replace(key, head=STATES[0].head, session_key="garbage")
    assert "malformed" in client.accept_room_key(view, bad, peer(BOB), LOOKUP).reason
    other = crypto.OutboundGroupSession.create(T0)
    swapped = msgspec.structs.replace(
        key, head=STATES[0].head, session_key=other.session_key
    )
    assert (
        "does not match"
        in client.accept_room_key(view, swapped, peer(BOB), LOOKUP).reason
    )


def test_bad_entries_with_a_room_key_are_reported() -> None:
    view = GroupView()
    view.update(CHAIN[:2], LOOKUP)
    bad = rogue(STATES[1], Action.ADD, "eve", BOB)
    session = crypto.OutboundGroupSession.create(T0)
    key = room_key(STATES[1], session, [bad])
    decision = client.accept_room_key(view, key, peer(BOB), LOOKUP)
    assert decision.verdict is Verdict.ACCEPT
    assert any("were refused" in w and "not an admin" in w for w in decision.warnings)
    assert view.state(GROUP) == STATES[1]


def test_a_withheld_removal_reaches_members_through_the_remover() -> None:
    # ann removes carol; the server withholds entry 3 from bob.  ann's new room key
    # carries it, so bob's client learns of it and rotates its own session.
    ann_view, bob_view = GroupView(), GroupView()
    ann_view.update(CHAIN[:4], LOOKUP)
    bob_view.update(CHAIN[:3], LOOKUP)
    bob_state = bob_view.state(GROUP)
    assert bob_state is not None
    listed = {"ann": [ANN.id], "bob": [BOB.id], "carol": [CAROL.id], "dave": [DAVE.id]}

    def bob_plan(state: GroupState) -> Recipients:
        return client.plan_recipients(
            state, listed, LOOKUP, self_user="bob", self_device=BOB.id
        )

    bob_shared = shared_for(bob_state, bob_plan(bob_state))
    ann_state = ann_view.state(GROUP)
    assert ann_state is not None
    ann_recipients = client.plan_recipients(
        ann_state, listed, LOOKUP, self_user="ann", self_device=ANN.id
    )
    assert CAROL.id not in ann_recipients.device_ids
    session = crypto.OutboundGroupSession.create(T0)
    carried = ann_view.entries(GROUP, after=bob_state.seq)
    key = room_key(ann_state, session, carried)
    decision = client.accept_room_key(bob_view, key, peer(ANN), LOOKUP)
    assert decision.verdict is Verdict.ACCEPT and not decision.fetch
    now = bob_view.state(GROUP)
    assert now == STATES[3]
    assert "left: carol" in (
        client.rotation_reason(
            bob_shared, sent=1, state=now, recipients=bob_plan(now), now=T0
        )
        or ""
    )
    assert CAROL.id not in bob_plan(now).device_ids


def test_group_messages_are_checked_against_the_key_and_the_chain() -> None:
    view = GroupView()
    view.update(CHAIN[:4], LOOKUP)  # carol removed at entry 3
    bob = client.SessionOrigin(GROUP, "s" * 43, "bob", BOB.id)
    ok = client.check_group_message(view, bob, payload(BOB, STATES[3].head), LOOKUP)
    assert ok == client.MessageDecision(Verdict.ACCEPT)
    assert not ok.fetch
    # a lagging sender is fine
    lagging = client.check_group_message(
        view, bob, payload(BOB, STATES[1].head), LOOKUP
    )
    assert lagging.verdict is Verdict.ACCEPT and lagging.warnings == ()
    # a sender ahead of us: show it, fetch entries
    ahead = client.check_group_message(view, bob, payload(BOB, STATES[5].head), LOOKUP)
    assert ahead.verdict is Verdict.ACCEPT and ahead.fetch


def test_a_forked_head_inside_a_message_warns() -> None:
    view = GroupView()
    view.update(CHAIN[:2], LOOKUP)
    other = STATES[0].apply(change(STATES[0], Action.ADD, "eve", ANN), LOOKUP)
    bob = client.SessionOrigin(GROUP, "s" * 43, "bob", BOB.id)
    decision = client.check_group_message(view, bob, payload(BOB, other.head), LOOKUP)
    assert decision.verdict is Verdict.ACCEPT
    assert len(decision.warnings) == 1
    assert "server may be showing members different chains" in decision.warnings[0]


def test_group_messages_that_must_be_dropped() -> None:
    view = GroupView()
    view.update(CHAIN[:4], LOOKUP)
    head = STATES[3].head
    carol = client.SessionOrigin(GROUP, "s" * 43, "carol", CAROL.id)
    removed = client.check_group_message(view, carol, payload(CAROL, head), LOOKUP)
    assert removed.verdict is Verdict.DROP and "no longer a member" in removed.reason
    bob = client.SessionOrigin(GROUP, "s" * 43, "bob", BOB.id)
    other_group = proto.new_group_id(b"\x02" * 16)
    cases = [
        (bob, payload(BOB, head, group=other_group), "another group"),
        (bob, payload(CAROL, head), "not the device that shared the key"),
        (bob, payload(ANN, head), "not the device that shared the key"),
    ]
    for origin, message, why in cases:
        decision = client.check_group_message(view, origin, message, LOOKUP)
        assert decision.verdict is Verdict.DROP and why in decision.reason
    revoked = DIRECTORY.revoked(BOB).lookup
    decision = client.check_group_message(view, bob, payload(BOB, head), revoked)
    assert decision.verdict is Verdict.DROP and "revoked" in decision.reason
    unknown = client.SessionOrigin(other_group, "s" * 43, "bob", BOB.id)
    message = payload(BOB, head, group=other_group)
    assert (
        client.check_group_message(view, unknown, message, LOOKUP).verdict
        is Verdict.DEFER
    )
    newer = client.SessionOrigin(GROUP, "s" * 43, "dave", DAVE.id)
    early = GroupView()
    early.update(CHAIN[:1], LOOKUP)
    message = payload(DAVE, STATES[1].head)
    assert (
        client.check_group_message(early, newer, message, LOOKUP).verdict
        is Verdict.DEFER
    )


def test_a_removed_member_cannot_read_what_is_sent_after_removal() -> None:
    # The whole path with real Megolm: ann's session before the removal, then a new one.
    listed = {"ann": [ANN.id], "bob": [BOB.id], "carol": [CAROL.id], "dave": [DAVE.id]}
    before = STATES[2]
    recipients = plan(before, listed)
    assert CAROL.id in recipients.device_ids
    old = crypto.OutboundGroupSession.create(T0)
    carol_view = GroupView()
    carol_view.update(CHAIN[:3], LOOKUP)
    got = client.accept_room_key(carol_view, room_key(before, old), peer(ANN), LOOKUP)
    assert got.session is not None
    carol_session = got.session
    assert carol_session.decrypt(old.encrypt(b"before")).plaintext == b"before"

    after = STATES[3]  # carol removed
    shared = SharedSession.made_for(old, before, recipients)
    new_recipients = plan(after, listed)
    assert client.rotation_reason(
        shared, sent=old.message_index, state=after, recipients=new_recipients, now=T0
    )
    assert CAROL.id not in new_recipients.device_ids
    assert any("carol is not a member" in w for w in new_recipients.warnings)
    new = crypto.OutboundGroupSession.create(T0 + 1)
    # bob, still a member, receives the new key before anything is sent in it.
    bob_view = GroupView()
    bob_view.update(CHAIN[:4], LOOKUP)
    bob_got = client.accept_room_key(bob_view, room_key(after, new), peer(ANN), LOOKUP)
    assert bob_got.session is not None
    secret = new.encrypt(b"after the removal")
    assert bob_got.session.decrypt(secret).plaintext == b"after the removal"
    # carol's old session cannot open it, and no key of the new session reaches her.
    with pytest.raises(CryptoError):
        carol_session.decrypt(secret)


# --- properties ---------------------------------------------------------------------------------

CORRUPT = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@CORRUPT
@given(data=st.data())
def test_any_single_corrupted_byte_is_refused(data: st.DataObject) -> None:
    position = data.draw(st.integers(min_value=0, max_value=len(CHAIN) - 1))
    entry = CHAIN[position]
    blob = entry.body + entry.signature
    index = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    mask = data.draw(st.integers(min_value=1, max_value=255))
    corrupted = bytearray(blob)
    corrupted[index] ^= mask
    split = len(entry.body)
    tampered = proto.Signed(bytes(corrupted[:split]), bytes(corrupted[split:]))
    entries = [*CHAIN[:position], tampered, *CHAIN[position + 1 :]]
    with pytest.raises(GroupChainError):
        client.verify_chain(entries, LOOKUP)
    view = GroupView()
    view.update(CHAIN, LOOKUP)
    with pytest.raises(GroupChainError):
        view.update(entries, LOOKUP)


POOL = [ANN, ANN_LAPTOP, BOB, CAROL, DAVE, EVE]
USERS = sorted({dev.user for dev in POOL})


class GroupHistory(RuleBasedStateMachine):
    """Random histories of allowed actions, by random devices of their authors.

    The model is two sets and a name; the chain must verify, in one go and step by step,
    to exactly the model, and what the rules forbid must be refused by the author's own
    client and by every verifier.
    """

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[proto.Signed] = []
        self.state: GroupState | None = None
        self.view = GroupView()
        self.members: set[str] = set()
        self.admins: set[str] = set()
        self.name = ""

    @initialize(creator=st.sampled_from(POOL), others=st.sets(st.sampled_from(USERS)))
    def create(self, creator: Dev, others: set[str]) -> None:
        made = client.create_group(
            GROUP, "g", others, author=creator.user, author_device=creator.id, at=T0
        )
        self.entries = [sign(made, creator)]
        self.members = others | {creator.user}
        self.admins = {creator.user}
        self.name = "g"
        self.state = self.view.update(self.entries, LOOKUP)

    def _do(
        self,
        by: Dev,
        action: proto.GroupAction,
        subject: str,
        name: str | None = None,
    ) -> None:
        assert self.state is not None
        entry = change(self.state, action, subject, by, name)
        self.entries.append(entry)
        self.state = self.state.apply(entry, LOOKUP)
        assert self.view.update([entry], LOOKUP) == self.state

    def _device_of(self, data: st.DataObject, users: set[str]) -> Dev:
        devices = [dev for dev in POOL if dev.user in users]
        return data.draw(st.sampled_from(devices))

    @precondition(lambda self: bool(self.admins and set(USERS) - self.members))
    @rule(data=st.data())
    def add(self, data: st.DataObject) -> None:
        subject = data.draw(st.sampled_from(sorted(set(USERS) - self.members)))
        self._do(self._device_of(data, self.admins), Action.ADD, subject)
        self.members.add(subject)

    @precondition(lambda self: bool(len(self.members) > 1 and self.admins))
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        by = self._device_of(data, self.admins)
        subject = data.draw(st.sampled_from(sorted(self.members - {by.user})))
        self._do(by, Action.REMOVE, subject)
        self.members.discard(subject)
        self.admins.discard(subject)

    @precondition(lambda self: bool(self.admins and self.members - self.admins))
    @rule(data=st.data())
    def promote(self, data: st.DataObject) -> None:
        subject = data.draw(st.sampled_from(sorted(self.members - self.admins)))
        self._do(self._device_of(data, self.admins), Action.PROMOTE, subject)
        self.admins.add(subject)

    @precondition(lambda self: len(self.admins) > 1)
    @rule(data=st.data())
    def demote(self, data: st.DataObject) -> None:
        subject = data.draw(st.sampled_from(sorted(self.admins)))
        self._do(self._device_of(data, self.admins), Action.DEMOTE, subject)
        self.admins.discard(subject)

    @precondition(lambda self: bool(self.members))
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        # The last admin stays while others are left; the last member may always go.
        leaving = {
            user
            for user in self.members
            if user not in self.admins or len(self.admins) > 1 or self.members == {user}
        }
        if not leaving:
            return
        by = self._device_of(data, leaving)
        self._do(by, Action.LEAVE, by.user)
        self.members.discard(by.user)
        self.admins.discard(by.user)

    @precondition(lambda self: bool(self.admins))
    @rule(data=st.data(), name=st.text(max_size=12))
    def rename(self, data: st.DataObject, name: str) -> None:
        by = self._device_of(data, self.admins)
        self._do(by, Action.RENAME, by.user, name)
        self.name = name

    @precondition(lambda self: bool(self.members - self.admins))
    @rule(data=st.data())
    def a_non_admin_is_refused(self, data: st.DataObject) -> None:
        assert self.state is not None
        by = self._device_of(data, self.members - self.admins)
        subject = data.draw(st.sampled_from(sorted(set(USERS) - {by.user})))
        action = Action.REMOVE if subject in self.members else Action.ADD
        with pytest.raises(ClientError, match="not an admin"):
            client.next_change(
                self.state, action, subject, author=by.user, author_device=by.id, at=T0
            )
        with pytest.raises(GroupChainError, match="not an admin"):
            self.state.apply(rogue(self.state, action, subject, by), LOOKUP)

    @rule(cut=st.integers(min_value=1, max_value=50))
    def repeats_change_nothing_and_prefixes_are_rollbacks(self, cut: int) -> None:
        assert self.state is not None
        assert self.view.update(self.entries, LOOKUP) == self.state
        prefix = self.entries[: min(cut, len(self.entries))]
        if len(prefix) < len(self.entries):
            with pytest.raises(GroupRollbackError):
                self.view.update(prefix, LOOKUP)
        assert self.view.update(prefix, LOOKUP, stale_ok=True) == self.state

    @invariant()
    def the_chain_matches_the_model(self) -> None:
        if self.state is None:
            return
        assert self.state.members == self.members
        assert self.state.admins == self.admins
        assert self.state.name == self.name
        assert self.state.seq == len(self.entries) - 1
        assert client.verify_chain(self.entries, LOOKUP) == self.state
        assert self.view.state(GROUP) == self.state
        # A group with anyone left in it always has an admin.
        assert bool(self.admins) == bool(self.members)


GroupHistory.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_group_history = GroupHistory.TestCase
