"""`strongroom admin ...`: talks to the running server's admin API with the credential."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Annotated, TypeVar

import httpx
import msgspec
import typer
from rich.table import Table

from strongroom import proto
from strongroom.errors import ClientError, ServerRefusedError
from strongroom.server import DataDir

from ._common import console, err_console, fail, parse_duration, run

__all__ = ["admin_app"]

T = TypeVar("T")

admin_app = typer.Typer(help="Administer users and devices through the running server.")
user_app = typer.Typer(help="Users of the organisation.")
device_app = typer.Typer(help="Devices of the organisation.")
policy_app = typer.Typer(
    help="The organisation's policy, signed and pushed to devices."
)
audit_app = typer.Typer(help="The audit log: authority-signed and hash-chained.")
admin_app.add_typer(user_app, name="user")
admin_app.add_typer(device_app, name="device")
admin_app.add_typer(policy_app, name="policy")
admin_app.add_typer(audit_app, name="audit")

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
    return answer(response, kind)


def answer(response: httpx.Response, kind: type[T]) -> T:
    """The body of a 200, or ``ServerRefusedError`` with the server's sentence."""
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


@user_app.command("disable")
def user_disable(user: str) -> None:
    """Disable USER: revoke every device and take the user out of every group."""
    row = run(call("POST", f"/v1/admin/users/{user}/disable", proto.UserInfo))
    console.print(
        f"disabled [bold]{row.user}[/] at {row.disabled_at}: every device revoked, "
        "removed from groups"
    )


@device_app.command("list")
def device_list(
    user: Annotated[str | None, typer.Argument()] = None, as_json: JsonOpt = False
) -> None:
    """List devices (of USER): last seen, client version, policy enforced, compliance."""
    path = "/v1/admin/devices" + (f"?user={user}" if user else "")
    rows = run(call("GET", path, list[proto.AdminDevice]))
    if as_json:
        _print_json(rows)
        return
    table = Table("device", "user", "name", "last seen", "client", "policy", "state")
    for r in rows:
        state = r.compliance
        if r.wiped_at:
            state = f"wiped at {r.wiped_at}"
        elif r.revoked_at and not r.wipe_ordered_at:
            state = f"revoked {r.revoked_at}"
        table.add_row(
            r.device_id,
            r.user,
            r.name,
            r.last_seen or "-",
            r.client_version or "-",
            f"v{r.policy_version}" if r.policy_version else "-",
            state,
        )
    console.print(table)


@device_app.command("revoke")
def device_revoke(device_id: str) -> None:
    """Revoke a device: it can no longer connect and nobody encrypts to it."""
    row = run(call("POST", f"/v1/admin/devices/{device_id}/revoke", proto.AdminDevice))
    console.print(
        f"revoked device [bold]{row.device_id}[/] of {row.user} at {row.revoked_at}"
    )


@device_app.command("wipe")
def device_wipe(device_id: str) -> None:
    """Order a device to delete everything it holds (at once if connected, else at its
    next contact).  It is revoked now; `device list` shows when the wipe is done."""
    row = run(call("POST", f"/v1/admin/devices/{device_id}/wipe", proto.AdminDevice))
    console.print(
        f"wipe ordered for device [bold]{row.device_id}[/] of {row.user} at "
        f"{row.wipe_ordered_at}; it is revoked and wipes itself at its next contact"
    )


# --- policy ---------------------------------------------------------------------------------

UserOpt = Annotated[
    str | None, typer.Option("--user", help="a user's override instead of the org's")
]


def _show_policy(view: proto.PolicyView, as_json: bool) -> None:
    if as_json:
        _print_json(view)
        return
    who = f"for {view.user}" if view.user else "for the organisation"
    console.print(
        f"policy {who}, version {view.version}"
        if view.version
        else f"no policy set {who}: the defaults apply"
    )
    table = Table("setting", "value", "set by")
    for key in proto.POLICY_KEYS:
        value = getattr(view.rules, key)
        shown = "none" if value is None else json.dumps(value)
        table.add_row(key, shown, "user override" if key in view.overrides else "")
    console.print(table)


@policy_app.command("show")
def policy_show(user: UserOpt = None, as_json: JsonOpt = False) -> None:
    """Show the policy in force (for the organisation, or with USER's overrides)."""
    path = "/v1/admin/policy" + (f"?user={user}" if user else "")
    _show_policy(run(call("GET", path, proto.PolicyView)), as_json)


