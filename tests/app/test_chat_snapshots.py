"""Snapshots of the chat app's main screens, against SVGs kept beside this file.

The history is built offline with a fixed clock (``_chat.build_history``) and the app
talks to an address where nothing listens, with a fixed reconnection delay, so every
run draws the same screen.  After a deliberate change of the screens, run with
``STRONGROOM_UPDATE_SNAPSHOTS=1`` and look at the new SVGs before committing them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Footer, Input, TextArea

from _chat import FIXED_MS, UTC, build_history, learn, until
from conftest import Org
from strongroom import proto
from strongroom.app import ChatApp
from strongroom.client import Backoff, Client, LocalStore, Session, Status
from strongroom.client._policy import accept_policy
from strongroom.crypto import _escrow as escrow

SNAPSHOTS = Path(__file__).parent / "snapshots"
NOWHERE = "http://127.0.0.1:9"  # the discard port: refused at once


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Alice's device with a fixed history, its server gone; and a copy of it under a
    policy that turns escrow on, with a one-hour timer on her conversation with Bob."""
    root = tmp_path_factory.mktemp("snapshots")
    org = Org(root)
    org.server.start()
    try:
        for user, name in [
            ("alice", "Alice Archer"),
            ("bob", "Bob Baker"),
            ("carol", "Carol Chen"),
        ]:
            org.add_user(user, name)
        home = org.activate("alice")
        org.activate("bob")
        org.activate("carol")
        asyncio.run(learn(home))
    finally:
        org.server.stop()
    escrow_home = root / "alice-escrow"
    shutil.copytree(home, escrow_home)
    # signed as the server signs it, with a fixed date for a stable screen
    policy = proto.Policy(
        org="Test Ministry",
        user="alice",
        version=4,
        issued_at=FIXED_MS - 86_400_000,
        rules=proto.PolicyRules(retention_days=30, escrow=True),
        escrow_key=escrow.new_ceremony(1, 1).public,
    )
    signed = org.data.load_authority().sign_policy(policy)
    for path in (home, escrow_home):
        store = LocalStore.open(path)
        try:
            with store.transaction():
                store.set_meta("server_url", NOWHERE.encode())
                if path == escrow_home:
                    accept_policy(store, signed)
                    store.set_timer("dm:alice:bob", 3600)
        finally:
            store.close()
        build_history(path)
        asyncio.run(seen(path, "dm:alice:bob"))
    return {"alice": home, "escrow": escrow_home}


async def seen(home: Path, conversation: str) -> None:
    """Alice has read what Bob wrote (she answered it): only Carol's is unread, in
    every test, whichever ran before."""
    async with Client(home, lambda: FIXED_MS) as c:
        Session(c).history.mark_seen(conversation)


@pytest.fixture(scope="module")
def alice_home(homes: dict[str, Path]) -> Path:
    return homes["alice"]


@pytest.fixture(scope="module")
def escrow_home(homes: dict[str, Path]) -> Path:
    return homes["escrow"]


def check(app: ChatApp, name: str) -> None:
    """Compare the screen with ``snapshots/<name>.svg``."""
    got = app.export_screenshot(title=name)
    path = SNAPSHOTS / f"{name}.svg"
    if os.environ.get("STRONGROOM_UPDATE_SNAPSHOTS"):
        path.write_text(got)
        return
    if not path.exists():
        # a new screen is recorded on a developer's machine, never taken as-is in CI
        path.write_text(got)
        assert os.environ.get("CI") != "true", f"{path.name} is missing from the tree"
        return
    if got != path.read_text():
        path.with_suffix(".new.svg").write_text(got)
        raise AssertionError(
            f"{name} differs from its snapshot; see {path.with_suffix('.new.svg')}"
        )


Steps = Callable[[Pilot[None], ChatApp], Awaitable[None]]


