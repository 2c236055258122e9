"""``strongroom chat``: the full-screen messenger, on the SDK's ``Session``.

Layout: conversations on the left (filter box above them), the open conversation on the
right (title, the timer and escrow notes, messages, composer), the connection and any
alert below, key hints at the bottom.  Rules:

1. The app holds no messaging logic: what is sent, to whom, what is trusted and what
   the history holds are the SDK's (``Session``, ``History``, ``Verifications``).  The
   app turns SDK events into redraws and key presses into SDK calls.
2. The session's events arrive on the app's own event loop and are posted as Textual
   messages (``SessionEvent``), so widgets change only in message handlers.
3. Nothing the SDK raises for a person's action crashes the app: it becomes a
   notification (``attempt``).
4. The policy in force is what the device's store verifies now (``Session.policy``),
   read again every half second: the session announces no policy change.  While it
   turns escrow on, the header and every conversation say so.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import (
    Button,
    Footer,
    Header,
    Input,
    OptionList,
    ProgressBar,
    Static,
    TextArea,
)
from textual.widgets.option_list import Option

from strongroom import proto
from strongroom.client import (
    Arrived,
    Backoff,
    Client,
    Event,
    FlowState,
    HistoryChanged,
    HistoryItem,
    SasFlow,
    Session,
    Status,
    StatusChanged,
    VerificationChanged,
    Warned,
)
from strongroom.errors import StrongroomError

from ._dialogs import (
    DevicesScreen,
    FilePickerScreen,
    NewChatScreen,
    NewGroupScreen,
    PolicyScreen,
    ReactScreen,
    SaveScreen,
    SearchScreen,
    VerifyScreen,
)
from ._format import (
    conversation_line,
    duration_text,
    message_text,
    policy_text,
    status_text,
    when,
)
from ._manage import change_timer, manage_group

__all__ = ["ChatApp"]


class SessionEvent(Message):
    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class ChatApp(App[None]):
    """The messenger for the device in ``home``.

    ``clock`` (ms), ``tz`` and ``rand`` (the reconnection jitter) are injected by tests
    for stable screenshots; ``backoff`` sets how fast it reconnects; ``downloads`` is
    where received files are offered to be saved; ``passcode`` opens a protected store.
    """

    TITLE = "Strongroom"
    CSS = """
    #body { height: 1fr; }
    #sidebar { width: 34; min-width: 24; border-right: solid $primary-darken-2; }
    #filter { margin: 0; }
    #conversations { height: 1fr; border: none; }
    #main { width: 1fr; min-width: 24; }
    #title { height: 1; padding: 0 1; background: $boost; text-style: bold; }
    #timer { height: 1; padding: 0 1; background: $boost; display: none; }
    #escrow { height: auto; max-height: 2; padding: 0 1; display: none;
              background: $warning 40%; text-style: bold; }
    #messages { height: 1fr; border: none; }
    #context { height: auto; padding: 0 1; color: $warning; display: none; }
    #composer-row { height: auto; max-height: 8; }
    #composer { height: auto; min-height: 3; max-height: 8; width: 1fr; min-width: 12; }
    #send { width: 8; min-width: 8; height: 3; }
    #transfer { height: 1; display: none; padding: 0 1; }
    #alerts { height: auto; max-height: 3; display: none; padding: 0 1;
              background: $error; color: $text; text-style: bold; }
    #status { height: 1; padding: 0 1; }
    OptionList:nocolor > .option-list--option-highlighted { text-style: reverse; }
    """
    # Priority: the messenger's keys win over the composer's editing keys of the same
    # name (ctrl+d, ctrl+f, ctrl+w); ``check_action`` turns them off under a dialog.
    BINDINGS = [
        Binding("ctrl+s", "send", "Send", priority=True),
        Binding("ctrl+n", "new_chat", "New chat", priority=True),
        Binding("ctrl+g", "new_group", "New group", priority=True),
        Binding("ctrl+f", "search", "Search", priority=True),
        Binding("ctrl+t", "info", "Info", priority=True),
        Binding("ctrl+d", "devices", "Devices", priority=True),
        Binding("ctrl+o", "attach", "Attach", priority=True),
        Binding("ctrl+l", "timer", "Timer", priority=True),
        Binding("ctrl+w", "warnings", "Policy", priority=True),
        Binding("ctrl+r", "reconnect", "Reconnect", show=False, priority=True),
        Binding("escape", "cancel_context", "Cancel", show=False),
        Binding("ctrl+q", "quit", "Quit"),
    ]
    _MAIN_ONLY = frozenset(
        {"send", "new_chat", "new_group", "search", "info", "devices", "attach",
         "timer", "warnings", "cancel_context"}
    )  # fmt: skip

    def __init__(
        self,
        home: Path,
        *,
        clock: Callable[[], int] | None = None,
        tz: datetime.tzinfo | None = None,
        backoff: Backoff | None = None,
        rand: Callable[[], float] | None = None,
        downloads: Path | None = None,
        passcode: str | None = None,
    ) -> None:
        super().__init__()
        if clock is None:
            self.client = Client(home, passcode=passcode)
        else:
            self.client = Client(home, clock, passcode=passcode)
        if rand is None:
            self.session = Session(self.client, backoff=backoff)
        else:
            self.session = Session(self.client, backoff=backoff, rand=rand)
        self.tz = tz
        self.downloads = downloads or Path.home() / "Downloads"
        self.me = self.session.me
        self.conversation: str | None = None
        self.items: list[HistoryItem] = []
        self.reply_to: HistoryItem | None = None
        self.editing: HistoryItem | None = None
        self.retry_in: float | None = None
        self.verify_screens: dict[bytes, VerifyScreen] = {}
        self._named = False
        self.policy = self.session.policy()
        self.sub_title = f"{self.me} · {self.client.device.org}"

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # a dialog is open: its keys, not the main screen's
        return not (action in self._MAIN_ONLY and len(self.screen_stack) > 1)

    # --- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="■")
        yield Static(id="alerts")
        with Horizontal(id="body"):
            with Vertical(id="sidebar"):
                yield Input(
                    placeholder="filter conversations", id="filter", compact=True
                )
                yield OptionList(id="conversations")
            with Vertical(id="main"):
                yield Static("No conversation open: ctrl+n starts one", id="title")
                yield Static(id="timer")
                yield Static(id="escrow")
                yield MessageList(id="messages")
                yield Static(id="context")
                with Horizontal(id="composer-row"):
                    yield TextArea(
                        id="composer",
                        placeholder="write a message (ctrl+s sends)",
                        show_line_numbers=False,
                    )
                    yield Button("Send", id="send")
                yield ProgressBar(id="transfer", show_eta=False)
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.session.subscribe(self._post_event)
        self.run_worker(self.session.run(), name="session", exclusive=True)
        self.refresh_all()
        self._show_policy()
        self.query_one("#conversations", OptionList).focus()
        self.set_interval(0.5, self._tick)

    def _post_event(self, event: Event) -> None:
        self.post_message(SessionEvent(event))

    async def on_unmount(self) -> None:
        await self.client.close()

    def now(self) -> int:
        return self.client.device.clock()

    # --- session events ---------------------------------------------------------------------

    @on(SessionEvent)
    def _session_event(self, message: SessionEvent) -> None:
        event = message.event
        if isinstance(event, StatusChanged):
            self.retry_in = event.retry_in
            self.refresh_status()
            if event.status is Status.ONLINE and not self._named:
                self._fetch_names()
        elif isinstance(event, HistoryChanged):
            self.refresh_conversations()
            if event.conversation == self.conversation:
                self.refresh_messages()
            self.refresh_status()
        elif isinstance(event, Arrived):
            received = event.received
            if received.conversation == self.conversation and received.kind in (
                "text",
                "file",
            ):
                self._mark_seen()
            elif received.kind == "timer" and received.from_user != self.me:
                what = (
                    "off" if received.timer is None else duration_text(received.timer)
                )
                self.notify(
                    f"{received.from_user} set disappearing messages to {what} in "
                    f"{self.session.history.title(received.conversation)}",
                    title="Timer",
                )
        elif isinstance(event, Warned):
            self.notify(event.text, title="Warning", severity="warning", timeout=8)
            self.refresh_alerts()
        elif isinstance(event, VerificationChanged):
            self._verification_changed(event.flow)

    @work(group="names")
    async def _fetch_names(self) -> None:
        """Cache the directory's names once online, for readable titles."""
        try:
            await self.session.directory()
        except StrongroomError:
            return
        self._named = True
        self.refresh_conversations()
        self.refresh_messages()

    def refresh_all(self) -> None:
        self.refresh_conversations()
        self.refresh_messages()
        self.refresh_status()
        self.refresh_alerts()

    def _tick(self) -> None:
        """Twice a second: the policy in force (rule 4), and messages whose time is up
        leave the screen (the SDK deletes them; offline, nothing else would ask it)."""
        policy = self.session.policy()
        if policy != self.policy:
            was_escrow = self.policy is not None and self.policy.escrow
            self.policy = policy
            self._show_policy()
            if policy is not None and policy.escrow and not was_escrow:
                self.notify(
                    "the organisation turned lawful-access escrow on (ctrl+w)",
                    title="Escrow on",
                    severity="warning",
                    timeout=15,
                )
            elif policy is not None:
                self.notify(f"policy version {policy.version} is in force (ctrl+w)")
        now = self.now()
        if any(i.expires_at is not None and i.expires_at <= now for i in self.items):
            self.client.purge()
            self.refresh_messages()
            self.refresh_conversations()

    def _show_policy(self) -> None:
        escrow = self.policy is not None and self.policy.escrow
        org = self.client.device.org
        self.sub_title = f"{self.me} · {org}" + ("  ·  ⚠ escrow on" if escrow else "")
        note = self.query_one("#escrow", Static)
        note.display = escrow
        note.update(
            "⚠ escrow on: k of n custodians can open what is sent here (ctrl+w)"
        )

    def refresh_status(self) -> None:
        s = self.session
        self.query_one("#status", Static).update(
            status_text(s.status, s.detail, s.queued(), self.retry_in)
        )

    def refresh_alerts(self) -> None:
        alerts = self.session.verifications.alerts()
        box = self.query_one("#alerts", Static)
        box.display = bool(alerts)
        box.update("\n".join(f"⚠ {a}" for a in alerts[:3]))

    def refresh_conversations(self) -> None:
        needle = self.query_one("#filter", Input).value
        options = self.query_one("#conversations", OptionList)
        summaries = self.session.history.conversations(needle)
        highlighted = self.conversation
        options.clear_options()
        width = max(10, options.size.width - 4 if options.size.width else 30)
        for summary in summaries:
            options.add_option(
                Option(
                    conversation_line(summary, self.me, self.tz, self.now(), width),
                    id=summary.conversation,
                )
            )
        index = next(
            (i for i, s in enumerate(summaries) if s.conversation == highlighted), 0
        )
        if summaries:
            options.highlighted = index

    def refresh_messages(self, focus_id: str | None = None) -> None:
        title = self.query_one("#title", Static)
        messages = self.query_one("#messages", MessageList)
        if self.conversation is None:
            self.items = []
            messages.clear_options()
            self.query_one("#timer", Static).display = False
            return
        history = self.session.history
        group = proto.group_of_conversation(self.conversation)
        label = Text(history.title(self.conversation), style="bold")
        if group is not None:
            state = self.client.groups.state(group)
            if state is not None and self.me not in state.members:
                label.append("  ·  you left this group", style="bold")
            elif state is not None:
                count = len(state.members)
                plural = "" if count == 1 else "s"
                label.append(f"  ·  {count} member{plural} (ctrl+t)", style="dim")
        else:
            user = self._dm_user()
            if user is not None:
                devices = self.session.verifications.devices(user)
                others = [d for d in devices if not d.this_device and not d.revoked]
                if others and all(d.verified for d in others):
                    label.append("  ✓ verified", style="green")
                elif any(d.verified for d in others):
                    label.append("  ⚠ has an unverified device", style="bold red")
                else:
                    label.append("  not verified (ctrl+d)", style="dim")
        title.update(label)
        seconds, _ = self.client.store.conversation_settings(self.conversation)
        timer = self.query_one("#timer", Static)
        timer.display = seconds is not None
        if seconds is not None:
            timer.update(
                f"⏱ messages disappear after {duration_text(seconds)} (ctrl+l)"
            )
        previous = messages.highlighted
        # follow new messages when the newest was highlighted; else stay put
        keep = focus_id or (
            self.items[previous].id
            if previous is not None and previous < len(self.items) - 1
            else None
        )
        self.items = history.messages(self.conversation)
        verified = {
            d.device_id
            for user in {i.from_user for i in self.items}
            for d in self.session.verifications.devices(user)
            if d.verified
        }
        messages.clear_options()
        for item in self.items:
            messages.add_option(
                Option(
                    message_text(
                        item,
                        self.me,
                        self.tz,
                        self.now(),
                        verified_sender=item.from_device in verified
                        and not item.outgoing,
                    ),
                    id=item.id,
                )
            )
        if self.items:
            index = len(self.items) - 1
            if keep is not None:
                index = next(
                    (i for i, it in enumerate(self.items) if it.id == keep), index
                )
            messages.highlighted = index

    def _dm_user(self) -> str | None:
        if self.conversation is None:
            return None
        parts = self.conversation.split(":")
        if parts[0] != "dm":
            return None
        others = [u for u in parts[1:] if u != self.me]
        return others[0] if others else self.me

    # --- conversations ------------------------------------------------------------------

    @on(Input.Changed, "#filter")
    def _filter(self) -> None:
        self.refresh_conversations()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.query_one("#conversations", OptionList).focus()

    @on(OptionList.OptionSelected, "#conversations")
    def _open_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            self.open(event.option.id)

    def open(self, conversation: str, focus_id: str | None = None) -> None:
        self.conversation = conversation
        self.reply_to = self.editing = None
        self._show_context()
        self.query_one("#messages", MessageList).highlighted = None  # to the newest
        self.refresh_messages(focus_id)
        self.refresh_conversations()
        self._mark_seen()
        self.query_one("#composer", TextArea).focus()

    @work(group="read", exclusive=True)
    async def _mark_seen(self) -> None:
        if self.conversation is not None:
            await self.session.mark_seen(self.conversation)
            self.refresh_conversations()

    # --- composing -------------------------------------------------------------------------

    def action_send(self) -> None:
        composer = self.query_one("#composer", TextArea)
        text = composer.text.strip()
        if self.conversation is None:
            self.notify("open a conversation first (ctrl+n)", severity="warning")
            return
        if not text:
            return
        conversation = self.conversation
        if not self.may_send(conversation):
            return
        try:
            if self.editing is not None:
                self.session.edit(conversation, self.editing.id, text)
            else:
                reply = self.reply_to.id if self.reply_to is not None else None
                self.session.send_text(conversation, text, reply_to=reply)
        except StrongroomError as exc:
            self.notify(str(exc), title="Not sent", severity="error")
            return
        composer.clear()
        self.reply_to = self.editing = None
        self._show_context()
        self.refresh_messages()

    @on(Button.Pressed, "#send")
    def _send_button(self) -> None:
        self.action_send()

    def _selected(self) -> HistoryItem | None:
        messages = self.query_one("#messages", MessageList)
        index = messages.highlighted
        if index is None or index >= len(self.items):
            return None
        return self.items[index]

    def _show_context(self) -> None:
        context = self.query_one("#context", Static)
        if self.editing is not None:
            context.update(
                f"Editing your message (escape cancels): {self.editing.text[:60]}"
            )
        elif self.reply_to is not None:
            who = "you" if self.reply_to.outgoing else self.reply_to.from_user
            context.update(
                f"Replying to {who}: {self.reply_to.text[:60]} (escape cancels)"
            )
        context.display = self.editing is not None or self.reply_to is not None

    def action_cancel_context(self) -> None:
        if self.editing is not None:
            self.query_one("#composer", TextArea).clear()
        self.reply_to = self.editing = None
        self._show_context()

    def reply(self) -> None:
        item = self._selected()
        if item is not None:
            self.reply_to, self.editing = item, None
            self._show_context()
            self.query_one("#composer", TextArea).focus()

    def edit(self) -> None:
        item = self._selected()
        if item is None:
            return
        if not item.outgoing or item.kind != "text":
            self.notify("only your own text messages can be edited", severity="warning")
            return
        self.editing, self.reply_to = item, None
        composer = self.query_one("#composer", TextArea)
        composer.text = item.text
        self._show_context()
        composer.focus()

    def may_send(self, conversation: str) -> bool:
        """Whether there is anyone to send to in a group (else say why): sending where
        no other member is would leave an undeliverable message in the SDK's outbox."""
        group = proto.group_of_conversation(conversation)
        state = None if group is None else self.client.groups.state(group)
        if state is None or (self.me in state.members and state.members != {self.me}):
            return True
        if self.me not in state.members:
            self.notify("you are no longer a member of this group", severity="warning")
        else:
            self.notify(
                "nobody else is in this group yet: add someone first (ctrl+t)",
                severity="warning",
            )
        return False

    def react(self) -> None:
        item = self._selected()
        conversation = self.conversation
        if item is None or conversation is None or not self.may_send(conversation):
            return

        def chosen(emoji: object) -> None:
            if isinstance(emoji, str):
                mine = any(
                    e == emoji and self.me in users for e, users in item.reactions
                )
                self._attempt_sync(
                    lambda: self.session.react(
                        conversation, item.id, emoji, remove=mine
                    )
                )

        self.push_screen(ReactScreen(), chosen)

    def _attempt_sync(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except StrongroomError as exc:
            self.notify(str(exc), severity="error")

    # --- files ---------------------------------------------------------------------------------

    def action_attach(self) -> None:
        if self.conversation is None:
            self.notify("open a conversation first", severity="warning")
            return
        conversation = self.conversation
        if not self.may_send(conversation):
            return

        def chosen(path: object) -> None:
            if isinstance(path, Path):
                self._upload(conversation, path)

        self.push_screen(FilePickerScreen(Path.cwd()), chosen)

    def _progress(self, done: int, total: int) -> None:
        bar = self.query_one("#transfer", ProgressBar)
        bar.display = True
        bar.update(total=max(total, 1), progress=done)

    def _progress_done(self) -> None:
        self.query_one("#transfer", ProgressBar).display = False

    @work(group="transfer")
    async def _upload(self, conversation: str, path: Path) -> None:
        self._progress(0, 1)
        try:
            await self.session.send_file(conversation, path, self._progress)
        except StrongroomError as exc:
            self.notify(str(exc), title="Not sent", severity="error")
        finally:
            self._progress_done()

    def save(self) -> None:
        item = self._selected()
        if item is None or item.file is None:
            self.notify("select a message with an attachment first", severity="warning")
            return
        ref = item.file

        def chosen(dest: object) -> None:
            if isinstance(dest, Path):
                self._download(ref, dest)

        self.push_screen(SaveScreen(ref.name, self.downloads), chosen)

    @work(group="transfer")
    async def _download(self, ref: proto.FileRef, dest: Path) -> None:
        self._progress(0, 1)
        try:
            saved = await self.session.save_file(ref, dest, self._progress)
        except StrongroomError as exc:
            self.notify(str(exc), title="Not saved", severity="error")
        else:
            self.notify(f"saved as {saved}", title="Saved")
        finally:
            self._progress_done()

    # --- dialogs ------------------------------------------------------------------------------

    async def attempt(self, what: Awaitable[Any], failed: str) -> Any:
        """Run an SDK call; a refusal becomes a notification (rule 3)."""
        try:
            return await what
        except StrongroomError as exc:
            self.notify(str(exc), title=failed, severity="error")
            return None

    @work(group="dialog")
    async def action_new_chat(self) -> None:
        users, note = await self.directory_entries()
        user = await self.push_screen_wait(NewChatScreen(users, note))
        if isinstance(user, str):
            self.open(proto.conversation_for(self.me, user))

    async def directory_entries(self) -> tuple[list[proto.DirectoryEntry], str]:
        try:
            return await self.session.directory(), ""
        except StrongroomError:
            names = self.session.history.names()
            cached = [proto.DirectoryEntry(u, n) for u, n in sorted(names.items())]
            return cached, "offline: showing the directory as last fetched"

    @work(group="dialog")
    async def action_new_group(self) -> None:
        users, _ = await self.directory_entries()
        chosen = await self.push_screen_wait(NewGroupScreen(users, self.me))
        if isinstance(chosen, tuple):
            name, members = chosen
            conversation = await self.attempt(
                self.session.create_group(name, members), "Group not created"
            )
            if conversation is not None:
                self.open(conversation)

    @work(group="dialog")
    async def action_info(self) -> None:
        if self.conversation is None:
            return
        group = proto.group_of_conversation(self.conversation)
        if group is None:
            await self._devices([self._dm_user() or self.me])
        else:
            await manage_group(self, group)

    @work(group="dialog")
    async def action_timer(self) -> None:
        if self.conversation is None:
            self.notify("open a conversation first", severity="warning")
            return
        await change_timer(self, self.conversation)

    @work(group="dialog")
    async def action_devices(self) -> None:
        users = [self.me]
        if self.conversation is not None:
            group = proto.group_of_conversation(self.conversation)
            if group is not None:
                state = self.client.groups.state(group)
                users += sorted((state.members if state else frozenset()) - {self.me})
            elif (user := self._dm_user()) and user != self.me:
                users.append(user)
        await self._devices(users)

    async def _devices(self, users: list[str]) -> None:
        sections = []
        for user in dict.fromkeys(users):
            devices = await self.session.refresh_devices(user)
            heading = "Your devices" if user == self.me else f"{user}'s devices"
            sections.append((heading, devices))
        device_id = await self.push_screen_wait(DevicesScreen(sections))
        if isinstance(device_id, str):
            flow = await self.attempt(
                self.session.verify(device_id), "Verification not started"
            )
            if flow is not None:
                self._verification_changed(flow)

    def _verification_changed(self, flow: SasFlow) -> None:
        screen = self.verify_screens.get(flow.flow)
        if screen is None:
            if flow.done:
                self.refresh_all()
                return
            screen = VerifyScreen(flow, self._verification_action)
            self.verify_screens[flow.flow] = screen

            def closed(_: object) -> None:
                self.verify_screens.pop(flow.flow, None)

            self.push_screen(screen, closed)
        elif screen.is_attached:
            screen.refresh_flow()
        if flow.state is FlowState.VERIFIED:
            self.refresh_all()

    def _verification_action(self, flow: SasFlow, action: str) -> None:
        async def act() -> None:
            await self.attempt(self.session.verification(flow, action), "Verification")
            self._verification_changed(flow)

        self.run_worker(act(), group="verify")

    def action_search(self) -> None:
        history = self.session.history

        def chosen(hit: object) -> None:
            if isinstance(hit, tuple):
                self.open(hit[0], focus_id=hit[1])

        self.push_screen(SearchScreen(history.search, history.title, self.tz), chosen)

    def action_warnings(self) -> None:
        warnings = [
            f"{when(at, self.tz)}  {text}" for at, text in self.client.store.warnings()
        ]
        self.push_screen(
            PolicyScreen(
                policy_text(self.policy, self.tz),
                self.session.verifications.alerts(),
                warnings[-200:],
            )
        )

    def action_reconnect(self) -> None:
        self.session.retry_now()


class MessageList(OptionList):
    """The open conversation's messages; keys act on the highlighted one."""

    BINDINGS = [
        Binding("r", "reply", "Reply"),
        Binding("e", "edit", "Edit"),
        Binding("a", "react", "React"),
        Binding("s", "save", "Save file"),
    ]

    @property
    def chat(self) -> ChatApp:
        app = self.app
        assert isinstance(app, ChatApp)
        return app

    def action_reply(self) -> None:
        self.chat.reply()

    def action_edit(self) -> None:
        self.chat.edit()

    def action_react(self) -> None:
        self.chat.react()

    def action_save(self) -> None:
        self.chat.save()


def run_chat(home: Path) -> None:
    """Run the app in this terminal until the person quits."""
    os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")
    ChatApp(home).run()
