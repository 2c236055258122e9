"""The decrypted history as a person reads it: conversations, messages, search.

Read-only views over the device's encrypted store (plus the read marks this module
keeps), with no I/O beyond it.  Rules:

1. The history exists only on the device, inside its SQLCipher database; the full-text
   index (FTS5 table ``messages_fts``, schema 3) lives in the same encrypted file and is
   kept in step with ``messages`` by triggers, so edits and disappearing messages leave
   the index when they leave the history.
2. A conversation's unread count is the number of messages from others received after
   the person last looked at it (``mark_seen``); the mark only moves forward.
3. Names are for people: a 1:1 conversation is titled with the other user's name from
   the organisation's directory (cached, ``_contacts``), a group with the name its
   verified chain gives it, never with anything the server says alone.
"""

from __future__ import annotations

from typing import Any

import msgspec

from strongroom import proto

from ._groups import GroupView
from ._store import LocalStore

__all__ = [
    "ConversationSummary",
    "History",
    "HistoryItem",
    "Reply",
    "SearchHit",
    "fts_query",
    "other_user",
]


class ConversationSummary(msgspec.Struct, frozen=True):
    """One line of the conversation list."""

    conversation: str
    title: str
    group: str | None
    last_text: str
    last_from: str
    last_at: int
    unread: int
    #: the other user of a 1:1 conversation
    user: str | None = None


class Reply(msgspec.Struct, frozen=True):
    """What a reply answers, as far as this device has it."""

    id: str
    from_user: str
    text: str


class HistoryItem(msgspec.Struct, frozen=True):
    """One message as shown: ``state`` is the delivery state of our own messages
    (``sending``, ``failed``, ``sent``, ``delivered``, ``read``)."""

    id: str
    from_user: str
    from_device: str
    sent_at: int
    text: str
    kind: str
    outgoing: bool
    state: str
    edited: bool = False
    reply: Reply | None = None
    reactions: list[tuple[str, list[str]]] = []
    file: proto.FileRef | None = None
    expires_at: int | None = None


class SearchHit(msgspec.Struct, frozen=True):
    conversation: str
    id: str
    from_user: str
    sent_at: int
    snippet: str


def other_user(conversation: str, me: str) -> str | None:
    """The other user of a 1:1 conversation id (``me`` for notes to oneself)."""
    parts = conversation.split(":")
    if len(parts) != 3 or parts[0] != "dm" or me not in parts[1:]:
        return None
    rest = [u for u in parts[1:] if u != me]
    return rest[0] if rest else me


def fts_query(text: str) -> str | None:
    """A person's words as an FTS5 query: every word must appear, the last as a prefix;
    FTS5 syntax in the words is taken literally.  ``None`` when there are no words."""
    words = [w.replace('"', '""') for w in text.split()]
    if not words:
        return None
    quoted = [f'"{w}"' for w in words]
    quoted[-1] += "*"
    return " ".join(quoted)


_file_decoder = msgspec.msgpack.Decoder(proto.FileRef)