async def settled(pilot: Pilot[None], app: ChatApp) -> None:
    """Wait until three screenshots 0.1 s apart agree with the key hints drawn (the
    footer redraws a frame or more late after the focus moves); cursors stop blinking
    (shown steadily) so that they cannot differ between two runs."""
    for field in app.screen.query(Input):
        field.cursor_blink = False
    for area in app.screen.query(TextArea):
        area.cursor_blink = False
    footer = app.screen_stack[0].query_one(Footer)
    shots: list[str] = []
    for _ in range(100):
        await pilot.pause(0.1)
        shots = [*shots[-2:], app.export_screenshot()] if footer.children else []
        if len(shots) == 3 and len(set(shots)) == 1:
            return


def shoot(home: Path, name: str, size: tuple[int, int], steps: Steps) -> None:
    async def scenario() -> None:
        app = ChatApp(
            home,
            clock=lambda: FIXED_MS,
            tz=UTC,
            backoff=Backoff(first=3600),
            rand=lambda: 1.0,
        )
        async with app.run_test(size=size) as pilot:
            await until(pilot, lambda: app.session.status is Status.OFFLINE, "offline")
            await steps(pilot, app)
            await settled(pilot, app)
            check(app, name)

    asyncio.run(scenario())


async def open_bob(pilot: Pilot[None], app: ChatApp) -> None:
    app.open("dm:alice:bob")
    await pilot.pause()
    app.query_one("#messages").focus()


@pytest.mark.parametrize("size", [(80, 24), (132, 40)], ids=["80x24", "132x40"])
def test_conversation(alice_home: Path, size: tuple[int, int]) -> None:
    shoot(alice_home, f"conversation-{size[0]}x{size[1]}", size, open_bob)


def test_conversation_list_unread(alice_home: Path) -> None:
    async def nothing(pilot: Pilot[None], app: ChatApp) -> None:
        return None

    shoot(alice_home, "conversations", (80, 24), nothing)


def test_new_chat_directory(alice_home: Path) -> None:
    async def new_chat(pilot: Pilot[None], app: ChatApp) -> None:
        await pilot.press("ctrl+n")
        await until(pilot, lambda: app.screen.id != "_default", "the dialog")

    shoot(alice_home, "new-chat", (80, 24), new_chat)


def test_policy_and_warnings(alice_home: Path) -> None:
    async def warnings(pilot: Pilot[None], app: ChatApp) -> None:
        await pilot.press("ctrl+w")

    shoot(alice_home, "warnings", (80, 24), warnings)


def test_policy_with_escrow(escrow_home: Path) -> None:
    async def policy(pilot: Pilot[None], app: ChatApp) -> None:
        await open_bob(pilot, app)
        await pilot.press("ctrl+w")

    shoot(escrow_home, "policy-escrow", (80, 24), policy)


@pytest.mark.parametrize("size", [(80, 24), (132, 40)], ids=["80x24", "132x40"])
def test_escrow_and_a_timer_in_a_conversation(
    escrow_home: Path, size: tuple[int, int]
) -> None:
    shoot(escrow_home, f"escrow-{size[0]}x{size[1]}", size, open_bob)


def test_search(alice_home: Path) -> None:
    async def search(pilot: Pilot[None], app: ChatApp) -> None:
        await pilot.press("ctrl+f")
        await pilot.pause()
        await pilot.press(*"budg")

    shoot(alice_home, "search", (80, 24), search)


def test_no_color(alice_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    shoot(alice_home, "conversation-no-color", (80, 24), open_bob)


def test_resizing_never_crashes(alice_home: Path) -> None:
    async def resize(pilot: Pilot[None], app: ChatApp) -> None:
        await open_bob(pilot, app)
        for size in [(40, 12), (20, 6), (200, 60), (80, 24)]:
            await pilot.resize_terminal(*size)
            await pilot.pause(0.05)
        assert app.is_running

    shoot(alice_home, "conversation-80x24", (80, 24), resize)


def test_resizing_with_escrow_and_a_dialog_never_crashes(escrow_home: Path) -> None:
    async def resize(pilot: Pilot[None], app: ChatApp) -> None:
        await open_bob(pilot, app)
        await pilot.press("ctrl+w")
        for size in [(40, 12), (20, 6), (200, 60), (80, 24)]:
            await pilot.resize_terminal(*size)
            await pilot.pause(0.05)
        assert app.is_running

    shoot(escrow_home, "policy-escrow", (80, 24), resize)
