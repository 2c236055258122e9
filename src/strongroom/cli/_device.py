"""Device-side commands: activate, info, passcode (messaging is in ``_messaging``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from strongroom import client, crypto, proto

from ._common import console, err_console, run
from ._passcode import enforce_passcode_policy, open_store, passcode_app

__all__ = ["HomeOpt", "JsonOpt", "device_app", "show_warnings"]

device_app = typer.Typer(help="This device: activation and identity.")
HomeOpt = Annotated[Path, typer.Option("--home", help="the device's own directory")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON, one object a line")]
device_app.add_typer(passcode_app, name="passcode")


def show_warnings(warnings: list[str]) -> None:
    for text in warnings:
        err_console.print(f"[bold yellow]warning:[/] {text}", soft_wrap=True)


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

    async def policy() -> proto.PolicyRules:
        async with client.Client(home) as c:
            return await c.refresh_policy()

    enforce_passcode_policy(home, run(policy()), None)


@device_app.command("info")
def info(home: HomeOpt, as_json: JsonOpt = False) -> None:
    """Show this device's id, user, server and key fingerprints."""
    store = run(_open_store(home))
    try:
        account = crypto.DeviceAccount.from_pickle(
            store.meta_text("account"), store.pickle_key
        )
        authority = crypto.AuthorityPublicKey(store.get_meta("authority_key") or b"")
        facts: dict[str, object] = {
            "device_id": store.meta_text("device_id"),
            "user": store.meta_text("user"),
            "org": store.meta_text("org"),
            "server": store.meta_text("server_url"),
            "name": store.meta_text("device_name"),
            "ed25519": account.ed25519,
            "curve25519": account.curve25519,
            "authority_fingerprint": authority.fingerprint(),
        }
        policy = client.policy_in_force(store)
    finally:
        store.close()
    facts["policy_version"] = policy.version if policy else None
    facts["policy"] = policy.rules if policy else []
    facts["escrow"] = bool(policy and policy.escrow)
    if as_json:
        print(json.dumps(facts))
        return
    for key, value in facts.items():
        if key not in ("policy", "escrow"):
            console.print(f"{key:>22}: {value}")
    for rule in policy.rules if policy else ["no policy from the organisation yet"]:
        console.print(f"{'policy':>22}: {rule}")
    if policy and policy.escrow:
        console.print(
            "[bold yellow]lawful-access escrow is ON for this device: a sealed copy of "
            "each message it sends is kept per conversation and day[/]"
        )


async def _open_store(home: Path) -> client.LocalStore:
    return open_store(home)
