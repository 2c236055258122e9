"""`strongroom admin ...`: talks to the running server's admin API with the credential."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, TypeVar

import httpx
import msgspec
import typer
from rich.table import Table

from strongroom import proto
from strongroom.errors import ClientError, ServerRefusedError
from strongroom.server import DataDir

from ._common import console, fail, parse_duration, run

__all__ = ["admin_app"]

T = TypeVar("T")

admin_app = typer.Typer(help="Administer users and devices through the running server.")
user_app = typer.Typer(help="Users of the organisation.")
device_app = typer.Typer(help="Devices of the organisation.")
admin_app.add_typer(user_app, name="user")
admin_app.add_typer(device_app, name="device")

DataOpt = Annotated[Path, typer.Option("--data", help="the server's data directory")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


class _State:
    data: Path = Path("strongroom-data")


@admin_app.callback()
def _admin(data: DataOpt = Path("strongroom-data")) -> None:
    _State.data = data


async def call(
    method: str, path: str, kind: type[T], body: msgspec.Struct | None = None
) -> T:
    data = DataDir(_State.data)
    token = data.read_admin_token()
    url = data.server_url()
    content = proto.encode_json(body) if body is not None else b""
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
        try:
            response = await http.request(
                method,
                path,
                content=content,
                headers={
                    "authorization": f"Bearer {token}",
                    "content-type": "application/json",
                },
            )
        except httpx.HTTPError as exc:
            raise ClientError(
                f"cannot reach the server at {url}: is `strongroom serve` running?"
            ) from exc
    if response.status_code != 200:
        try:
            error = msgspec.json.decode(response.content, type=proto.ErrorBody)
        except proto.DECODE_ERRORS:
            raise ServerRefusedError(
                f"HTTP {response.status_code}", "internal"
            ) from None
        raise ServerRefusedError(error.detail, error.code)
    return msgspec.json.decode(response.content, type=kind)


def _print_json(obj: object) -> None:
    print(json.dumps(msgspec.to_builtins(obj)))


@user_app.command("add")
def user_add(
    user: str, name: Annotated[str, typer.Option("--name", help="full name")] = ""
) -> None:
    """Add a user."""
    if not proto.valid_user_id(user):
        fail(
            f"{user!r} is not a valid user id (lowercase letters, digits, . _ -; up to 63)"
        )
    row = run(
        call("POST", "/v1/admin/users", proto.UserInfo, proto.UserAdd(user, name))
    )
    console.print(f"added user [bold]{row.user}[/] {row.name}")


@user_app.command("list")
def user_list(as_json: JsonOpt = False) -> None:
    """List users."""
    rows = run(call("GET", "/v1/admin/users", list[proto.UserInfo]))
    if as_json:
        _print_json(rows)
        return
    table = Table("user", "name", "devices", "created")
    for r in rows:
        table.add_row(r.user, r.name, str(r.devices), r.created_at)
    console.print(table)


@admin_app.command("code")
def code(
    user: str,
    ttl: Annotated[
        str | None, typer.Option("--ttl", help="how long the code lives (default 48h)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue a one-time activation code for USER (replaces any earlier one)."""
    seconds = parse_duration(ttl) if ttl is not None else None
    issued = run(
        call(
            "POST",
            f"/v1/admin/users/{user}/code",
            proto.CodeIssued,
            proto.CodeRequest(seconds),
        )
    )
    if as_json:
        _print_json(issued)
        return
    console.print(
        f"activation code for [bold]{issued.user}[/]: [bold green]{issued.code}[/]"
    )
    console.print(f"expires {issued.expires_at}; three wrong tries burn it")


@device_app.command("list")
def device_list(
    user: Annotated[str | None, typer.Argument()] = None, as_json: JsonOpt = False
) -> None:
    """List devices (of USER)."""
    path = "/v1/admin/devices" + (f"?user={user}" if user else "")
    rows = run(call("GET", path, list[proto.DeviceInfo]))
    if as_json:
        _print_json(rows)
        return
    table = Table("device", "user", "name", "created", "last seen", "status")
    for r in rows:
        status = f"revoked {r.revoked_at}" if r.revoked_at else "active"
        table.add_row(
            r.device_id, r.user, r.name, r.created_at, r.last_seen or "-", status
        )
    console.print(table)


@device_app.command("revoke")
def device_revoke(device_id: str) -> None:
    """Revoke a device: it can no longer connect and nobody encrypts to it."""
    row = run(call("POST", f"/v1/admin/devices/{device_id}/revoke", proto.DeviceInfo))
    console.print(
        f"revoked device [bold]{row.device_id}[/] of {row.user} at {row.revoked_at}"
    )
