"""Groups, decided without I/O: the membership chain, forks and rollbacks, key sharing.

The driver fetches chain entries, directory entries and room keys and moves frames; this
module decides what to believe and to whom a group key may go.  Rules:

1. A group's membership is what its verified chain says, and nothing else: not the
   server's member list, not the directory.  ``_step`` is the one place an entry is
   believed.  It checks, in this order: the body decodes; its author device is certified
   by the organisation's authority *for the author user* (the caller's ``lookup``); that
   device's Ed25519 key signed exactly these bytes under ``DOMAIN_GROUP_CHANGE``; the
   entry continues the chain (same group, seq + 1, ``prev`` = hash of the entry before);
   the author may do the action in the state before (``_RULES``); and the snapshot the
   entry carries is exactly the state before with the action applied.
2. A device revoked after it signed an entry does not break its group: the entry stands
   if a later entry, signed by a device in good standing, builds on it (that entry's hash
   link commits to all before it).  An entry by a revoked device that nothing later
   vouches for is refused (``_verify_batch``); ``GroupState.apply`` refuses it outright.
3. What a device verified it never forgets and never rewinds (``GroupView``): a different
   entry at a seq it holds is a fork, a chain offered as current that ends before its head
   is a rollback; both are refused with their own error.  Entries it holds already are
   accepted again silently (at-least-once delivery repeats things).
4. Keys follow the verified state: a session key goes only to certified, unrevoked devices
   of members (``plan_recipients``), and a sending device replaces its session when the
   members or their devices differ from those it was shared with, or by count and age
   (``rotation_reason``).
5. A room key or a group message is believed only from a device of a member per our chain,
   and the chain head inside it is compared with ours (``accept_room_key``,
   ``check_group_message``): a different entry at the same seq is a fork, a newer head
   means we must fetch entries before deciding.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from strongroom import crypto, proto
from strongroom.errors import (
    ClientError,
    CryptoError,
    RemoteProtocolError,
    SignatureError,
)

from ._store import Peer

__all__ = [
    "DAY_MS",
    "DeviceLookup",
    "GroupChainError",
    "GroupForkError",
    "GroupRollbackError",
    "GroupState",
    "GroupView",
    "HeadCheck",
    "KeyDecision",
    "MessageDecision",
    "Recipients",
    "RotationPolicy",
    "SessionOrigin",
    "SharedSession",
    "Verdict",
    "accept_room_key",
    "check_group_message",
    "create_group",
    "next_change",
    "plan_recipients",
    "rotation_reason",
    "sign_change",
    "verify_chain",
]

DAY_MS = 86_400_000

#: The certified device with this id (certificate verified under the pinned authority,
#: ``revoked`` set if a verified revocation names it), or ``None`` if no verified
#: certificate is known.  The caller's own device must be found too: it signs entries.
DeviceLookup = Callable[[str], Peer | None]

Action = proto.GroupAction


# --- errors -----------------------------------------------------------------------------


class GroupChainError(CryptoError):
    """A group's membership chain does not verify: an entry is forged, out of place, or
    does something its author may not do.

    Nothing from the refused entry on was believed; the group stays at its last verified
    entry.  Show the message to the user (the server, or a member's device, is tampering
    with the group) and share no key according to the refused entries.
    """

    def __init__(
        self, message: str, group: str | None = None, seq: int | None = None
    ) -> None:
        super().__init__(message)
        self.group = group
        self.seq = seq


class GroupForkError(GroupChainError):
    """Two validly signed, different entries claim the same place in a group's chain.

    An honest server accepts one entry per seq and refuses the other, so a fork means the
    server shows members different chains (or an admin device signs two histories).  Keep
    the chain verified already and warn the user.
    """


class GroupRollbackError(GroupChainError):
    """A chain offered as current ends before the head this device verified already.

    Someone, usually the server, replays an old membership (say, one in which a removed
    member is still there).  Keep the newer chain and warn the user.
    """


def _refuse(group: str | None, seq: int | None, reason: str) -> GroupChainError:
    where = f"group {group[:8]}…" if group else "group chain"
    entry = "" if seq is None else f", entry {seq}"
    return GroupChainError(f"{where}{entry}: {reason}", group, seq)


# --- the rules ----------------------------------------------------------------------------


class _Rule(NamedTuple):
    """Who may do an action to whom, and what it does to the members and admins."""

    admin_only: bool
    subject: str  # what the subject must be, in words, for the error message
    allowed: Callable[[GroupState, str, str], bool]  # (state, author, subject)
    members: Callable[[frozenset[str], str], frozenset[str]]
    admins: Callable[[frozenset[str], str], frozenset[str]]


def _same(users: frozenset[str], _subject: str) -> frozenset[str]:
    return users


def _plus(users: frozenset[str], subject: str) -> frozenset[str]:
    return users | {subject}


def _minus(users: frozenset[str], subject: str) -> frozenset[str]:
    return users - {subject}


#: Every action but ``create`` (which only starts a chain), as a table.  The author of any
#: entry must be a member of the state before it.
_RULES: dict[proto.GroupAction, _Rule] = {
    Action.ADD: _Rule(
        True,
        "someone not yet a member",
        lambda s, a, u: u not in s.members,
        _plus,
        _same,
    ),
    Action.REMOVE: _Rule(
        True,
        "another member (to remove yourself, leave)",
        lambda s, a, u: u in s.members and u != a,
        _minus,
        _minus,
    ),
    Action.PROMOTE: _Rule(
        True,
        "a member who is not an admin",
        lambda s, a, u: u in s.members and u not in s.admins,
        _same,
        _plus,
    ),
    Action.DEMOTE: _Rule(
        True,
        "an admin other than the last one",
        lambda s, a, u: u in s.admins and len(s.admins) > 1,
        _same,
        _minus,
    ),
    Action.LEAVE: _Rule(
        False,
        "the author, and the last admin only once nobody else is left",
        lambda s, a, u: u == a and (s.admins != {a} or s.members == {a}),
        _minus,
        _minus,
    ),
    Action.RENAME: _Rule(True, "the author", lambda s, a, u: u == a, _same, _same),
}


@dataclass(frozen=True)
class GroupState:
    """A group as its verified chain says it is after entry ``seq``."""

    group: str
    seq: int
    head_hash: bytes
    name: str
    members: frozenset[str]
    admins: frozenset[str]

    @property
    def head(self) -> proto.ChainHead:
        return proto.ChainHead(self.seq, self.head_hash)

    @classmethod
    def create(cls, entry: proto.Signed, lookup: DeviceLookup) -> GroupState:
        """The state after a group's first entry.  Raises ``GroupChainError``."""
        return _strict(None, entry, lookup)

    def apply(self, entry: proto.Signed, lookup: DeviceLookup) -> GroupState:
        """The state after one more entry.  Raises ``GroupChainError`` (rule 1).

        An entry signed by a revoked device is refused here: on its own it is the end of
        a chain (rule 2).
        """
        return _strict(self, entry, lookup)


