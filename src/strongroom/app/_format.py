"""How the chat app puts the SDK's values into words: pure functions, no widgets.

Nothing here decides anything about messages or trust (the SDK does); it only chooses
words, symbols and layout.  Every distinction is made in text too, never by colour
alone, so the app reads the same with ``NO_COLOR``.
"""

from __future__ import annotations

import datetime
import re

from rich.text import Text

from strongroom import proto
from strongroom.client import (
    ConversationSummary,
    DeviceTrust,
    HistoryItem,
    PolicyInForce,
    Status,
)

__all__ = [
    "STATE_LABELS",
    "change_text",
    "conversation_line",
    "device_line",
    "duration_text",
    "message_text",
    "parse_duration",
    "policy_text",
    "size_text",
    "status_text",
    "when",
]

#: Delivery states as BlackBerry users knew them: D once delivered, R once read.
STATE_LABELS = {
    "sending": "sending…",
    "failed": "✗ not sent",
    "sent": "✓ sent",
    "delivered": "✓ D",
    "read": "✓ R",
}


def when(ms: int, tz: datetime.tzinfo | None = None, now_ms: int | None = None) -> str:
    """``HH:MM`` for today, ``DD Mon HH:MM`` before (in ``tz``; local time if None)."""
    stamp = datetime.datetime.fromtimestamp(ms / 1000, tz=tz)
    if now_ms is not None:
        today = datetime.datetime.fromtimestamp(now_ms / 1000, tz=tz).date()
        if stamp.date() != today:
            return stamp.strftime("%d %b %H:%M")
    return stamp.strftime("%H:%M")


_UNITS = (("week", 604_800), ("day", 86_400), ("h", 3600), ("min", 60))


def duration_text(seconds: int) -> str:
    """``90 s``, ``5 min``, ``8 h``, ``2 days``, ``1 week``: the largest whole unit."""
    for unit, size in _UNITS:
        if seconds % size == 0:
            count = seconds // size
            plural = "s" if count != 1 and unit in ("week", "day") else ""
            return f"{count} {unit}{plural}"
    return f"{seconds} s"


_UNIT_WORDS = {
    1: ("", "s", "sec", "secs", "second", "seconds"),
    60: ("m", "min", "mins", "minute", "minutes"),
    3600: ("h", "hr", "hrs", "hour", "hours"),
    86_400: ("d", "day", "days"),
    604_800: ("w", "wk", "wks", "week", "weeks"),
}


def parse_duration(text: str) -> int:
    """A duration as people type it (``90s``, ``10 min``, ``8h``, ``2 days``, ``1w``;
    a bare number is seconds) in seconds.  Raises ``ValueError`` for anything else."""
    match = re.fullmatch(r"\s*(\d{1,9})\s*([a-z]*)\s*", text.lower())
    if match is not None:
        for size, words in _UNIT_WORDS.items():
            if match[2] in words:
                return int(match[1]) * size
    raise ValueError(f"{text.strip()!r} is not a duration (try 30s, 10m, 8h, 2d, 1w)")