class History:
    """The history of one device.  ``names`` maps user ids to display names."""

    def __init__(self, store: LocalStore, me: str, groups: GroupView) -> None:
        self.store = store
        self.me = me
        self.groups = groups

    @property
    def _db(self) -> Any:
        # The history's own queries (windows, FTS) stay beside their rules here rather
        # than growing ``LocalStore`` for one caller.
        return self.store._conn

    # --- conversations ------------------------------------------------------------------

    def names(self) -> dict[str, str]:
        rows = self._db.execute("SELECT user_id, name FROM contacts").fetchall()
        return {r[0]: r[1] for r in rows if r[1]}

    def conversations(self, query: str = "") -> list[ConversationSummary]:
        """Every conversation, newest first; ``query`` keeps those whose title or user
        id contains it (case-insensitive)."""
        names = self.names()
        last = self._db.execute(
            "SELECT conversation, text, kind, from_user, sent_at FROM ("
            " SELECT conversation, text, kind, from_user, sent_at, ROW_NUMBER() OVER ("
            "  PARTITION BY conversation ORDER BY sent_at DESC, rowid DESC) AS n"
            " FROM messages) WHERE n = 1"
        ).fetchall()
        unread = dict(
            self._db.execute(
                "SELECT m.conversation, COUNT(*) FROM messages m "
                "LEFT JOIN read_marks r ON r.conversation = m.conversation "
                "WHERE m.outgoing = 0 AND m.from_user != ? "
                "AND m.received_at > COALESCE(r.upto, -1) GROUP BY m.conversation",
                (self.me,),
            ).fetchall()
        )
        found: dict[str, ConversationSummary] = {}
        for conversation, text, kind, from_user, sent_at in last:
            shown = text if kind == "text" else f"📎 {text}".rstrip()
            found[conversation] = self._summary(
                conversation, names, shown, from_user, sent_at, unread
            )
        for group in self.groups.groups():
            conversation = proto.group_conversation(group)
            state = self.groups.state(group)
            if conversation not in found and state is not None:
                entries = self.groups.entries(group)
                at = proto.decode_group_change(entries[-1].body).at if entries else 0
                found[conversation] = self._summary(
                    conversation, names, "", "", at, unread
                )
        needle = query.strip().lower()
        chosen = [
            s
            for s in found.values()
            if not needle
            or needle in s.title.lower()
            or (s.user is not None and needle in s.user)
        ]
        return sorted(chosen, key=lambda s: (-s.last_at, s.title))

    def _summary(
        self,
        conversation: str,
        names: dict[str, str],
        text: str,
        from_user: str,
        at: int,
        unread: dict[str, int],
    ) -> ConversationSummary:
        group = proto.group_of_conversation(conversation)
        user = None if group is not None else other_user(conversation, self.me)
        return ConversationSummary(
            conversation=conversation,
            title=self.title(conversation, names),
            group=group,
            last_text=text,
            last_from=from_user,
            last_at=at,
            unread=unread.get(conversation, 0),
            user=user,
        )

    def title(self, conversation: str, names: dict[str, str] | None = None) -> str:
        names = self.names() if names is None else names
        group = proto.group_of_conversation(conversation)
        if group is not None:
            state = self.groups.state(group)
            return state.name if state is not None else f"group {group[:8]}…"
        user = other_user(conversation, self.me) or conversation
        if user == self.me:
            return "Notes to self"
        name = names.get(user)
        return f"{name} ({user})" if name else user

    # --- one conversation ---------------------------------------------------------------

    def messages(self, conversation: str, limit: int = 200) -> list[HistoryItem]:
        """The last ``limit`` messages, oldest first."""
        rows = self._db.execute(
            "SELECT message_id, from_user, from_device, sent_at, text, kind, outgoing, "
            "state, edited_at, reply_to, file, expires_at FROM ("
            " SELECT *, rowid AS r FROM messages WHERE conversation = ?"
            " ORDER BY sent_at DESC, rowid DESC LIMIT ?) ORDER BY sent_at, r",
            (conversation, limit),
        ).fetchall()
        items: list[HistoryItem] = []
        for r in rows:
            message_id = bytes(r[0])
            reply = None
            if r[9] is not None:
                target = self.store.get_message(bytes(r[9]))
                reply = Reply(
                    id=bytes(r[9]).hex(),
                    from_user=target.from_user if target else "",
                    text=target.text if target else "(a message not on this device)",
                )
            grouped: dict[str, list[str]] = {}
            for user, emoji in self.store.reactions(message_id):
                grouped.setdefault(emoji, []).append(user)
            items.append(
                HistoryItem(
                    id=message_id.hex(),
                    from_user=r[1],
                    from_device=r[2],
                    sent_at=r[3],
                    text=r[4],
                    kind=r[5],
                    outgoing=bool(r[6]),
                    state=r[7],
                    edited=r[8] is not None,
                    reply=reply,
                    reactions=list(grouped.items()),
                    file=None if r[10] is None else _file_decoder.decode(r[10]),
                    expires_at=r[11],
                )
            )
        return items

    def mark_seen(self, conversation: str) -> list[bytes]:
        """The person has seen the conversation: its unread count drops to zero.
        Returns the ids of the messages from others that were unread (rule 2)."""
        row = self._db.execute(
            "SELECT upto FROM read_marks WHERE conversation=?", (conversation,)
        ).fetchone()
        upto = -1 if row is None else int(row[0])
        fresh = self._db.execute(
            "SELECT message_id, received_at FROM messages WHERE conversation=? "
            "AND outgoing=0 AND from_user != ? AND received_at > ?",
            (conversation, self.me, upto),
        ).fetchall()
        if not fresh:
            return []
        newest = max(int(r[1]) for r in fresh)
        with self.store.transaction():
            self._db.execute(
                "INSERT INTO read_marks VALUES (?, ?) ON CONFLICT(conversation) "
                "DO UPDATE SET upto=MAX(upto, excluded.upto)",
                (conversation, newest),
            )
        return [bytes(r[0]) for r in fresh]

    # --- search -------------------------------------------------------------------------

    def search(self, text: str, limit: int = 50) -> list[SearchHit]:
        """Messages whose text has every word of ``text`` (the last as a prefix),
        newest first, with the matching words in ``[brackets]``."""
        query = fts_query(text)
        if query is None:
            return []
        rows = self._db.execute(
            "SELECT m.conversation, m.message_id, m.from_user, m.sent_at, "
            "snippet(messages_fts, 0, '[', ']', '…', 10) FROM messages_fts "
            "JOIN messages m ON m.rowid = messages_fts.rowid "
            "WHERE messages_fts MATCH ? ORDER BY m.sent_at DESC LIMIT ?",
            (query, limit),
        ).fetchall()
        return [
            SearchHit(
                conversation=r[0],
                id=bytes(r[1]).hex(),
                from_user=r[2],
                sent_at=r[3],
                snippet=r[4],
            )
            for r in rows
        ]