def _strict(
    state: GroupState | None, entry: proto.Signed, lookup: DeviceLookup
) -> GroupState:
    after, revoked = _step(state, entry, lookup)
    if revoked is not None:
        raise _refuse(after.group, after.seq, _revoked_reason(revoked))
    return after


def _revoked_reason(device: str) -> str:
    return (
        f"its author device {device} has been revoked, and no later entry from a device "
        "in good standing vouches for it"
    )


def _names(users: Iterable[str]) -> str:
    return ", ".join(sorted(users)) or "nobody"


def _snapshot_problem(
    what: str, claimed: list[str], expected: frozenset[str]
) -> str | None:
    if claimed == sorted(expected):
        return None
    extra, missing = set(claimed) - expected, expected - set(claimed)
    if not extra and not missing:
        return f"its {what} list is not sorted and free of duplicates"
    return (
        f"its {what} list does not follow from the action (it adds {_names(extra)}, "
        f"drops {_names(missing)})"
    )


def _step(
    state: GroupState | None, entry: proto.Signed, lookup: DeviceLookup
) -> tuple[GroupState, str | None]:
    """Rule 1 for one entry: the state after it, and its author device if now revoked."""
    group = None if state is None else state.group
    try:
        change = proto.decode_group_change(entry.body)
    except RemoteProtocolError as exc:
        seq = None if state is None else state.seq + 1
        raise _refuse(group, seq, "it does not decode as a group change") from exc

    def refuse(reason: str) -> GroupChainError:
        return _refuse(change.group, change.seq, reason)

    # Who signed it: a certified device of the author, over exactly these bytes.
    device = change.author_device
    peer = lookup(device)
    if peer is None:
        raise refuse(f"its author device {device} is not certified by the organisation")
    if peer.user != change.author:
        raise refuse(
            f"its author device {device} is certified for {peer.user}, "
            f"not for {change.author}"
        )
    if peer.device_id != device or crypto.device_id_for(peer.ed25519) != device:
        raise refuse(f"the key looked up for device {device} is not that device's key")
    try:
        crypto.verify_ed25519(
            peer.ed25519, proto.group_change_signing_input(entry.body), entry.signature
        )
    except SignatureError as exc:
        raise refuse(
            f"its signature is not by its author device {device} (forged or altered)"
        ) from exc

    # Where it goes: the next place in this chain.
    if state is None:
        if change.seq != 0 or change.action is not Action.CREATE:
            raise refuse("a chain must start with the group's creation, at entry 0")
        if change.prev != proto.GENESIS_PREV:
            raise refuse("the creation of a group links to nothing before it")
        members = frozenset(change.members)
        admins = frozenset({change.author})
        if change.subject != change.author or change.author not in members:
            raise refuse("the creator of a group must be its subject and a member")
    else:
        if change.group != state.group:
            raise refuse(f"it belongs to another group ({change.group[:8]}…)")
        if change.seq != state.seq + 1:
            raise refuse(
                f"entry {state.seq + 1} was expected here (entries are missing, "
                "repeated or out of order)"
            )
        if change.prev != state.head_hash:
            raise refuse(
                f"it does not link to entry {state.seq} (its prev hash differs)"
            )
        if change.action is Action.CREATE:
            raise refuse("a group is created once, at entry 0")
        rule = _RULES[change.action]
        author, subject = change.author, change.subject
        if author not in state.members:
            raise refuse(f"its author {author} is not a member of the group")
        if rule.admin_only and author not in state.admins:
            raise refuse(
                f"{author} is not an admin, and only admins may {change.action}"
            )
        if not rule.allowed(state, author, subject):
            raise refuse(
                f"{change.action} {subject}: the subject must be {rule.subject}"
            )
        members = rule.members(state.members, subject)
        admins = rule.admins(state.admins, subject)

    # What it claims: the snapshot must be exactly the computed one, in canonical order.
    for what, claimed, expected in (
        ("member", change.members, members),
        ("admin", change.admins, admins),
    ):
        problem = _snapshot_problem(what, claimed, expected)
        if problem is not None:
            raise refuse(problem)
    if (
        state is not None
        and change.action is not Action.RENAME
        and change.name != state.name
    ):
        raise refuse("only a rename may change the group's name")
    after = GroupState(
        change.group, change.seq, proto.entry_hash(entry), change.name, members, admins
    )
    return after, (device if peer.revoked else None)


