"""Changing a conversation from the chat app: a group's members, admins and name,
leaving a group, and a conversation's disappearing timer.

Rules:

1. Who may do what is the group chain's rule (``strongroom.client.next_change``): the
   group dialog offers a member only what the chain allows them, and the SDK still
   refuses anything else, which the app shows as a notification (``ChatApp.attempt``).
2. The dialog shows the chain as the server has it now, each entry verified on this
   device (``Client.sync_group``); offline, as this device last verified it.
3. Each change is one SDK call made through the session, which needs the server now
   (``Session.call``): offline, the person is told so and nothing changes; a rename
   goes through ``Client.change_group(..., name=...)`` like every other change.
4. A timer is content like a message (``proto.Timer``): ``Session.send`` applies it on
   this device at once and queues it for the other members, so it works offline too.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from strongroom import proto
from strongroom.client import Client
from strongroom.errors import StrongroomError

from ._dialogs import Dialog, NewChatScreen
from ._format import change_text, duration_text, parse_duration

if TYPE_CHECKING:
    from ._app import ChatApp

__all__ = [
    "ConfirmScreen",
    "GroupScreen",
    "NameScreen",
    "TimerScreen",
    "change_timer",
    "manage_group",
]

Action = proto.GroupAction

# --- a group ----------------------------------------------------------------------------


class GroupScreen(Dialog):
    """The verified membership and every change to it, with the changes this member may
    make: add, remove, promote, demote and rename for admins, leave for every member.

    Dismisses with ``(action, user)``: a ``GroupAction`` value and the member it acts on
    (the highlighted one; ``""`` for add and rename, ``me`` for leave), or ``None``.
    """

    BINDINGS = [
        Binding("a", "act('add')", "Add"),
        Binding("x", "act('remove')", "Remove"),
        Binding("p", "act('promote')", "Promote"),
        Binding("d", "act('demote')", "Demote"),
        Binding("n", "act('rename')", "Rename"),
        Binding("l", "act('leave')", "Leave"),
    ]
    DEFAULT_CSS = """
    GroupScreen #actions { height: auto; align-horizontal: left; padding-top: 1; }
    GroupScreen #actions Button { margin: 0 1 0 0; min-width: 0; width: auto;
                                  background: $primary 30%; }
    """
    ADMIN_ONLY = ("add", "remove", "promote", "demote", "rename")
    ON_MEMBER = ("remove", "promote", "demote")  # act on the highlighted member

    def __init__(
        self, name: str, members: list[tuple[str, bool]], changes: list[str], me: str
    ) -> None:
        super().__init__()
        self.name_ = name
        self.members = members
        self.changes = changes
        self.me = me
        member = any(user == me for user, _ in members)
        admin = (me, True) in members
        self.allowed = {
            *(self.ADMIN_ONLY if admin else ()),
            *(("leave",) if member else ()),
        }

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Group: {self.name_}", classes="title")
            yield Static(
                "Membership as its signed, hash-chained changes say (verified on "
                "this device; the server cannot add anyone):",
                classes="hint",
            )
            yield OptionList(
                *[
                    Option(f"{'★ admin ' if admin else '        '}{user}", id=user)
                    for user, admin in self.members
                ],
                id="members",
            )
            yield Label("Changes (oldest first), each signed by its author:")
            with VerticalScroll(id="changes"):
                yield Static("\n".join(self.changes))
            with Horizontal(id="actions"):
                for action in (*self.ADMIN_ONLY, "leave"):
                    if action in self.allowed:
                        yield Button(action.title(), id=f"do-{action}", compact=True)
            yield Static(self._hint(), classes="hint")

    def _hint(self) -> str:
        if "add" in self.allowed:
            return "keys: a add, x remove, p promote, d demote, n rename, l leave"
        if self.allowed:
            return "only the group's admins can change it   l: leave   escape: close"
        return "you are no longer a member of this group   escape: close"

    def _refusal(self, action: str) -> str:
        if not self.allowed:
            return "you are no longer a member of this group"
        if action == "rename":
            return "only the group's admins can rename it"
        return f"only the group's admins can {action} members"

    def action_act(self, action: str) -> None:
        if action not in self.allowed:
            self.notify(self._refusal(action), severity="warning")
            return
        if action not in self.ON_MEMBER:
            self.dismiss((action, self.me if action == "leave" else ""))
            return
        members = self.query_one("#members", OptionList)
        if members.highlighted is not None:
            user = members.get_option_at_index(members.highlighted).id
            self.dismiss((action, user))

    @on(Button.Pressed, "#actions Button")
    def _button(self, event: Button.Pressed) -> None:
        self.action_act((event.button.id or "").removeprefix("do-"))


class NameScreen(Dialog):
    """A new name for a group; dismisses with it (``None`` if unchanged)."""

    DEFAULT_CSS = "NameScreen > Vertical { max-height: 10; }"

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Rename the group", classes="title")
            yield Input(value=self.current, id="name")
            yield Static(
                "Every member sees the new name and that you gave it.  "
                "enter: rename   escape: close",
                classes="hint",
            )

    @on(Input.Submitted, "#name")
    def _typed(self, event: Input.Submitted) -> None:
        name = event.value.strip()
        self.dismiss(name if name and name != self.current else None)


class ConfirmScreen(Dialog):
    """A yes-or-no question; dismisses with ``True`` (y) or ``False`` (n, escape)."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
    ]
    DEFAULT_CSS = "ConfirmScreen > Vertical { max-height: 11; max-width: 64; }"

    def __init__(self, question: str, detail: str, yes: str, no: str) -> None:
        super().__init__()
        self.question, self.detail, self.yes, self.no = question, detail, yes, no

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question, classes="title")
            yield Static(self.detail)
            with Horizontal(classes="buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="error")
                yield Button(f"{self.no} (n)", id="no")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    def action_dismiss_none(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


async def manage_group(app: ChatApp, group: str) -> None:
    """The group dialog, then the one change chosen in it (rules 1-3)."""
    client, session = app.client, app.session
    with contextlib.suppress(StrongroomError):  # offline: what this device verified
        await session.call(lambda: client.sync_group(group))
    state = client.groups.state(group)
    if state is None:
        return
    changes = [
        change_text(proto.decode_group_change(entry.body), app.tz)
        for entry in client.groups.view.entries(group)
    ]
    members = [(user, user in state.admins) for user in sorted(state.members)]
    choice = await app.push_screen_wait(
        GroupScreen(state.name, members, changes, app.me)
    )
    if not isinstance(choice, tuple):
        return
    action, user = choice
    if action == "add":
        users, note = await app.directory_entries()
        candidates = [u for u in users if u.user not in state.members]
        user = await app.push_screen_wait(NewChatScreen(candidates, note))
        if not isinstance(user, str):
            return
    elif action == "rename":
        name = await app.push_screen_wait(NameScreen(state.name))
        if isinstance(name, str):
            await app.attempt(
                session.call(lambda: _rename(client, group, name)), "Not renamed"
            )
            app.refresh_all()
        return
    elif action == "leave":
        sure = await app.push_screen_wait(
            ConfirmScreen(
                f"Leave “{state.name}”?",
                "You will no longer receive its messages, and only an admin can add "
                "you again.",
                "Leave",
                "Stay",
            )
        )
        if sure is not True:
            return
    await app.attempt(
        session.change_group(group, Action(action), user), "Membership not changed"
    )
    app.refresh_all()


async def _rename(client: Client, group: str, name: str) -> None:
    await client.change_group(group, Action.RENAME, client.device.user, name=name)


# --- the disappearing timer ---------------------------------------------------------------

TIMER_PRESETS = (None, 300, 3600, 28_800, 86_400, 604_800, 2_419_200)


class TimerScreen(Dialog):
    """Pick the conversation's disappearing timer; dismisses with ``("timer",
    seconds)`` (``None``: off)."""

    DEFAULT_CSS = "TimerScreen > Vertical { max-height: 20; max-width: 70; }"

    def __init__(self, title: str, current: int | None) -> None:
        super().__init__()
        self.title_ = title
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Disappearing messages: {self.title_}", classes="title")
            yield Static(
                "New messages disappear from every member's devices this long after "
                "they are sent.  The other members see the change.",
                classes="hint",
            )
            options = []
            for seconds in TIMER_PRESETS:
                label = "off" if seconds is None else duration_text(seconds)
                if seconds == self.current:
                    label += "   ← now"
                options.append(Option(label, id=str(seconds or 0)))
            yield OptionList(*options, id="presets")
            yield Input(
                placeholder="or type a duration (30s, 10m, 8h, 2d, 1w) and enter",
                id="custom",
            )

    def on_mount(self) -> None:
        presets = self.query_one("#presets", OptionList)
        if self.current in TIMER_PRESETS:
            presets.highlighted = TIMER_PRESETS.index(self.current)
        presets.focus()

    @on(OptionList.OptionSelected, "#presets")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(("timer", int(event.option.id or 0) or None))

    @on(Input.Submitted, "#custom")
    def _typed(self, event: Input.Submitted) -> None:
        try:
            seconds = parse_duration(event.value)
        except ValueError as exc:
            self.notify(str(exc), severity="error")
            return
        self.dismiss(("timer", seconds or None))


async def change_timer(app: ChatApp, conversation: str) -> None:
    """The timer dialog, then the new timer sent to the conversation (rule 4)."""
    if not app.may_send(conversation):
        return
    current, _ = app.client.store.conversation_settings(conversation)
    title = app.session.history.title(conversation)
    choice = await app.push_screen_wait(TimerScreen(title, current))
    if not isinstance(choice, tuple) or choice[1] == current:
        return
    seconds = choice[1]
    try:
        app.session.send(conversation, proto.Timer(seconds))
    except StrongroomError as exc:
        app.notify(str(exc), title="Timer not changed", severity="error")
        return
    app.refresh_messages()
    app.notify(
        "disappearing messages off"
        if seconds is None
        else f"new messages disappear after {duration_text(seconds)}",
        title="Timer",
    )