def size_text(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def conversation_line(
    summary: ConversationSummary,
    me: str,
    tz: datetime.tzinfo | None,
    now_ms: int | None,
    width: int = 30,
) -> Text:
    """Two lines: title (with unread count) and time; then the last message."""
    kind = "#" if summary.group is not None else "@"
    line = Text()
    line.append(f"{kind} ", style="dim")
    line.append(summary.title, style="bold" if summary.unread else "")
    if summary.unread:
        line.append(f" ({summary.unread})", style="bold reverse")
    if summary.last_at:
        line.append(f"  {when(summary.last_at, tz, now_ms)}", style="dim")
    line.append("\n  ")
    if summary.last_text:
        who = "you" if summary.last_from == me else summary.last_from
        preview = f"{who}: {summary.last_text}".replace("\n", " ")
    else:
        preview = "(no messages yet)"
    if len(preview) > width:
        preview = preview[: width - 1] + "…"
    line.append(preview, style="dim")
    return line


def message_text(
    item: HistoryItem,
    me: str,
    tz: datetime.tzinfo | None,
    now_ms: int | None,
    *,
    verified_sender: bool | None = None,
) -> Text:
    """One message: sender and time, the reply it answers, its text or attachment,
    reactions, and for our own messages the delivery state."""
    text = Text()
    sender = "you" if item.outgoing or item.from_user == me else item.from_user
    text.append(sender, style="bold")
    if verified_sender:
        text.append(" ✓", style="green")
    text.append(f"  {when(item.sent_at, tz, now_ms)}", style="dim")
    if item.edited:
        text.append("  (edited)", style="dim italic")
    if item.expires_at is not None:
        text.append(f"  ⏱ until {when(item.expires_at, tz, now_ms)}", style="dim")
    if item.reply is not None:
        quoted = item.reply.text.replace("\n", " ")
        if len(quoted) > 60:
            quoted = quoted[:59] + "…"
        text.append(
            f"\n  ↪ {item.reply.from_user or '?'}: {quoted}", style="dim italic"
        )
    if item.kind == "file" and item.file is not None:
        text.append(
            f"\n  📎 {item.file.name} ({size_text(item.file.size)})", style="underline"
        )
        if item.text:
            text.append(f"\n  {item.text}")
    else:
        for line in item.text.split("\n") or [""]:
            text.append(f"\n  {line}")
    if item.reactions:
        text.append("\n  ")
        for emoji, users in item.reactions:
            text.append(
                f"{emoji} {len(users)}  ", style="reverse" if me in users else ""
            )
    if item.outgoing and item.state:
        label = STATE_LABELS.get(item.state, item.state)
        style = "bold red" if item.state == "failed" else "dim"
        text.append(f"\n  {label}", style=style)
    return text


def device_line(device: DeviceTrust) -> Text:
    text = Text()
    if device.revoked:
        text.append("✗ revoked   ", style="red")
    elif device.verified:
        text.append("✓ verified  ", style="bold green")
    else:
        text.append("? unverified", style="yellow")
        text.append(" ")
    name = device.name or "(no name)"
    if device.this_device:
        name += " (this device)"
    text.append(f"{name}  {device.device_id}\n", style="bold")
    text.append(f"  fingerprint: {device.fingerprint}", style="dim")
    return text


def status_text(
    status: Status, detail: str, queued: int, retry_in: float | None
) -> Text:
    text = Text()
    if status is Status.ONLINE:
        text.append("● online", style="green")
    elif status is Status.CONNECTING:
        text.append("◌ connecting…", style="yellow")
    elif status is Status.OFFLINE:
        text.append("○ connection lost", style="bold red")
        wait = f" in {retry_in:.0f} s" if retry_in is not None else ""
        text.append(f" - reconnecting{wait} (ctrl+r: now)", style="red")
        if detail:
            text.append(f" - {detail}", style="dim")
    else:
        text.append(f"■ stopped: {detail}", style="bold red")
    if queued:
        text.append(f"   {queued} waiting to send", style="bold")
    return text


def change_text(change: proto.GroupChange, tz: datetime.tzinfo | None) -> str:
    """One entry of a group's verified chain: its number, when, who did what."""
    Action = proto.GroupAction
    what = {
        Action.CREATE: f"created “{change.name}”",
        Action.RENAME: f"renamed it “{change.name}”",
        Action.ADD: f"added {change.subject}",
        Action.REMOVE: f"removed {change.subject}",
        Action.PROMOTE: f"made {change.subject} an admin",
        Action.DEMOTE: f"took admin from {change.subject}",
        Action.LEAVE: "left",
    }.get(change.action, f"{change.action} {change.subject}")
    return f"#{change.seq}  {when(change.at, tz)}  {change.author} {what}"


def policy_text(policy: PolicyInForce | None, tz: datetime.tzinfo | None) -> Text:
    """The organisation's policy in force, its rules in words, escrow first."""
    text = Text()
    if policy is None:
        text.append(
            "No policy in force: the organisation has issued none to this device, so "
            "no restrictions apply."
        )
        return text
    if policy.escrow:
        text.append(
            "⚠ ESCROW ON: this device seals a copy of each message it sends (never an "
            "attachment's contents) for the organisation's custodians.  One "
            "conversation-day at a time can be opened, only when k of n custodians "
            "agree, and every step is written to the audit log.\n\n",
            style="bold reverse",
        )
    issued = datetime.datetime.fromtimestamp(policy.issued_at / 1000, tz=tz)
    text.append(
        f"Version {policy.version}, issued {issued:%d %b %Y %H:%M}, signed by the "
        "organisation's authority key and checked on this device:\n"
    )
    text.append("\n".join(f"• {rule}" for rule in policy.rules))
    return text