def _verify_batch(
    state: GroupState | None,
    entries: Sequence[proto.Signed],
    lookup: DeviceLookup,
    *,
    keep_revoked: bool = False,
) -> tuple[list[GroupState], GroupChainError | None]:
    """The states after each entry that stands, and the first problem (rule 2)."""
    states: list[GroupState] = []
    error: GroupChainError | None = None
    unvouched: tuple[int, str] | None = None  # first trailing entry by a revoked device
    for entry in entries:
        try:
            state, revoked = _step(state, entry, lookup)
        except GroupChainError as exc:
            error = exc
            break
        states.append(state)
        if revoked is None or keep_revoked:
            unvouched = None
        elif unvouched is None:
            unvouched = (len(states) - 1, revoked)
    if unvouched is not None:
        index, device = unvouched
        refused = states[index]
        del states[index:]
        error = _refuse(refused.group, refused.seq, _revoked_reason(device))
    return states, error


def verify_chain(entries: Sequence[proto.Signed], lookup: DeviceLookup) -> GroupState:
    """Verify a whole chain, from its creation; the state after its last entry.

    Raises ``GroupChainError`` naming the first entry that does not verify, and why.
    """
    states, error = _verify_batch(None, entries, lookup)
    if error is not None:
        raise error
    if not states:
        raise _refuse(None, None, "a chain has at least its creation entry")
    return states[-1]


