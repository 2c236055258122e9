"""The conversation commands as a user runs them: groups, receipts, replies, reactions,
edits, timers and files, each a separate process against a real server.

The command line's contract does not depend on the backend, so these run on the
embedded default only (the SDK tests under them run on both).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from _cli import sr
from conftest import Org
from strongroom import client
from strongroom.cli._transfer import _BAR_FROM

#: stderr is a pipe here: this tells rich it is a terminal, so it draws progress bars.
TTY = {"TTY_COMPATIBLE": "1", "TERM": "xterm"}


def received(home: Path, *extra: str | Path) -> list[dict[str, object]]:
    out = sr("receive", "--home", home, "--json", *extra).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_groups_from_the_command_line(sqlite_org: Org, tmp_path: Path) -> None:
    org = sqlite_org
    alice, bob = org.activate("alice"), org.activate("bob")
    carol = org.activate("carol")
    group = sr(
        "group", "create", "--home", alice, "Embassy", "--members", "bob,carol"
    ).stdout.strip()
    assert len(group) == 26
    sr("send", "--home", alice, "--group", group, "convoy at six")
    (message,) = received(bob)
    assert (message["group"], message["text"]) == (group, "convoy at six")
    assert message["conversation"] == f"group:{group}"

    sr("group", "remove", "--home", alice, group, "carol")
    shown = json.loads(sr("group", "show", "--home", bob, group, "--json").stdout)
    assert shown["members"] == ["alice", "bob"]
    assert shown["admins"] == ["alice"]
    assert shown["history"] == ["alice create alice", "alice remove carol"]
    listed = json.loads(sr("group", "list", "--home", bob, "--json").stdout)
    assert [g["group"] for g in listed] == [group]

    refused = sr("group", "add", "--home", bob, group, "carol", check=False)
    assert refused.returncode == 1 and "not an admin" in refused.stderr
    added = sr("group", "add", "--home", alice, group, "carol").stdout
    assert "add carol: group 'Embassy' now has 3 member(s) (entry 2)" in added
    shown = json.loads(sr("group", "show", "--home", carol, group, "--json").stdout)
    assert shown["members"] == ["alice", "bob", "carol"]
    assert shown["history"][-1] == "alice add carol"
    bad = sr("send", "--home", alice, "--group", "nope", "x", check=False)
    assert bad.returncode == 1 and "not a group id" in bad.stderr

    # a file to a group: every member saves the same bytes
    made = sr(
        "group", "create", "--home", alice, "Files", "--json", "--members", "bob,carol"
    )
    created = json.loads(made.stdout)
    assert set(created) == {"group", "name"} and created["name"] == "Files"
    files = created["group"]
    assert isinstance(files, str) and len(files) == 26
    plan = tmp_path / "plan.bin"
    content = os.urandom(200_000)
    plan.write_bytes(content)
    sr("send", "--home", alice, "--group", files, "--file", plan, "the plan")
    for home in (bob, carol):
        got = received(home, "--save-dir", tmp_path / home.name)
        (message,) = [m for m in got if m["group"] == files]
        assert message["text"] == "the plan"
        file = message["file"]
        assert isinstance(file, dict) and file["name"] == "plan.bin"
        assert Path(str(file["saved"])).read_bytes() == content


def test_receipts_replies_reactions_edits_and_timers(sqlite_org: Org) -> None:
    org = sqlite_org
    alice, bob = org.activate("alice"), org.activate("bob")
    sent = sr("send", "--home", alice, "bob", "lunch?").stdout.split()[1]
    (message,) = received(bob)
    assert message["id"] == sent
    sr("read", "--home", bob, sent)
    sr("send", "--home", bob, "alice", "yes", "--reply-to", sent)
    sr("react", "--home", bob, sent, "🍜")
    got = received(alice)
    receipts = [(m["receipt"], m["for"]) for m in got if "receipt" in m]
    assert receipts == [("delivered", sent), ("read", sent)]
    (reply,) = [m for m in got if m.get("text") == "yes"]
    assert reply["reply_to"] == sent
    (reaction,) = [m for m in got if "reaction" in m]
    assert (reaction["reaction"], reaction["for"]) == ("🍜", sent)

    sr("edit", "--home", alice, sent, "lunch at one?")
    edits = [m for m in received(bob) if "edit" in m]
    assert [(m["edit"], m["text"]) for m in edits] == [(sent, "lunch at one?")]
    not_mine = sr("edit", "--home", bob, sent, "dinner", check=False)
    assert not_mine.returncode == 1 and "your own messages" in not_mine.stderr

    sr("receipts", "--home", bob, "off", "alice")
    second = sr("send", "--home", alice, "bob", "quietly").stdout.split()[1]
    received(bob)
    sr("read", "--home", bob, second)
    assert [m["receipt"] for m in received(alice) if "receipt" in m] == ["delivered"]

    sr("timer", "--home", alice, "1h", "bob")
    (timer,) = [m for m in received(bob) if "timer" in m]
    assert timer["timer"] == 3600
    sr("send", "--home", alice, "bob", "self-destructs")
    (vanishing,) = [m for m in received(bob) if m.get("text") == "self-destructs"]
    assert isinstance(vanishing["expires_at"], int)
    bad = sr("timer", "--home", alice, "soon", "bob", check=False)
    assert bad.returncode == 1 and "not a duration" in bad.stderr

    brief = sr("send", "--home", alice, "bob", "gone soon", "--expires", "2s")
    brief_id = brief.stdout.split()[1]
    (shown,) = [m for m in received(bob) if m["id"] == brief_id]
    expires_at, sent_at = shown["expires_at"], shown["sent_at"]
    assert isinstance(expires_at, int) and isinstance(sent_at, int)
    assert 2000 <= expires_at - sent_at < 3000  # --expires wins over the 1h timer
    time.sleep(max(0.0, expires_at / 1000 - time.time()) + 0.05)
    late = sr("react", "--home", bob, brief_id, "👀", check=False)
    assert late.returncode == 1 and "may have expired" in late.stderr
    received(bob)  # the device deletes what has expired as it runs
    store = client.LocalStore.open(bob)
    try:
        assert store.get_message(bytes.fromhex(brief_id)) is None
        assert store.get_message(bytes.fromhex(sent)) is not None
    finally:
        store.close()


def test_files_from_the_command_line(sqlite_org: Org, tmp_path: Path) -> None:
    org = sqlite_org
    alice, bob = org.activate("alice"), org.activate("bob")
    report = tmp_path / "report.pdf"
    content = os.urandom(300_000)
    report.write_bytes(content)
    small = sr("send", "--home", alice, "bob", "--file", report, "the report", env=TTY)
    assert "sending" not in small.stderr  # under the threshold: no bar
    downloads = tmp_path / "downloads"
    (message,) = received(bob, "--save-dir", downloads)
    assert message["text"] == "the report"
    file = message["file"]
    assert isinstance(file, dict)
    assert (file["name"], file["size"]) == ("report.pdf", len(content))
    assert Path(str(file["saved"])).read_bytes() == content

    # past the threshold a bar is drawn on stderr, both ways
    big = tmp_path / "big.bin"
    content = os.urandom(_BAR_FROM)
    big.write_bytes(content)
    sent = sr("send", "--home", alice, "bob", "--file", big, env=TTY)
    assert "sending big.bin" in sent.stderr
    got = sr("receive", "--home", bob, "--json", "--save-dir", downloads, env=TTY)
    assert "receiving big.bin" in got.stderr
    (message,) = [json.loads(line) for line in got.stdout.splitlines()]
    assert Path(str(message["file"]["saved"])).read_bytes() == content

    missing = sr(
        "send", "--home", alice, "bob", "--file", tmp_path / "nope", check=False
    )
    assert missing.returncode == 1 and "not a file" in missing.stderr
