"""Messaging commands: send, receive, listen, read, receipts, react, edit, timer."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from strongroom import client, proto
from strongroom.client import Received

from ._common import console, fail, parse_duration, run
from ._device import HomeOpt, JsonOpt, show_warnings
from ._passcode import open_client

__all__ = ["edit", "listen", "react", "read", "receipts", "receive", "send", "timer"]

GroupOpt = Annotated[
    str | None, typer.Option("--group", help="a group id (instead of USER)")
]


def _stamp(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _message_id(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 16:
        fail(f"{text!r} is not a message id (32 hex digits, as receive --json shows)")
    return raw


def _target(user: str | None, group: str | None) -> tuple[str | None, str | None]:
    if (user is None) == (group is None):
        fail("name one USER or one --group")
    if group is not None and proto.GROUP_ID_RE.fullmatch(group) is None:
        fail(f"{group!r} is not a group id (as `group list` shows)")
    return user, group


async def _send(
    c: client.Client,
    user: str | None,
    group: str | None,
    content: proto.UserContent,
    expires_in: int | None = None,
    blobs: list[str] | None = None,
) -> client.SendResult:
    if group is not None:
        return await c.send_group(group, content, expires_in=expires_in, blobs=blobs)
    assert user is not None
    return await c.send(user, content, expires_in=expires_in, blobs=blobs)


def send(
    home: HomeOpt,
    user: Annotated[str | None, typer.Argument(help="who to send to")] = None,
    text: Annotated[str, typer.Argument(help="the message (a file's caption)")] = "",
    group: GroupOpt = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="send this file, encrypted")
    ] = None,
    reply_to: Annotated[
        str | None, typer.Option("--reply-to", help="the id of the message answered")
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option("--expires", help="this message disappears after, e.g. 1h"),
    ] = None,
) -> None:
    """Encrypt TEXT (or a file) to USER's or a group's devices, and your other devices;
    wait until the server has it."""
    if group is not None and user is not None and not text:
        text, user = user, None  # `send --group G TEXT`
    user, group = _target(user, group)
    if file is None and not text:
        fail("nothing to send: give TEXT or --file")
    replying = None if reply_to is None else _message_id(reply_to)
    expires_in = None if expires is None else parse_duration(expires)

    async def go() -> client.SendResult:
        async with open_client(home) as c:
            try:
                if file is None:
                    content: proto.UserContent = proto.Text(text, replying)
                    return await _send(c, user, group, content, expires_in)
                from ._transfer import upload

                ref = await upload(c, file, text)
                return await _send(c, user, group, ref, expires_in, [ref.blob])
            finally:
                show_warnings(c.warnings)

    result = run(go())
    console.print(f"sent {result.id} to {len(result.devices)} device(s)")


def _objects(message: Received) -> list[dict[str, Any]]:
    """The JSON objects ``receive --json`` prints for one thing received."""
    base: dict[str, Any] = {
        "id": message.id,
        "from_user": message.from_user,
        "from_device": message.from_device,
        "conversation": message.conversation,
        "group": message.group,
        "sent_at": message.sent_at,
    }
    if message.expires_at is not None:
        base["expires_at"] = message.expires_at
    if message.kind == "receipt":
        return [{"receipt": message.receipt, "for": t, **base} for t in message.targets]
    if message.kind == "edit":
        return [{**base, "edit": message.target, "text": message.text}]
    if message.kind == "reaction":
        return [
            {
                **base,
                "reaction": message.emoji,
                "for": message.target,
                "removed": message.removed,
            }
        ]
    if message.kind == "timer":
        return [{**base, "timer": message.timer}]
    shown = {**base, "text": message.text}
    if message.reply_to is not None:
        shown["reply_to"] = message.reply_to
    if message.file is not None:
        shown["file"] = {
            "name": message.file.name,
            "size": message.file.size,
            "mime": message.file.mime,
        }
    return [shown]


def _line(message: Received) -> str:
    who = f"[dim]{_stamp(message.sent_at)}[/] [bold]{message.from_user}[/]"
    where = f" [dim]in {message.group[:8]}[/]" if message.group else ""
    head = f"{who}{where} [dim]({message.from_device[:6]})[/]"
    if message.kind == "receipt":
        return f"{head}: {message.receipt} {len(message.targets)} message(s)"
    if message.kind == "edit":
        return f"{head} edited {str(message.target)[:8]}: {message.text}"
    if message.kind == "reaction":
        verb = "took back" if message.removed else "reacted"
        return f"{head} {verb} {message.emoji} on {str(message.target)[:8]}"
    if message.kind == "timer":
        timer = "off" if message.timer is None else f"{message.timer}s"
        return f"{head} set disappearing messages: {timer}"
    if message.file is not None:
        return f"{head}: [file {message.file.name}, {message.file.size} bytes] {message.text}"
    reply = f"[dim](re {message.reply_to[:8]})[/] " if message.reply_to else ""
    return f"{head}: {reply}{message.text}"


async def _print(
    c: client.Client, message: Received, as_json: bool, save_dir: Path | None
) -> None:
    saved: Path | None = None
    if save_dir is not None and message.file is not None:
        from ._transfer import download

        saved = await download(c, message.file, save_dir)
    if as_json:
        for obj in _objects(message):
            if saved is not None:
                obj["file"]["saved"] = str(saved)
            print(json.dumps(obj), flush=True)
    else:
        console.print(_line(message), soft_wrap=True)
        if saved is not None:
            console.print(f"  saved to {saved}")


SaveOpt = Annotated[
    Path | None, typer.Option("--save-dir", help="save received files here")
]


def receive(
    home: HomeOpt,
    wait: Annotated[
        float, typer.Option("--wait", help="seconds to wait for more")
    ] = 0.0,
    as_json: JsonOpt = False,
    save_dir: SaveOpt = None,
) -> None:
    """Fetch, decrypt, acknowledge and print what is waiting."""

    async def go() -> None:
        async with open_client(home) as c:
            try:
                async for message in c.messages(wait):
                    await _print(c, message, as_json, save_dir)
            finally:
                show_warnings(c.warnings)

    run(go())


def listen(home: HomeOpt, as_json: JsonOpt = False, save_dir: SaveOpt = None) -> None:
    """Stay connected and print messages as they arrive (Ctrl-C to stop)."""

    async def go() -> None:
        async with open_client(home) as c:
            shown = 0
            async for message in c.messages(None):
                show_warnings(c.warnings[shown:])
                shown = len(c.warnings)
                await _print(c, message, as_json, save_dir)

    run(go())


def read(
    home: HomeOpt,
    ids: Annotated[list[str], typer.Argument(help="ids of messages you have read")],
) -> None:
    """Mark messages read: their senders get a read receipt (unless switched off)."""
    wanted = [_message_id(i) for i in ids]

    async def go() -> int:
        async with open_client(home) as c:
            try:
                return await c.mark_read(wanted)
            finally:
                show_warnings(c.warnings)

    sent = run(go())
    console.print(f"marked {len(wanted)} read; {sent} read receipt(s) sent")


def react(
    home: HomeOpt,
    message: Annotated[str, typer.Argument(help="the message id")],
    emoji: Annotated[str, typer.Argument(help="the reaction")],
    remove: Annotated[bool, typer.Option("--remove", help="take it back")] = False,
) -> None:
    """React to a message in its conversation."""
    target = _message_id(message)
    if not 1 <= len(emoji) <= proto.MAX_REACTION:
        fail(f"a reaction is 1 to {proto.MAX_REACTION} characters")
    _follow_up(home, target, proto.Reaction(target, emoji, remove))


def edit(
    home: HomeOpt,
    message: Annotated[str, typer.Argument(help="the id of your message")],
    text: Annotated[str, typer.Argument(help="its new text")],
) -> None:
    """Change the text of one of your own messages, for everyone in the conversation."""
    target = _message_id(message)
    _follow_up(home, target, proto.Edit(target, text), own=True)


def _follow_up(
    home: Path, target: bytes, content: proto.UserContent, own: bool = False
) -> None:
    async def go() -> client.SendResult:
        async with open_client(home) as c:
            try:
                original = c.held_message(target)
                if own and original.from_user != c.device.user:
                    fail("you can only edit your own messages")
                group = proto.group_of_conversation(original.conversation)
                if group is not None:
                    return await c.send_group(group, content)
                users = original.conversation.split(":")[1:]
                other = next((u for u in users if u != c.device.user), c.device.user)
                return await c.send(other, content)
            finally:
                show_warnings(c.warnings)

    result = run(go())
    console.print(f"sent {result.id}")


def timer(
    home: HomeOpt,
    duration: Annotated[str, typer.Argument(help="e.g. 1h or 7d, or off")],
    user: Annotated[str | None, typer.Argument(help="the other user")] = None,
    group: GroupOpt = None,
) -> None:
    """Set a conversation's disappearing-message timer for all its members."""
    user, group = _target(user, group)
    seconds = None if duration.strip().lower() == "off" else parse_duration(duration)

    async def go() -> client.SendResult:
        async with open_client(home) as c:
            try:
                return await c.set_timer(seconds, to_user=user, group=group)
            finally:
                show_warnings(c.warnings)

    run(go())
    shown = "off" if seconds is None else f"{seconds}s"
    console.print(f"disappearing messages: {shown}")


def receipts(
    home: HomeOpt,
    setting: Annotated[str, typer.Argument(help="on or off")],
    user: Annotated[str | None, typer.Argument(help="the other user")] = None,
    group: GroupOpt = None,
) -> None:
    """Switch sending read receipts in one conversation on or off (this device)."""
    user, group = _target(user, group)
    if setting not in ("on", "off"):
        fail("say on or off")

    async def go() -> str:
        async with open_client(home) as c:
            if group is not None:
                conversation = proto.group_conversation(group)
            else:
                assert user is not None
                conversation = proto.conversation_for(c.device.user, user)
            with c.store.transaction():
                c.store.set_read_receipts(conversation, setting == "on")
            return conversation

    conversation = run(go())
    console.print(f"read receipts in {conversation}: {setting}")
