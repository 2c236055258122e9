"""The chat app's controls, headless against a real server on loopback: a disappearing
timer set, shown and obeyed on both sides; a group's admins, name and membership changed
from its dialog; the organisation's policy and escrow shown as soon as IT signs them;
and the mouse alone opening a conversation and sending.

One server serves the whole module (each test has its own users), so that the tests
spend their time in the app rather than starting servers.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import Input, OptionList, Static, TextArea

from _chat import until
from conftest import Org, send
from strongroom import proto
from strongroom.app import ChatApp
from strongroom.app._dialogs import PolicyScreen
from strongroom.app._manage import ConfirmScreen, GroupScreen, NameScreen, TimerScreen
from strongroom.client import Backoff, Client, Status
from strongroom.crypto import _escrow as escrow

Running = list[tuple[ChatApp, Pilot[None]]]


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Org]:
    organisation = Org(tmp_path_factory.mktemp("controls"))
    organisation.server.start()
    try:
        yield organisation
    finally:
        organisation.server.stop()


@asynccontextmanager
async def running(*homes: Path) -> AsyncIterator[Running]:
    """An app per device home, each online."""
    async with AsyncExitStack() as stack:
        apps: Running = []
        for home in homes:
            app = ChatApp(home, backoff=Backoff(first=0.1, limit=0.5))
            pilot = await stack.enter_async_context(app.run_test(size=(100, 30)))
            apps.append((app, pilot))
        for app, pilot in apps:
            await until(pilot, online(app), "online")
        yield apps


def online(app: ChatApp) -> Callable[[], bool]:
    return lambda: app.session.status is Status.ONLINE


async def opened(pilot: Pilot[None], app: ChatApp, kind: type[Screen[object]]) -> None:
    """Wait until a dialog of this kind is on top, drawn."""
    await until(
        pilot,
        lambda: isinstance(app.screen, kind) and bool(app.screen.query(".title")),
        kind.__name__,
    )


def shown(app: ChatApp, selector: str, *, dialog: bool = False) -> str:
    """What a ``Static`` of the main screen (or the dialog on top) says; empty when
    hidden."""
    screen = app.screen if dialog else app.screen_stack[0]
    static = screen.query_one(selector, Static)
    return str(static.render()) if static.display else ""


def texts(app: ChatApp, conversation: str) -> list[str]:
    return [m.text for m in app.session.history.messages(conversation)]


async def highlight(pilot: Pilot[None], app: ChatApp, user: str) -> None:
    members = app.screen.query_one("#members", OptionList)
    ids = [members.get_option_at_index(i).id for i in range(members.option_count)]
    members.highlighted = ids.index(user)
    await pilot.pause()


def test_a_timer_set_shown_and_obeyed(org: Org) -> None:
    tina, tom = org.activate("tina"), org.activate("tom")
    dm = proto.conversation_for("tina", "tom")

    async def scenario() -> None:
        async with running(tina, tom) as [(a, pa), (b, pb)]:
            a.open(dm)
            await pa.press("ctrl+l")
            await opened(pa, a, TimerScreen)
            await pa.press("tab", *"3s", "enter")  # a duration of one's own
            await until(pa, lambda: shown(a, "#timer"), "the timer in the header")
            assert shown(a, "#timer") == "⏱ messages disappear after 3 s (ctrl+l)"
            await until(
                pb,
                lambda: b.client.store.conversation_settings(dm)[0] == 3,
                "the timer to reach tom",
            )
            b.open(dm)
            assert "disappear after 3 s" in shown(b, "#timer")
            # a message sent now shows when it goes, then goes, on both sides
            await pa.press(*"Burn after reading", "ctrl+s")
            await until(pb, lambda: "Burn after reading" in texts(b, dm), "arrival")
            for app in (a, b):
                line = app.query_one("#messages", OptionList).get_option_at_index(0)
                assert "⏱ until" in str(line.prompt)
            await until(pa, lambda: not texts(a, dm) and not a.items, "gone (tina)")
            await until(pb, lambda: not texts(b, dm) and not b.items, "gone (tom)")
            # and off again, from the presets
            await pa.press("ctrl+l")
            await opened(pa, a, TimerScreen)
            await pa.press("home", "enter")
            await until(pa, lambda: not shown(a, "#timer"), "no timer (tina)")
            await until(pb, lambda: not shown(b, "#timer"), "no timer (tom)")

    asyncio.run(scenario())


def test_a_group_changed_from_its_dialog(org: Org) -> None:
    gina, gus = org.activate("gina"), org.activate("gus")

    async def scenario() -> None:
        async with running(gina, gus) as [(a, pa), (b, pb)]:
            conversation = await a.session.create_group("Board", ["gus"])
            group = proto.group_of_conversation(conversation)
            assert group is not None
            a.open(conversation)

            def admins(app: ChatApp) -> frozenset[str]:
                s = app.client.groups.state(group)
                return s.admins if s else frozenset()

            def name(app: ChatApp) -> str:
                s = app.client.groups.state(group)
                return s.name if s else ""

            def members(app: ChatApp) -> frozenset[str]:
                s = app.client.groups.state(group)
                return s.members if s else frozenset()

            # Gina, an admin, makes Gus an admin (p) and renames the group (n)
            await pa.press("ctrl+t")
            await opened(pa, a, GroupScreen)
            await highlight(pa, a, "gus")
            await pa.press("p")
            await until(pa, lambda: "gus" in admins(a), "gus an admin")
            await pa.press("ctrl+t")
            await opened(pa, a, GroupScreen)
            await pa.press("n")
            await opened(pa, a, NameScreen)
            a.screen.query_one("#name", Input).value = "Board 2025"
            await pa.press("enter")
            await until(pa, lambda: name(a) == "Board 2025", "the new name")
            assert shown(a, "#title").startswith("Board 2025  ·  2 members")
            await pa.press(*"New name, new admin.", "ctrl+s")
            await until(
                pb, lambda: "New name, new admin." in texts(b, conversation), "gus"
            )
            # Gus sees the verified changes and who made them; as an admin he takes
            # admin from Gina with the mouse
            b.open(conversation)
            await pb.press("ctrl+t")
            await opened(pb, b, GroupScreen)
            changes = str(b.screen.query_one("#changes Static", Static).render())
            assert "gina created “Board”" in changes
            assert "gina made gus an admin" in changes
            assert "gina renamed it “Board 2025”" in changes
            await highlight(pb, b, "gina")
            await pb.click("#do-demote")
            await until(pb, lambda: admins(b) == {"gus"}, "gina no admin")
            await pb.click("#composer")
            await pb.press(*"I'll chair from now on.")
            await pb.click("#send")
            # his next message brings the change to Gina, who may now only leave:
            # one button, then a confirmation, both clicked
            await until(pa, lambda: admins(a) == {"gus"}, "gina to learn it")
            await pa.press("ctrl+t")
            await opened(pa, a, GroupScreen)
            buttons = [button.id for button in a.screen.query("#actions Button")]
            assert buttons == ["do-leave"]
            await pa.press("x")  # refused: only admins remove
            await pa.pause(0.1)
            assert isinstance(a.screen, GroupScreen)
            await pa.click("#do-leave")
            await opened(pa, a, ConfirmScreen)
            await pa.click("#yes")
            await until(pa, lambda: "you left this group" in shown(a, "#title"), "left")
            # Gus's dialog checks the chain as the server has it now
            await pb.press("ctrl+t")
            await opened(pb, b, GroupScreen)
            changes = str(b.screen.query_one("#changes Static", Static).render())
            assert changes.endswith("gina left")
            assert members(b) == {"gus"}
            # alone in it, Gus is told so rather than left with an undeliverable message
            await pb.press("escape")
            b.query_one("#composer", TextArea).focus()
            await pb.press(*"Anyone?", "ctrl+s")
            await pb.pause(0.2)
            assert "Anyone?" not in texts(b, conversation) and b.session.queued() == 0
            assert b.query_one("#composer", TextArea).text == "Anyone?"

    asyncio.run(scenario())


def test_the_mouse_opens_a_conversation_and_sends(org: Org) -> None:
    mia, max_ = org.activate("mia"), org.activate("max")
    dm = proto.conversation_for("mia", "max")
    asyncio.run(send(max_, "mia", "Lunch at one?"))

    async def scenario() -> None:
        async with running(mia) as [(a, pa)]:
            await until(pa, lambda: texts(a, dm) == ["Lunch at one?"], "the message")
            assert a.conversation is None
            await pa.click("#conversations", offset=(6, 0))
            await until(pa, lambda: a.conversation == dm, "the conversation")
            assert a.session.history.conversations()[0].unread == 0
            await pa.click("#composer")
            await pa.press(*"Yes, see you there.")
            await pa.click("#send")
            await until(
                pa,
                lambda: (
                    [m.state for m in a.session.history.messages(dm)][-1:] == ["sent"]
                ),
                "sent",
            )

    asyncio.run(scenario())

    async def max_reads() -> list[str]:
        async with Client(max_) as c:
            return [m.text for m in await c.receive(0.3) if m.kind == "text"]

    assert asyncio.run(max_reads()) == ["Yes, see you there."]


def test_the_policy_and_escrow_shown_when_it_arrives(org: Org) -> None:
    pat = org.activate("pat")
    org.add_user("pam", "Pam Price")

    # escrow needs the custodians' ceremony first: one custodian is enough here
    ceremony = escrow.new_ceremony(1, 1)
    setup = proto.EscrowSetup(
        custodians=1,
        threshold=1,
        public=ceremony.public,
        commitments=ceremony.commitments,
        token_hashes=[hashlib.sha256(b"token").hexdigest()],
    )
    response = org.admin("POST", "/v1/admin/escrow", proto.encode_json(setup))
    assert response.status_code == 200, response.text

    authority = org.data.load_authority()

    def set_policy(key: str, value: object, user: str | None = "pat") -> None:
        body = proto.encode_json(proto.PolicySet(key=key, value=value, user=user))
        response = org.admin("POST", "/v1/admin/policy", body)
        assert response.status_code == 200, response.text

    async def scenario() -> None:
        async with running(pat) as [(a, pa)]:
            a.open(proto.conversation_for("pat", "pam"))
            assert "escrow" not in a.sub_title and not shown(a, "#escrow")
            await pa.press("ctrl+w")
            await opened(pa, a, PolicyScreen)
            assert shown(a, "#policy", dialog=True).startswith("No policy in force")
            await pa.press("escape")
            # IT signs a policy while the app runs: the stream brings it
            set_policy("retention_days", 30)
            set_policy("escrow", True, user=None)  # escrow is organisation-wide
            await until(
                pa, lambda: a.policy is not None and a.policy.escrow, "the policy"
            )
            await pa.pause(0.1)
            assert a.sub_title.endswith("⚠ escrow on")
            assert shown(a, "#escrow").startswith("⚠ escrow on")
            a.open(proto.conversation_for("pat", "pat"))  # every conversation says it
            await pa.pause()
            assert shown(a, "#escrow").startswith("⚠ escrow on")
            await pa.press("ctrl+w")
            await opened(pa, a, PolicyScreen)
            policy = shown(a, "#policy", dialog=True)
            assert a.policy is not None and policy.startswith("⚠ ESCROW ON")
            assert f"Version {a.policy.version}, issued" in policy
            assert "• messages are deleted from devices after 30 days" in policy
            assert "• LAWFUL-ACCESS ESCROW IS ON" in policy
            await pa.press("escape")
            # an old policy replayed to the device: the SDK refuses it, the app says so
            old = proto.Policy(org="Test Ministry", user="pat", version=1,
                               issued_at=0, rules=proto.PolicyRules())  # fmt: skip
            replay = proto.Control(kind="policy", item=authority.sign_policy(old))
            await a.session.call(lambda: a.client._on_control(replay))
            await pa.press("ctrl+w")
            await opened(pa, a, PolicyScreen)
            warnings = shown(a, "#warning-list", dialog=True)
            assert "refused policy version 1" in warnings
            assert a.policy.escrow  # still what was signed last

    try:
        asyncio.run(scenario())
    finally:
        set_policy("escrow", False, user=None)  # the module's other tests share the org