# --- authoring ----------------------------------------------------------------------------


def create_group(
    group: str,
    name: str,
    members: Iterable[str],
    *,
    author: str,
    author_device: str,
    at: int,
) -> proto.GroupChange:
    """The entry that creates ``group`` with ``members`` (the author is added, as admin).

    Raises ``ClientError`` if it breaks a wire limit (ids, member count, name length).
    """
    snapshot = sorted(set(members) | {author})
    return _checked(
        proto.GroupChange(
            group=group,
            seq=0,
            prev=proto.GENESIS_PREV,
            action=Action.CREATE,
            subject=author,
            members=snapshot,
            admins=[author],
            name=name,
            author=author,
            author_device=author_device,
            at=at,
        )
    )


def next_change(
    state: GroupState,
    action: proto.GroupAction,
    subject: str,
    *,
    author: str,
    author_device: str,
    at: int,
    name: str | None = None,
) -> proto.GroupChange:
    """The entry that does ``action`` to ``subject`` after ``state`` (``name``: rename).

    Raises ``ClientError`` if the rules or the wire limits do not allow it, so nothing
    unverifiable is ever signed.
    """
    if action is Action.CREATE:
        raise ClientError("a group is created once; use create_group")
    rule = _RULES[action]
    if author not in state.members:
        raise ClientError(f"{author} is not a member of the group")
    if rule.admin_only and author not in state.admins:
        raise ClientError(f"{author} is not an admin, and only admins may {action}")
    if not rule.allowed(state, author, subject):
        raise ClientError(f"cannot {action} {subject}: it must be {rule.subject}")
    if (action is Action.RENAME) != (name is not None):
        raise ClientError("a new name goes with a rename, and only with it")
    return _checked(
        proto.GroupChange(
            group=state.group,
            seq=state.seq + 1,
            prev=state.head_hash,
            action=action,
            subject=subject,
            members=sorted(rule.members(state.members, subject)),
            admins=sorted(rule.admins(state.admins, subject)),
            name=state.name if name is None else name,
            author=author,
            author_device=author_device,
            at=at,
        )
    )


def _checked(change: proto.GroupChange) -> proto.GroupChange:
    # msgspec validates on decoding only: decode what we would send, as verifiers will.
    try:
        return proto.decode_group_change(proto.encode(change))
    except RemoteProtocolError as exc:
        raise ClientError(
            "this group change breaks a limit of the wire format (user or device "
            f"ids, at most {proto.MAX_GROUP_MEMBERS} members, names of at most "
            f"{proto.MAX_GROUP_NAME} characters)"
        ) from exc


def sign_change(
    change: proto.GroupChange, account: crypto.DeviceAccount
) -> proto.Signed:
    """The entry as it travels: its bytes signed by this device's Ed25519 key."""
    body = proto.encode(change)
    return proto.Signed(body, account.sign(proto.group_change_signing_input(body)))


# --- what we verified, kept -------------------------------------------------------------------


