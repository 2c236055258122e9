"""Snapshots of the chat app's main screens, against SVGs kept beside this file.

The history is built offline with a fixed clock (``_chat.build_history``) and the app
talks to an address where nothing listens, with a fixed reconnection delay, so every
run draws the same screen.  After a deliberate change of the screens, run with
``STRONGROOM_UPDATE_SNAPSHOTS=1`` and look at the new SVGs before committing them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from _chat import FIXED_MS, UTC, build_history, learn, until
from conftest import Org
from strongroom.app import ChatApp
from strongroom.client import Backoff, LocalStore, Status

SNAPSHOTS = Path(__file__).parent / "snapshots"
NOWHERE = "http://127.0.0.1:9"  # the discard port: refused at once


@pytest.fixture(scope="module")
def alice_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Alice's device with a fixed history, its server gone."""
    org = Org(tmp_path_factory.mktemp("snapshots"))
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
    store = LocalStore.open(home)
    try:
        store.set_meta("server_url", NOWHERE.encode())
    finally:
        store.close()
    build_history(home)
    return home


def check(app: ChatApp, name: str) -> None:
    """Compare the screen with ``snapshots/<name>.svg``."""
    got = app.export_screenshot(title=name)
    path = SNAPSHOTS / f"{name}.svg"
    if os.environ.get("STRONGROOM_UPDATE_SNAPSHOTS") or not path.exists():
        path.write_text(got)
        return
    if got != path.read_text():
        path.with_suffix(".new.svg").write_text(got)
        raise AssertionError(
            f"{name} differs from its snapshot; see {path.with_suffix('.new.svg')}"
        )


Steps = Callable[[Pilot[None], ChatApp], Awaitable[None]]


async def settled(pilot: Pilot[None], app: ChatApp) -> None:
    """Wait until two screenshots 0.1 s apart agree (the footer, say, redraws late)."""
    before = app.export_screenshot()
    for _ in range(50):
        await pilot.pause(0.1)
        now = app.export_screenshot()
        if now == before:
            return
        before = now


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
