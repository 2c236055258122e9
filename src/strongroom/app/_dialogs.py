"""The chat app's dialogs: each a modal screen over the main one, closed with escape.

They show what the SDK says and pass the person's choice back (``dismiss``); the work
itself (sending, verifying, changing a group) is the SDK's, called by the app.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import (
    Button,
    DirectoryTree,
    Input,
    Label,
    OptionList,
    SelectionList,
    Static,
)
from textual.widgets.option_list import Option

from strongroom import proto
from strongroom.client import DeviceTrust, FlowState, SasFlow, SearchHit

from ._format import device_line, when

__all__ = [
    "DevicesScreen",
    "Dialog",
    "FilePickerScreen",
    "NewChatScreen",
    "NewGroupScreen",
    "PolicyScreen",
    "ReactScreen",
    "SaveScreen",
    "SearchScreen",
    "VerifyScreen",
]


class Dialog(ModalScreen[object]):
    """A modal with a title and escape to close."""

    BINDINGS = [Binding("escape", "dismiss_none", "Close")]
    DEFAULT_CSS = """
    Dialog { align: center middle; }
    Dialog > Vertical {
        width: 90%; max-width: 100; height: 90%; max-height: 40;
        border: round $accent; background: $surface; padding: 0 1;
    }
    Dialog .title { text-style: bold; padding-bottom: 1; }
    Dialog Input { width: 100%; }
    Dialog .hint { color: $text-muted; }
    Dialog OptionList, Dialog SelectionList { height: 1fr; }
    Dialog Horizontal.buttons { height: auto; align-horizontal: right; }
    Dialog Button { margin-left: 1; }
    """

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


# --- start a conversation --------------------------------------------------------------


class NewChatScreen(Dialog):
    """Pick a user of the organisation's directory; dismisses with the user id."""

    def __init__(self, users: list[proto.DirectoryEntry], note: str = "") -> None:
        super().__init__()
        self.users = users
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("New conversation: pick someone", classes="title")
            if self.note:
                yield Static(self.note, classes="hint")
            yield Input(placeholder="type to filter by name or user id", id="who")
            yield OptionList(id="users")
            yield Static("enter: open   escape: close", classes="hint")

    def on_mount(self) -> None:
        self._fill("")

    def _fill(self, needle: str) -> None:
        options = self.query_one("#users", OptionList)
        options.clear_options()
        needle = needle.lower().strip()
        for entry in self.users:
            label = f"{entry.name} ({entry.user})" if entry.name else entry.user
            if needle in label.lower():
                options.add_option(Option(label, id=entry.user))
        if options.option_count:
            options.highlighted = 0

    @on(Input.Changed, "#who")
    def _filter(self, event: Input.Changed) -> None:
        self._fill(event.value)

    @on(Input.Submitted, "#who")
    def _submit(self) -> None:
        options = self.query_one("#users", OptionList)
        if options.highlighted is not None:
            self.dismiss(options.get_option_at_index(options.highlighted).id)

    @on(OptionList.OptionSelected, "#users")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def key_down(self) -> None:
        self.query_one("#users", OptionList).action_cursor_down()

    def key_up(self) -> None:
        self.query_one("#users", OptionList).action_cursor_up()


class NewGroupScreen(Dialog):
    """A name and members; dismisses with ``(name, [user ids])``."""

    BINDINGS = [Binding("ctrl+s", "create", "Create")]

    def __init__(self, users: list[proto.DirectoryEntry], me: str) -> None:
        super().__init__()
        self.users = [u for u in users if u.user != me]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("New group", classes="title")
            yield Input(placeholder="group name", id="name")
            yield Label("Members (space to tick):")
            yield SelectionList[str](
                *[
                    (f"{u.name} ({u.user})" if u.name else u.user, u.user)
                    for u in self.users
                ],
                id="members",
            )
            with Horizontal(classes="buttons"):
                yield Button("Create (ctrl+s)", id="create", variant="primary")

    @on(Button.Pressed, "#create")
    def action_create(self) -> None:
        name = self.query_one("#name", Input).value.strip()
        members = list(self.query_one("#members", SelectionList).selected)
        if not name:
            self.notify("give the group a name", severity="warning")
            return
        self.dismiss((name, members))


# --- devices and verification ---------------------------------------------------------------