class HeadCheck(enum.Enum):
    """How a chain head someone else holds relates to ours (rule 5)."""

    SAME = "same"  # the same entry at the same seq
    OLDER = "older"  # an entry we hold: they have not seen our newer entries yet
    NEWER = "newer"  # past our head: fetch the entries before deciding anything
    FORK = "fork"  # a different entry at a seq we hold: someone was shown another chain
    UNKNOWN = "unknown"  # we hold no chain for this group


class GroupView:
    """Every chain this device verified, per group: never forgotten, never rewound (rule 3)."""

    def __init__(self) -> None:
        self._entries: dict[str, list[proto.Signed]] = {}
        self._states: dict[str, list[GroupState]] = {}

    def groups(self) -> list[str]:
        return sorted(self._states)

    def state(self, group: str) -> GroupState | None:
        states = self._states.get(group)
        return states[-1] if states else None

    def state_at(self, group: str, seq: int) -> GroupState | None:
        states = self._states.get(group, [])
        return states[seq] if 0 <= seq < len(states) else None

    def entries(
        self, group: str, after: int = -1, max_bytes: int | None = None
    ) -> list[proto.Signed]:
        """Our verified entries past ``after``, oldest first, within ``max_bytes``.

        What a ``RoomKey`` carries for a recipient whose head is ``after``; a recipient
        who needs more than fits fetches the rest from the server (they verify anyway).
        """
        chosen: list[proto.Signed] = []
        size = 0
        for entry in self._entries.get(group, [])[after + 1 :]:
            size += len(entry.body) + len(entry.signature)
            if max_bytes is not None and size > max_bytes:
                break
            chosen.append(entry)
        return chosen

    def restore(
        self, entries: Sequence[proto.Signed], lookup: DeviceLookup
    ) -> GroupState:
        """Load one group's chain as this device stored it (``entries(group)``).

        Verified again in full, except that entries by devices revoked since are kept:
        they were accepted before the revocation was known, and rule 3 never rewinds.
        Raises ``GroupChainError`` if the stored chain does not verify.
        """
        states, error = _verify_batch(None, entries, lookup, keep_revoked=True)
        if error is not None:
            raise error
        if not states:
            raise _refuse(None, None, "a stored chain has at least its creation entry")
        group = states[-1].group
        self._entries[group] = list(entries)
        self._states[group] = states
        return states[-1]

    def update(
        self,
        entries: Sequence[proto.Signed],
        lookup: DeviceLookup,
        *,
        stale_ok: bool = False,
    ) -> GroupState:
        """Verify ``entries`` (one group, consecutive, oldest first) against what we hold.

        Entries we hold already must be the very same; new entries must continue our
        head.  What verifies is kept even when a later entry in the batch fails.  Pass
        ``stale_ok`` when the entries do not claim to be the whole current chain (a
        member's ``RoomKey``); otherwise a batch that ends before our head is a rollback.

        Raises ``GroupForkError``, ``GroupRollbackError`` or ``GroupChainError``.
        """
        if not entries:
            raise _refuse(None, None, "no entries were offered")
        try:
            group = proto.decode_group_change(entries[0].body).group
        except RemoteProtocolError as exc:
            raise _refuse(None, None, "its first entry does not decode") from exc
        held = self._states.get(group)
        if held is None:
            states, error = _verify_batch(None, entries, lookup)
            if states:
                self._entries[group] = list(entries[: len(states)])
                self._states[group] = states
            if error is not None:
                raise error
            return states[-1]

        head = held[-1]
        fresh = self._skip_known(group, held, entries, lookup)
        if not fresh:
            offered = _last_seq(entries)
            if offered < head.seq and not stale_ok:
                raise GroupRollbackError(
                    f"group {group[:8]}…: the chain offered ends at entry {offered}, but "
                    f"entry {head.seq} is verified already; refusing to go back to an older "
                    "membership",
                    group,
                    offered,
                )
            return head
        states, error = _verify_batch(head, fresh, lookup)
        self._entries[group].extend(fresh[: len(states)])
        held.extend(states)
        if error is not None:
            raise error
        return held[-1]

    def _skip_known(
        self,
        group: str,
        held: list[GroupState],
        entries: Sequence[proto.Signed],
        lookup: DeviceLookup,
    ) -> Sequence[proto.Signed]:
        """The entries past our head, after checking those we hold already are ours."""
        head = held[-1].seq
        for index, entry in enumerate(entries):
            try:
                change = proto.decode_group_change(entry.body)
            except RemoteProtocolError:
                return entries[index:]  # _step names it
            if change.group != group or change.seq > head:
                return entries[index:]  # _step refuses another group, or continues
            if entry == self._entries[group][change.seq]:
                continue
            # Other bytes where we hold an entry: forged or corrupted (refused as such),
            # the same body under another valid signature (harmless), or a fork.
            before = held[change.seq - 1] if change.seq > 0 else None
            _step(before, entry, lookup)
            if proto.entry_hash(entry) == held[change.seq].head_hash:
                continue
            raise GroupForkError(
                f"group {group[:8]}…, entry {change.seq}: a different, validly signed "
                "entry is already verified at this place; the server is showing members "
                "different chains",
                group,
                change.seq,
            )
        return []

    def check_head(self, group: str, head: proto.ChainHead) -> HeadCheck:
        """How ``head`` (from a room key or a group message) relates to our chain."""
        states = self._states.get(group)
        if not states:
            return HeadCheck.UNKNOWN
        if head.seq >= len(states):
            return HeadCheck.NEWER
        if states[head.seq].head_hash != head.hash:
            return HeadCheck.FORK
        return HeadCheck.SAME if head.seq == len(states) - 1 else HeadCheck.OLDER