@policy_app.command("set")
def policy_set(
    key: str, value: str, user: UserOpt = None, as_json: JsonOpt = False
) -> None:
    """Set KEY to VALUE ("none" clears a limit); signed and pushed to every device."""
    try:
        parsed = proto.parse_policy_value(key, value)
    except ValueError as exc:
        fail(str(exc))
    view = run(
        call(
            "POST",
            "/v1/admin/policy",
            proto.PolicyView,
            proto.PolicySet(key=key, value=parsed, user=user),
        )
    )
    if not as_json:
        console.print(f"policy version {view.version}: {key} = {json.dumps(parsed)}")
    _show_policy(view, as_json)


@policy_app.command("unset")
def policy_unset(
    key: str,
    user: Annotated[str, typer.Option("--user", help="whose override to remove")],
) -> None:
    """Remove USER's override of KEY: the organisation's value applies again."""
    if key not in proto.POLICY_KEYS:
        fail(
            f"{key!r} is not a policy setting; settings: {', '.join(proto.POLICY_KEYS)}"
        )
    view = run(
        call(
            "POST",
            "/v1/admin/policy",
            proto.PolicyView,
            proto.PolicySet(key=key, user=user, clear=True),
        )
    )
    console.print(
        f"policy version {view.version}: {user} follows the organisation's {key}"
    )


@policy_app.command("history")
def policy_history(as_json: JsonOpt = False) -> None:
    """Every policy change, oldest first."""
    rows = run(call("GET", "/v1/admin/policy/history", list[proto.PolicyChange]))
    if as_json:
        _print_json(rows)
        return
    table = Table("version", "at", "by", "scope", "setting", "value")
    for r in rows:
        value = "(override removed)" if r.cleared else json.dumps(r.value)
        table.add_row(str(r.version), r.at, r.actor, r.scope, r.key, value)
    console.print(table)


# --- audit ----------------------------------------------------------------------------------


def _since_ms(since: str | None) -> int | None:
    """'7d' (ago) or an ISO date/time (UTC) -> Unix ms."""
    if since is None:
        return None
    try:
        when = dt.datetime.fromisoformat(since)
    except ValueError:
        seconds = parse_duration(since)
        return int(time.time() * 1000) - seconds * 1000
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since", help="entries since a date (2026-11-01) or for a time (7d)"
    ),
]


@audit_app.command("show")
def audit_show(since: SinceOpt = None, as_json: JsonOpt = False) -> None:
    """Show the audit log (oldest first)."""
    rows = _audit_rows(since)
    if as_json:
        _print_json(rows)
        return
    table = Table("#", "at", "actor", "action", "subject", "details")
    for r in rows:
        details = " ".join(f"{k}={v}" for k, v in sorted(r.details.items()))
        table.add_row(str(r.seq), r.at, r.actor, r.action, r.subject, details)
    console.print(table)


def _audit_rows(since: str | None) -> list[proto.AuditView]:
    ms = _since_ms(since)
    path = "/v1/admin/audit" + (f"?since={ms}" if ms is not None else "")
    return run(call("GET", path, list[proto.AuditView]))


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Argument(help="file to write, or - for stdout")],
    since: SinceOpt = None,
) -> None:
    """Write the audit log as JSON lines (one entry a line) for a SIEM."""
    rows = _audit_rows(since)
    lines = "".join(json.dumps(msgspec.to_builtins(r)) + "\n" for r in rows)
    if str(out) == "-":
        sys.stdout.write(lines)
        return
    try:
        out.write_text(lines)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror}")
    console.print(f"wrote {len(rows)} audit entries to {out}")


@audit_app.command("verify")
def audit_verify() -> None:
    """Check every entry's signature and link; name every entry that is not right."""
    verdict = run(call("GET", "/v1/admin/audit/verify", proto.AuditVerdict))
    if verdict.problems:
        for problem in verdict.problems:
            err_console.print(f"[bold red]bad:[/] {problem}", soft_wrap=True)
        fail(
            f"the audit log does NOT verify: {len(verdict.problems)} problem(s) in "
            f"{verdict.entries} entries"
        )
    console.print(
        f"the audit log verifies: {verdict.entries} entries, each signed by the "
        "authority and linked to the one before"
    )