class DevicesScreen(Dialog):
    """Own devices and contacts' devices with fingerprints; dismisses with a device id
    to verify."""

    BINDINGS = [Binding("v", "verify", "Verify selected")]

    def __init__(self, sections: list[tuple[str, list[DeviceTrust]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Devices", classes="title")
            options: list[Option | None] = []
            for heading, devices in self.sections:
                options.append(
                    Option(Text(heading, style="bold underline"), disabled=True)
                )
                if not devices:
                    options.append(Option("  (none known yet)", disabled=True))
                for device in devices:
                    options.append(Option(device_line(device), id=device.device_id))
            yield OptionList(*options, id="devices")
            yield Static(
                "v or enter: verify the selected device by comparing emoji with its "
                "owner   escape: close",
                classes="hint",
            )

    def action_verify(self) -> None:
        devices = self.query_one("#devices", OptionList)
        if devices.highlighted is not None:
            self.dismiss(devices.get_option_at_index(devices.highlighted).id)

    @on(OptionList.OptionSelected, "#devices")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


class VerifyScreen(Dialog):
    """One verification, as it moves: accept, compare, confirm.  ``act`` is called with
    ``accept``, ``confirm``, ``mismatch`` or ``cancel``."""

    BINDINGS = [
        Binding("y", "yes", "Accept / They match"),
        Binding("n", "no", "Decline / They differ"),
    ]
    DEFAULT_CSS = """
    VerifyScreen #emoji { text-style: bold; padding: 1 0; }
    VerifyScreen #state { padding-bottom: 1; }
    """

    def __init__(self, flow: SasFlow, act: Callable[[SasFlow, str], None]) -> None:
        super().__init__()
        self.flow = flow
        self.act = act

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(
                f"Verify {self.flow.peer_user}'s device {self.flow.peer_device}",
                classes="title",
            )
            yield Static(id="state")
            yield Static(id="emoji")
            yield Static(id="numbers")
            with Horizontal(classes="buttons"):
                yield Button("They match (y)", id="yes", variant="success")
                yield Button("They differ (n)", id="no", variant="error")

    def on_mount(self) -> None:
        self.refresh_flow()

    def refresh_flow(self) -> None:
        if not self.query("#state"):
            return  # not composed yet: ``on_mount`` draws it
        flow = self.flow
        state = self.query_one("#state", Static)
        yes = self.query_one("#yes", Button)
        no = self.query_one("#no", Button)
        emoji = self.query_one("#emoji", Static)
        numbers = self.query_one("#numbers", Static)
        emoji.update("")
        numbers.update("")
        yes.display = no.display = False
        s = flow.state
        if s is FlowState.REQUESTED:
            state.update(f"Waiting for {flow.peer_user} to accept on that device…")
        elif s is FlowState.INCOMING:
            state.update(
                f"{flow.peer_user} wants to verify your device with their device "
                f"{flow.peer_device}.  Accept only if you are in touch with them "
                "(in person, or on a call you trust)."
            )
            yes.label, no.label = "Accept (y)", "Decline (n)"
            yes.display = no.display = True
        elif s in (FlowState.ACCEPTED, FlowState.WAITING_KEY):
            state.update("Exchanging keys…")
        elif s is FlowState.COMPARING:
            state.update(
                f"Compare with {flow.peer_user}: do they see the same emoji, in the "
                "same order (or the same numbers)?"
            )
            emoji.update("  ".join(f"{e} {name}" for e, name in flow.emoji()))
            numbers.update("Numbers: " + "  ".join(str(n) for n in flow.decimals()))
            yes.label, no.label = "They match (y)", "They differ (n)"
            yes.display = no.display = True
        elif s is FlowState.CONFIRMED:
            state.update(f"Waiting for {flow.peer_user} to confirm…")
        elif s is FlowState.VERIFIED:
            state.update(
                f"✓ Verified: {flow.peer_user}'s device {flow.peer_device} is marked "
                "verified on this device."
            )
        else:
            state.update(f"✗ Not verified: {flow.reason}")

    def action_yes(self) -> None:
        if self.flow.state is FlowState.INCOMING:
            self.act(self.flow, "accept")
        elif self.flow.state is FlowState.COMPARING:
            self.act(self.flow, "confirm")

    def action_no(self) -> None:
        if self.flow.state is FlowState.INCOMING:
            self.act(self.flow, "cancel")
        elif self.flow.state is FlowState.COMPARING:
            self.act(self.flow, "mismatch")

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.action_yes()

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.action_no()

    def action_dismiss_none(self) -> None:
        if not self.flow.done and self.flow.state is not FlowState.INCOMING:
            self.act(self.flow, "cancel")
        self.dismiss(None)


# --- search ---------------------------------------------------------------------------------


class SearchScreen(Dialog):
    """Full-text search over the history on this device; dismisses with
    ``(conversation, message id)``."""

    def __init__(
        self,
        search: Callable[[str], list[SearchHit]],
        title: Callable[[str], str],
        tz: datetime.tzinfo | None,
    ) -> None:
        super().__init__()
        self.search = search
        self.title_of = title
        self.tz = tz
        self.hits: list[SearchHit] = []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Search all messages on this device", classes="title")
            yield Input(placeholder="words to find", id="query")
            yield OptionList(id="hits")
            yield Static(
                "The index lives only in this device's encrypted store.  "
                "enter: open   escape: close",
                classes="hint",
            )

    @on(Input.Changed, "#query")
    def _query(self, event: Input.Changed) -> None:
        hits = self.query_one("#hits", OptionList)
        hits.clear_options()
        self.hits = self.search(event.value)
        for i, hit in enumerate(self.hits):
            line = Text()
            line.append(self.title_of(hit.conversation), style="bold")
            line.append(
                f"  {hit.from_user}  {when(hit.sent_at, self.tz)}\n  ", style="dim"
            )
            line.append(hit.snippet.replace("\n", " "))
            hits.add_option(Option(line, id=str(i)))
        if self.hits:
            hits.highlighted = 0

    @on(Input.Submitted, "#query")
    def _submit(self) -> None:
        hits = self.query_one("#hits", OptionList)
        if hits.highlighted is not None and self.hits:
            hit = self.hits[hits.highlighted]
            self.dismiss((hit.conversation, hit.id))

    @on(OptionList.OptionSelected, "#hits")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        hit = self.hits[int(event.option.id or 0)]
        self.dismiss((hit.conversation, hit.id))

    def key_down(self) -> None:
        self.query_one("#hits", OptionList).action_cursor_down()

    def key_up(self) -> None:
        self.query_one("#hits", OptionList).action_cursor_up()


# --- files -----------------------------------------------------------------------------------


class FilePickerScreen(Dialog):
    """Pick a file to send: type a path or browse; dismisses with a ``Path``."""

    def __init__(self, start: Path) -> None:
        super().__init__()
        self.start = start

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Send a file", classes="title")
            yield Input(placeholder="path of the file (enter to send)", id="path")
            yield DirectoryTree(str(self.start), id="tree")
            yield Static(
                "The file is encrypted on this device before it is uploaded.  "
                "enter: send   escape: close",
                classes="hint",
            )

    @on(DirectoryTree.FileSelected)
    def _file(self, event: DirectoryTree.FileSelected) -> None:
        self.query_one("#path", Input).value = str(event.path)
        self.dismiss(Path(event.path))

    @on(Input.Submitted, "#path")
    def _typed(self, event: Input.Submitted) -> None:
        path = Path(event.value).expanduser()
        if not path.is_file():
            self.notify(f"{path} is not a file", severity="error")
            return
        self.dismiss(path)


class SaveScreen(Dialog):
    """Where to save a received file; dismisses with a directory ``Path``."""

    def __init__(self, name: str, start: Path) -> None:
        super().__init__()
        self.file_name = name
        self.start = start

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Save {self.file_name}", classes="title")
            yield Input(value=str(self.start), id="dir")
            yield Static(
                "The file is checked against its sender's digest before it is "
                "decrypted, and never overwrites a file.  enter: save   escape: close",
                classes="hint",
            )

    @on(Input.Submitted, "#dir")
    def _typed(self, event: Input.Submitted) -> None:
        self.dismiss(Path(event.value).expanduser())


# --- reactions ---------------------------------------------------------------------------------

QUICK_REACTIONS = ("👍", "❤️", "😂", "😮", "😢", "🙏")


class ReactScreen(Dialog):
    """Pick a reaction: 1-6 (or enter) for the usual ones; tab to type any emoji."""

    BINDINGS = [
        Binding(str(i + 1), f"quick({i})", e, show=False)
        for i, e in enumerate(QUICK_REACTIONS)
    ]
    DEFAULT_CSS = """
    ReactScreen > Vertical { max-height: 16; max-width: 50; }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("React", classes="title")
            yield OptionList(
                *[Option(f"{i + 1}  {e}", id=e) for i, e in enumerate(QUICK_REACTIONS)],
                id="quick",
            )
            yield Input(placeholder="or type an emoji and press enter", id="emoji")

    def on_mount(self) -> None:
        self.query_one("#quick", OptionList).focus()

    def action_quick(self, index: int) -> None:
        self.dismiss(QUICK_REACTIONS[index])

    @on(OptionList.OptionSelected, "#quick")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    @on(Input.Submitted, "#emoji")
    def _typed(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.dismiss(event.value.strip())


# --- warnings and policy --------------------------------------------------------------------------


class PolicyScreen(Dialog):
    """The organisation's policy in force (its rules in words, escrow first), loud
    alerts, and every warning the SDK raised on this device."""

    def __init__(self, policy: Text, alerts: list[str], warnings: list[str]) -> None:
        super().__init__()
        self.policy = policy
        self.alerts = alerts
        self.warnings = warnings

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Policy and warnings", classes="title")
            with VerticalScroll():
                yield Static(Text("Policy in force", style="bold underline"))
                yield Static(self.policy, id="policy")
                yield Static("")
                yield Static(Text("Alerts", style="bold underline"))
                yield Static(
                    "\n".join(f"⚠ {a}" for a in self.alerts) or "none", id="alert-list"
                )
                yield Static("")
                yield Static(
                    Text(
                        f"Warnings on this device ({len(self.warnings)})",
                        style="bold underline",
                    )
                )
                yield Static("\n".join(self.warnings) or "none", id="warning-list")
            yield Static("escape: close", classes="hint")