def _last_seq(entries: Sequence[proto.Signed]) -> int:
    try:
        return proto.decode_group_change(entries[-1].body).seq
    except RemoteProtocolError:
        return -1


# --- who gets the key, and when it is replaced ------------------------------------------------


@dataclass(frozen=True)
class Recipients:
    """The devices a session key may go to, and what was skipped on the way (rule 4)."""

    devices: tuple[Peer, ...]
    warnings: tuple[str, ...] = ()

    @property
    def device_ids(self) -> frozenset[str]:
        return frozenset(peer.device_id for peer in self.devices)


def plan_recipients(
    state: GroupState,
    listed: Mapping[str, Iterable[str]],
    lookup: DeviceLookup,
    *,
    self_user: str,
    self_device: str,
) -> Recipients:
    """The certified, unrevoked devices of the members, other than this one.

    ``listed`` is what the server says each user's devices are; only the verified state
    says who the members are, and only ``lookup`` says a device is certified and whose it
    is.  A device listed for a non-member, an uncertified device, a device certified for
    somebody else and a revoked device are skipped with a warning.

    Raises ``ClientError`` if ``self_user`` is not a member (we may not send at all).
    """
    if self_user not in state.members:
        raise ClientError(f"{self_user} is not a member of group {state.name!r}")
    devices: list[Peer] = []
    warnings: list[str] = []
    for user in sorted(listed):
        if user not in state.members:
            for device in sorted(listed[user]):
                warnings.append(
                    f"skipped device {device} of {user}: {user} is not a member of "
                    f"group {state.name!r} per its signed membership"
                )
            continue
        for device in sorted(set(listed[user])):
            if device == self_device:
                continue
            peer = lookup(device)
            if peer is None:
                warnings.append(
                    f"skipped device {device} listed for {user}: it is not certified "
                    "by the organisation"
                )
            elif peer.user != user:
                warnings.append(
                    f"skipped device {device} listed for {user}: it is certified for "
                    f"{peer.user}"
                )
            elif peer.revoked:
                warnings.append(f"skipped device {device} of {user}: it is revoked")
            else:
                devices.append(peer)
    reached = {peer.user for peer in devices} | {self_user}
    for user in sorted(state.members - reached):
        warnings.append(f"no device of {user} can receive group {state.name!r}'s key")
    return Recipients(tuple(devices), tuple(warnings))


