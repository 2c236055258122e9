"""Device-side commands: activate, info, send, receive, listen."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Annotated

import msgspec
import typer

from strongroom import client, crypto
from strongroom.client import Received

from ._common import console, err_console, run

__all__ = ["device_app", "listen", "receive", "send"]

device_app = typer.Typer(help="This device: activation and identity.")
HomeOpt = Annotated[Path, typer.Option("--home", help="the device's own directory")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON, one object a line")]


def _show_warnings(warnings: list[str]) -> None:
    for text in warnings:
        err_console.print(f"[bold yellow]warning:[/] {text}", soft_wrap=True)


def _stamp(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


@device_app.command("activate")
def activate(
    home: HomeOpt,
    server: Annotated[
        str, typer.Option("--server", help="server URL, e.g. http://host:8700")
    ],
    user: Annotated[str, typer.Option("--user", help="your user id")],
    code: Annotated[str, typer.Option("--code", help="the activation code from IT")],
    name: Annotated[str, typer.Option("--name", help="a name for this device")] = "",
    ca: Annotated[
        str | None, typer.Option("--ca", help="CA file for a private TLS cert")
    ] = None,
) -> None:
    """Activate this device with a one-time code from IT."""
    done = run(client.activate(home, server, user, code, name, ca))
    console.print(
        f"activated device [bold]{done.device_id}[/] for {done.user} at {done.org}"
    )
    console.print(f"organisation authority fingerprint: {done.authority_fingerprint}")


@device_app.command("info")
def info(home: HomeOpt, as_json: JsonOpt = False) -> None:
    """Show this device's id, user, server and key fingerprints."""
    store = run(_open_store(home))
    try:
        account = crypto.DeviceAccount.from_pickle(
            store.meta_text("account"), store.pickle_key
        )
        authority = crypto.AuthorityPublicKey(store.get_meta("authority_key") or b"")
        facts = {
            "device_id": store.meta_text("device_id"),
            "user": store.meta_text("user"),
            "org": store.meta_text("org"),
            "server": store.meta_text("server_url"),
            "name": store.meta_text("device_name"),
            "ed25519": account.ed25519,
            "curve25519": account.curve25519,
            "authority_fingerprint": authority.fingerprint(),
        }
    finally:
        store.close()
    if as_json:
        print(json.dumps(facts))
        return
    for key, value in facts.items():
        console.print(f"{key:>22}: {value}")


async def _open_store(home: Path) -> client.LocalStore:
    return client.LocalStore.open(home)


def send(
    home: HomeOpt,
    user: Annotated[str, typer.Argument(help="who to send to")],
    text: Annotated[str, typer.Argument(help="the message")],
) -> None:
    """Encrypt TEXT to USER's devices (and your other devices); wait until the server has it."""

    async def go() -> client.SendResult:
        async with client.Client(home) as c:
            try:
                return await c.send_text(user, text)
            finally:
                _show_warnings(c.warnings)

    result = run(go())
    console.print(f"sent {result.id[:8]} to {len(result.devices)} device(s)")


def _print(message: Received, as_json: bool) -> None:
    if as_json:
        print(json.dumps(msgspec.to_builtins(message)), flush=True)
    else:
        console.print(
            f"[dim]{_stamp(message.sent_at)}[/] [bold]{message.from_user}[/]"
            f" [dim]({message.from_device[:6]})[/]: {message.text}",
            soft_wrap=True,
        )


def receive(
    home: HomeOpt,
    wait: Annotated[
        float, typer.Option("--wait", help="seconds to wait for more")
    ] = 0.0,
    as_json: JsonOpt = False,
) -> None:
    """Fetch, decrypt, acknowledge and print what is waiting."""

    async def go() -> None:
        async with client.Client(home) as c:
            try:
                async for message in c.messages(wait):
                    _print(message, as_json)
            finally:
                _show_warnings(c.warnings)

    run(go())


def listen(home: HomeOpt, as_json: JsonOpt = False) -> None:
    """Stay connected and print messages as they arrive (Ctrl-C to stop)."""

    async def go() -> None:
        async with client.Client(home) as c:
            shown = 0
            async for message in c.messages(None):
                _show_warnings(c.warnings[shown:])
                shown = len(c.warnings)
                _print(message, as_json)

    run(go())
