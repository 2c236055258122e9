"""The chat app, headless, against a real server on loopback: two people exchange
messages, a reply, a reaction, an edit, a file and receipts, verify each other's
devices by comparing emoji, and keep writing through a server restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, OptionList, Static

from _chat import until
from conftest import Org
from strongroom.app import ChatApp
from strongroom.app._dialogs import (
    DevicesScreen,
    FilePickerScreen,
    SaveScreen,
    VerifyScreen,
)
from strongroom.client import Backoff, Client, FlowState, Status

DM = "dm:alice:bob"
FAST = Backoff(first=0.1, limit=0.5)


@pytest.fixture
def org(sqlite_org: Org) -> Org:
    sqlite_org.add_user("alice", "Alice Archer")
    sqlite_org.add_user("bob", "Bob Baker")
    return sqlite_org


Pair = tuple[ChatApp, Pilot[None], ChatApp, Pilot[None]]


@asynccontextmanager
async def two_apps(alice: Path, bob: Path, tmp: Path) -> AsyncIterator[Pair]:
    a = ChatApp(alice, backoff=FAST, downloads=tmp / "alice-downloads")
    b = ChatApp(bob, backoff=FAST, downloads=tmp / "bob-downloads")
    async with a.run_test(size=(100, 30)) as pa, b.run_test(size=(100, 30)) as pb:
        await until(pa, lambda: a.session.status is Status.ONLINE, "alice online")
        await until(pb, lambda: b.session.status is Status.ONLINE, "bob online")
        yield a, pa, b, pb


def state_of(app: ChatApp, text: str) -> str:
    found = [m for m in app.session.history.messages(DM) if m.text == text]
    return found[-1].state if found else ""


async def type_and_send(pilot: Pilot[None], text: str) -> None:
    await pilot.press(*text)
    await pilot.press("ctrl+s")


def test_two_people_talk(org: Org, tmp_path: Path) -> None:
    alice_home, bob_home = org.activate("alice"), org.activate("bob")
    attachment = tmp_path / "minutes.txt"
    attachment.write_bytes(b"minutes of the board meeting\n" * 4000)

    async def scenario() -> None:
        async with two_apps(alice_home, bob_home, tmp_path) as (a, pa, b, pb):
            # Alice starts a 1:1 from the directory and writes
            await pa.press("ctrl+n")
            await until(pa, lambda: isinstance(a.screen.focused, Input), "the picker")
            await pa.press(*"bob", "enter")
            await until(pa, lambda: a.conversation == DM, "the conversation")
            await type_and_send(pa, "Is the draft ready?")
            await until(
                pa, lambda: state_of(a, "Is the draft ready?") == "delivered", "D"
            )
            # Bob sees one unread message from Alice Archer, opens it: R
            summaries = b.session.history.conversations()
            assert [(s.title, s.unread) for s in summaries] == [
                ("Alice Archer (alice)", 1)
            ]
            b.query_one("#conversations", OptionList).focus()
            await pb.press("enter")
            await until(pa, lambda: state_of(a, "Is the draft ready?") == "read", "R")
            assert b.session.history.conversations()[0].unread == 0
            # Bob replies to it and reacts
            b.query_one("#messages", OptionList).focus()
            await pb.press("r")
            await type_and_send(pb, "Nearly.")
            await until(pa, lambda: state_of(a, "Nearly.") == "", "the reply")
            reply = [m for m in a.session.history.messages(DM) if m.text == "Nearly."]
            assert reply[0].reply is not None
            assert reply[0].reply.text == "Is the draft ready?"
            b.query_one("#messages", OptionList).focus()
            await pb.press("up", "a")
            await pb.pause(0.2)
            await pb.press("1")
            await until(
                pa,
                lambda: any(m.reactions for m in a.session.history.messages(DM)),
                "the reaction",
            )
            # Alice edits her message
            a.query_one("#messages", OptionList).focus()
            await pa.press("up", "e")
            await pa.press("end", *" Yes?")
            await pa.press("ctrl+s")
            await until(
                pb,
                lambda: any(m.edited for m in b.session.history.messages(DM)),
                "the edit",
            )
            assert "Is the draft ready? Yes?" in [
                m.text for m in b.session.history.messages(DM)
            ]
            # Alice sends a file; Bob saves it, and it is the same file
            await pa.press("ctrl+o")
            await until(pa, lambda: isinstance(a.screen, FilePickerScreen), "picker")
            a.screen.query_one("#path", Input).value = str(attachment)
            a.screen.query_one("#path", Input).focus()
            await pa.press("enter")
            await until(
                pb,
                lambda: any(m.file for m in b.session.history.messages(DM)),
                "the file",
            )
            b.open(DM)
            b.query_one("#messages", OptionList).focus()
            await pb.press("s")
            await until(pb, lambda: isinstance(b.screen, SaveScreen), "save dialog")
            await pb.press("enter")
            saved = tmp_path / "bob-downloads" / "minutes.txt"
            await until(pb, saved.exists, "the saved file")
            assert saved.read_bytes() == attachment.read_bytes()
            assert a.client.warnings == [] and b.client.warnings == []

    asyncio.run(scenario())


def test_verify_by_comparing_emoji(org: Org, tmp_path: Path) -> None:
    alice_home, bob_home = org.activate("alice"), org.activate("bob")

    async def scenario() -> None:
        async with two_apps(alice_home, bob_home, tmp_path) as (a, pa, b, pb):
            a.open(DM)
            await pa.press("ctrl+d")
            await until(pa, lambda: isinstance(a.screen, DevicesScreen), "devices")
            devices = a.screen.query_one("#devices", OptionList)
            bob_device = org.device_id(bob_home)
            index = next(
                i
                for i in range(devices.option_count)
                if devices.get_option_at_index(i).id == bob_device
            )
            devices.highlighted = index
            await pa.press("v")
            await until(pa, lambda: isinstance(a.screen, VerifyScreen), "alice's SAS")
            await until(pb, lambda: isinstance(b.screen, VerifyScreen), "bob's SAS")
            alice_flow = a.screen.flow  # type: ignore[attr-defined]
            bob_flow = b.screen.flow  # type: ignore[attr-defined]
            assert bob_flow.state is FlowState.INCOMING
            await pb.press("y")
            comparing = FlowState.COMPARING
            await until(pa, lambda: alice_flow.state is comparing, "alice compares")
            await until(pb, lambda: bob_flow.state is comparing, "bob compares")
            shown_a = str(a.screen.query_one("#emoji", Static).render())
            shown_b = str(b.screen.query_one("#emoji", Static).render())
            assert shown_a == shown_b and len(alice_flow.emoji()) == 7
            assert alice_flow.decimals() == bob_flow.decimals()
            await pa.press("y")
            await pb.press("y")
            verified = FlowState.VERIFIED
            await until(pa, lambda: alice_flow.state is verified, "alice verified")
            await until(pb, lambda: bob_flow.state is verified, "bob verified")
            assert a.session.verifications.is_verified(bob_device)
            assert b.session.verifications.is_verified(org.device_id(alice_home))
            await pa.press("escape")
            await pa.pause(0.1)
            assert "✓ verified" in str(a.query_one("#title", Static).render())

    asyncio.run(scenario())


def test_messages_written_offline_go_out_after_a_restart(
    org: Org, tmp_path: Path
) -> None:
    alice_home, bob_home = org.activate("alice"), org.activate("bob")

    async def scenario() -> None:
        app = ChatApp(alice_home, backoff=FAST)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.session.status is Status.ONLINE, "online")
            app.open(DM)
            await type_and_send(pilot, "before")
            await until(pilot, lambda: state_of(app, "before") == "sent", "sent")
            org.server.stop()
            await until(pilot, lambda: app.session.status is Status.OFFLINE, "offline")
            status = str(app.query_one("#status", Static).render())
            assert "connection lost" in status and "reconnecting" in status
            await type_and_send(pilot, "while the server was down")
            await pilot.pause(0.2)
            assert state_of(app, "while the server was down") == "sending"
            assert "1 waiting to send" in str(app.query_one("#status", Static).render())
            org.server.start()
            await pilot.press("ctrl+r")
            await until(
                pilot,
                lambda: state_of(app, "while the server was down") == "sent",
                "the queued message to go out",
            )
            assert app.session.queued() == 0

    asyncio.run(scenario())

    async def bob_reads() -> list[str]:
        async with Client(bob_home) as bob:
            return [m.text for m in await bob.receive(0.3) if m.kind == "text"]

    assert asyncio.run(bob_reads()) == ["before", "while the server was down"]


def test_a_group_made_and_shown(org: Org, tmp_path: Path) -> None:
    alice_home, bob_home = org.activate("alice"), org.activate("bob")

    async def scenario() -> None:
        async with two_apps(alice_home, bob_home, tmp_path) as (a, pa, b, pb):
            await pa.press("ctrl+g")
            await until(pa, lambda: isinstance(a.screen.focused, Input), "the form")
            await pa.press(*"Board", "tab", "space", "ctrl+s")
            await until(
                pa, lambda: (a.conversation or "").startswith("group:"), "the group"
            )
            await type_and_send(pa, "Agenda attached.")
            group = a.conversation
            assert group is not None
            await until(
                pb,
                lambda: (
                    [m.text for m in b.session.history.messages(group)]
                    == ["Agenda attached."]
                ),
                "bob to read the group",
            )
            assert b.session.history.conversations()[0].title == "Board"
            b.open(group)
            await pb.press("ctrl+t")
            await until(pb, lambda: b.screen.id != "_default", "the group's info")
            members = b.screen.query_one("#members", OptionList)
            shown = [str(members.get_option_at_index(i).prompt) for i in range(2)]
            assert shown == ["★ admin alice", "        bob"]
            await pb.press("x")  # bob is no admin: refused, nothing changes
            await pb.pause(0.1)
            assert b.screen.id != "_default"

    asyncio.run(scenario())