@dataclass(frozen=True)
class RotationPolicy:
    """When a sending device replaces its Megolm session for a group by count or age.

    The defaults are Matrix's recommended ``m.room.encryption`` defaults
    (``rotation_period_msgs`` 100, ``rotation_period_ms`` 604800000, a week).  Membership
    and device changes replace the session whatever these say.
    """

    max_messages: int = 100
    max_age_ms: int = 7 * DAY_MS


@dataclass(frozen=True)
class SharedSession:
    """What a sending device remembers of the audience its current session was made for."""

    group: str
    session_id: str
    created_at: int
    members: frozenset[str]
    devices: frozenset[str]

    @classmethod
    def made_for(
        cls,
        session: crypto.OutboundGroupSession,
        state: GroupState,
        recipients: Recipients,
    ) -> SharedSession:
        return cls(
            state.group,
            session.session_id,
            session.created_at,
            state.members,
            recipients.device_ids,
        )


def rotation_reason(
    shared: SharedSession | None,
    *,
    sent: int,
    state: GroupState,
    recipients: Recipients,
    now: int,
    policy: RotationPolicy | None = None,
) -> str | None:
    """Why the session must be replaced before the next message, or ``None`` to keep it.

    ``sent`` is the session's message index (messages encrypted so far), ``recipients``
    the current ``plan_recipients``: a device revoked since the session was shared is
    missing from it, so a revocation replaces the session too.
    """
    policy = policy or RotationPolicy()
    if shared is None or shared.group != state.group:
        return "there is no session for this group yet"
    if shared.members != state.members:
        joined, left = state.members - shared.members, shared.members - state.members
        return f"the members changed (joined: {_names(joined)}; left: {_names(left)})"
    if shared.devices != recipients.device_ids:
        new = recipients.device_ids - shared.devices
        gone = shared.devices - recipients.device_ids
        return (
            f"the members' devices changed (new: {_names(new)}; "
            f"removed or revoked: {_names(gone)})"
        )
    if sent >= policy.max_messages:
        return f"{sent} messages were sent in this session"
    if now - shared.created_at >= policy.max_age_ms:
        return f"the session is older than {policy.max_age_ms / DAY_MS:g} days"
    return None


# --- believing room keys and group messages -------------------------------------------------


class Verdict(enum.Enum):
    ACCEPT = "accept"
    DEFER = "defer"  # fetch newer chain entries, then decide again
    DROP = "drop"  # refuse it and show ``reason``


@dataclass(frozen=True)
class SessionOrigin:
    """Who shared an inbound Megolm session with this device, for which group."""

    group: str
    session_id: str
    sender_user: str
    sender_device: str


@dataclass(frozen=True)
class KeyDecision:
    """What to do with a room key.  ``fetch``: the sender's chain head is past ours, so
    fetch newer entries (``DEFER`` always implies it); ``reason`` says why not accepted."""

    verdict: Verdict
    reason: str = ""
    warnings: tuple[str, ...] = ()
    session: crypto.InboundGroupSession | None = None
    origin: SessionOrigin | None = None
    fetch: bool = False


@dataclass(frozen=True)
class MessageDecision:
    """What to do with a decrypted group message (see ``KeyDecision`` for ``fetch``)."""

    verdict: Verdict
    reason: str = ""
    warnings: tuple[str, ...] = ()
    fetch: bool = False


def _fork_warning(who: str, group: GroupState, head: proto.ChainHead) -> str:
    return (
        f"{who} holds a different membership of group {group.name!r} at entry "
        f"{head.seq} than this device: the server may be showing members different chains"
    )


