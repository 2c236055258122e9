"""Group commands: create, add, remove, promote, demote, leave, list, show."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from strongroom import client, proto

from ._common import console, fail, run
from ._device import HomeOpt, JsonOpt, show_warnings
from ._passcode import open_client

__all__ = ["group_app"]

group_app = typer.Typer(help="End-to-end encrypted groups with a signed membership.")
GroupArg = Annotated[str, typer.Argument(help="the group id")]
UserArg = Annotated[str, typer.Argument(help="a user id")]


def _check(group: str) -> None:
    if proto.GROUP_ID_RE.fullmatch(group) is None:
        fail(f"{group!r} is not a group id (as `group list` shows)")


@group_app.command("create")
def create(
    home: HomeOpt,
    name: Annotated[str, typer.Argument(help="the group's name")],
    members: Annotated[
        str, typer.Option("--members", help="user ids, comma-separated")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Create a group; you are its first admin.  Prints its id."""
    users = [u.strip() for u in members.split(",") if u.strip()]

    async def go() -> str:
        async with open_client(home) as c:
            try:
                return await c.create_group(name, users)
            finally:
                show_warnings(c.warnings)

    group = run(go())
    if as_json:
        print(json.dumps({"group": group, "name": name}))
    else:
        print(group)


def _change(home: HomeOpt, group: str, action: proto.GroupAction, user: str) -> None:
    _check(group)

    async def go() -> client.GroupState:
        async with open_client(home) as c:
            try:
                return await c.change_group(group, action, user)
            finally:
                show_warnings(c.warnings)

    state = run(go())
    console.print(
        f"{action.value} {user}: group {state.name!r} now has "
        f"{len(state.members)} member(s) (entry {state.seq})"
    )


@group_app.command("add")
def add(home: HomeOpt, group: GroupArg, user: UserArg) -> None:
    """Add USER to the group (admins only)."""
    _change(home, group, proto.GroupAction.ADD, user)


@group_app.command("remove")
def remove(home: HomeOpt, group: GroupArg, user: UserArg) -> None:
    """Remove USER; the group key is replaced at once (admins only)."""
    _change(home, group, proto.GroupAction.REMOVE, user)


@group_app.command("promote")
def promote(home: HomeOpt, group: GroupArg, user: UserArg) -> None:
    """Make a member an admin (admins only)."""
    _change(home, group, proto.GroupAction.PROMOTE, user)


@group_app.command("demote")
def demote(home: HomeOpt, group: GroupArg, user: UserArg) -> None:
    """Take a member's admin rights away (admins only)."""
    _change(home, group, proto.GroupAction.DEMOTE, user)


def _facts(state: client.GroupState) -> dict[str, object]:
    return {
        "group": state.group,
        "name": state.name,
        "members": sorted(state.members),
        "admins": sorted(state.admins),
        "entry": state.seq,
        "head": state.head_hash.hex(),
    }


@group_app.command("list")
def list_groups(home: HomeOpt, as_json: JsonOpt = False) -> None:
    """The groups this device has verified."""

    async def go() -> list[client.GroupState]:
        async with open_client(home) as c:
            view = c.groups.view
            return [s for g in view.groups() if (s := view.state(g)) is not None]

    states = run(go())
    if as_json:
        print(json.dumps([_facts(s) for s in states]))
        return
    for state in states:
        console.print(f"{state.group}  {state.name}  ({len(state.members)} members)")


@group_app.command("show")
def show(home: HomeOpt, group: GroupArg, as_json: JsonOpt = False) -> None:
    """A group's verified membership, fetched from the server and checked here."""
    _check(group)

    async def go() -> tuple[client.GroupState, list[tuple[int, str]]]:
        async with open_client(home) as c:
            try:
                state = await c.sync_group(group)
                history = []
                for entry in c.groups.view.entries(group):
                    change = proto.decode_group_change(entry.body)
                    history.append(
                        (
                            change.seq,
                            f"{change.author} {change.action} {change.subject}",
                        )
                    )
                return state, history
            finally:
                show_warnings(c.warnings)

    state, history = run(go())
    if as_json:
        print(json.dumps({**_facts(state), "history": [h for _, h in history]}))
        return
    console.print(f"[bold]{state.name}[/] ({state.group})")
    console.print(f"  members: {', '.join(sorted(state.members))}")
    console.print(f"  admins:  {', '.join(sorted(state.admins))}")
    console.print(f"  head:    entry {state.seq}, {state.head_hash.hex()[:16]}")
    for seq, line in history:
        console.print(f"  [dim]{seq:>3}[/] {line}")
