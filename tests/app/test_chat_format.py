"""How the chat app puts timers, group changes and the policy into words."""

from __future__ import annotations

import pytest

from _chat import FIXED_MS, UTC
from strongroom import proto
from strongroom.app._format import (
    change_text,
    duration_text,
    message_text,
    parse_duration,
    policy_text,
)
from strongroom.client import HistoryItem, PolicyInForce


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (3, "3 s"),
        (90, "90 s"),
        (300, "5 min"),
        (3600, "1 h"),
        (28_800, "8 h"),
        (86_400, "1 day"),
        (172_800, "2 days"),
        (604_800, "1 week"),
        (2_419_200, "4 weeks"),
    ],
)
def test_durations_in_words(seconds: int, words: str) -> None:
    assert duration_text(seconds) == words
    assert parse_duration(words) == seconds


@pytest.mark.parametrize(
    ("typed", "seconds"),
    [("45", 45), ("10m", 600), (" 8 hours ", 28_800), ("2d", 172_800), ("1W", 604_800)],
)
def test_durations_as_typed(typed: str, seconds: int) -> None:
    assert parse_duration(typed) == seconds


@pytest.mark.parametrize("typed", ["", "soon", "5 months", "-3s", "1.5h", "9999999999"])
def test_what_is_not_a_duration(typed: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(typed)


def test_a_message_says_when_it_disappears() -> None:
    item = HistoryItem(
        id="00",
        from_user="bob",
        from_device="d",
        sent_at=FIXED_MS,
        text="Burn after reading",
        kind="text",
        outgoing=False,
        state="",
        expires_at=FIXED_MS + 3_600_000,
    )
    shown = str(message_text(item, "alice", UTC, FIXED_MS))
    assert shown.startswith("bob  09:41  ⏱ until 10:41\n")


def test_group_changes_say_who_did_what() -> None:
    def change(action: proto.GroupAction, subject: str, name: str = "Board") -> str:
        return change_text(
            proto.GroupChange(
                group="g" * 26,
                seq=4,
                prev=b"\0" * 32,
                action=action,
                subject=subject,
                members=["alice", "bob"],
                admins=["alice"],
                name=name,
                author="alice",
                author_device="d",
                at=FIXED_MS,
            ),
            UTC,
        )

    Action = proto.GroupAction
    assert change(Action.PROMOTE, "bob") == "#4  09:41  alice made bob an admin"
    assert change(Action.DEMOTE, "bob").endswith("alice took admin from bob")
    assert change(Action.RENAME, "alice", "Q2").endswith("alice renamed it “Q2”")
    assert change(Action.LEAVE, "alice").endswith("alice left")
    assert change(Action.ADD, "carol").endswith("alice added carol")


def test_the_policy_in_words_escrow_first() -> None:
    none = str(policy_text(None, UTC))
    assert none.startswith("No policy in force")
    policy = PolicyInForce(
        version=3,
        issued_at=FIXED_MS,
        rules=["messages are deleted from devices after 30 days"],
        escrow=True,
    )
    shown = str(policy_text(policy, UTC)).splitlines()
    assert shown[0].startswith("⚠ ESCROW ON")
    assert shown[2].startswith("Version 3, issued 01 Mar 2025 09:41")
    assert shown[3] == "• messages are deleted from devices after 30 days"
    quiet = str(policy_text(PolicyInForce(3, FIXED_MS, ["no restrictions"]), UTC))
    assert "ESCROW" not in quiet