def accept_room_key(
    view: GroupView, key: proto.RoomKey, sender: Peer, lookup: DeviceLookup
) -> KeyDecision:
    """Decide on a ``RoomKey`` that arrived over Olm from ``sender`` (a certified device).

    The entries it carries are verified into ``view`` first: that is how a removal the
    server withholds reaches us through the member who made it.  The key is accepted only
    if the sender is a member per our chain and its head is not a fork of ours.
    """
    warnings: list[str] = []

    def decide(verdict: Verdict, reason: str = "", fetch: bool = False) -> KeyDecision:
        return KeyDecision(verdict, reason, tuple(warnings), fetch=fetch)

    if sender.revoked:
        return decide(Verdict.DROP, f"device {sender.device_id} is revoked")
    if key.entries:
        try:
            view.update(key.entries, lookup, stale_ok=True)
        except GroupChainError as exc:
            warnings.append(f"chain entries sent by {sender.user} were refused: {exc}")
    state = view.state(key.group)
    check = view.check_head(key.group, key.head)
    if state is None:
        return decide(Verdict.DEFER, "the group's chain is not known yet", fetch=True)
    if check is HeadCheck.FORK:
        who = f"{sender.user} ({sender.device_id})"
        return decide(Verdict.DROP, _fork_warning(who, state, key.head))
    if sender.user not in state.members:
        if check is HeadCheck.NEWER:
            reason = f"{sender.user} is not a member in the entries known here"
            return decide(Verdict.DEFER, reason, fetch=True)
        return decide(
            Verdict.DROP,
            f"refused a key for group {state.name!r} from {sender.user}, who is not a "
            "member per its signed membership",
        )
    try:
        session = crypto.InboundGroupSession.from_session_key(key.session_key)
    except CryptoError:
        return decide(Verdict.DROP, "the session key is malformed")
    if session.session_id != key.session_id:
        return decide(Verdict.DROP, "the session key does not match its session id")
    # A newer head is fine for a sender we know as a member: keep the key, fetch entries.
    return KeyDecision(
        Verdict.ACCEPT,
        warnings=tuple(warnings),
        session=session,
        origin=SessionOrigin(key.group, key.session_id, sender.user, sender.device_id),
        fetch=check is HeadCheck.NEWER,
    )


def check_group_message(
    view: GroupView,
    origin: SessionOrigin,
    payload: proto.GroupPayload,
    lookup: DeviceLookup,
) -> MessageDecision:
    """Decide on a decrypted group message, given who shared the session that opened it.

    The sender must be a member *now*, per our chain: a message from someone whose removal
    we know is dropped even if it claims an older head (the head is the sender's claim).
    """
    if payload.group != origin.group:
        return MessageDecision(
            Verdict.DROP, "it names another group than the key that decrypted it"
        )
    if (payload.sender_user, payload.sender_device) != (
        origin.sender_user,
        origin.sender_device,
    ):
        return MessageDecision(
            Verdict.DROP,
            "the sender inside the encryption is not the device that shared the key",
        )
    peer = lookup(origin.sender_device)
    if peer is None or peer.revoked:
        return MessageDecision(
            Verdict.DROP,
            f"sender device {origin.sender_device} is revoked or no longer certified",
        )
    state = view.state(origin.group)
    if state is None:
        return MessageDecision(
            Verdict.DEFER, "the group's chain is not known yet", fetch=True
        )
    check = view.check_head(origin.group, payload.head)
    warnings: tuple[str, ...] = ()
    if check is HeadCheck.FORK:
        warnings = (_fork_warning(origin.sender_user, state, payload.head),)
    newer = check is HeadCheck.NEWER
    if origin.sender_user not in state.members:
        if newer:
            reason = f"{origin.sender_user} is not a member in the entries known here"
            return MessageDecision(Verdict.DEFER, reason, fetch=True)
        return MessageDecision(
            Verdict.DROP,
            f"{origin.sender_user} is no longer a member of group {state.name!r}",
            warnings,
        )
    return MessageDecision(Verdict.ACCEPT, "", warnings, fetch=newer)
