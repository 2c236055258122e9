"""`strongroom demo`: the whole product in one terminal, in under fifteen seconds."""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

import httpx
from rich.columns import Columns
from rich.panel import Panel
from rich.table import Table

from strongroom import client, proto, server

from ._common import console, run
from ._local import LocalServer

__all__ = ["demo"]


async def _admin(
    url: str, token: str, method: str, path: str, body: bytes = b""
) -> bytes:
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.request(
            method, path, content=body, headers={"authorization": f"Bearer {token}"}
        )
        response.raise_for_status()
        return response.content


def _stored(db: Path) -> list[tuple[str, int, bytes]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT device_id, seq, body FROM inbox ORDER BY at, seq"
        ).fetchall()
    finally:
        conn.close()
    return [(r[0], r[1], bytes(r[2])) for r in rows]


async def _scenario(tmp: Path) -> None:
    started = time.monotonic()
    data = server.init_data_dir(tmp / "server", "Demo Ministry")
    await server.migrate(data)
    with LocalServer(data.path) as srv:
        console.print(f"[bold]1.[/] server up at {srv.url} (SQLite in {data.path})")
        token = data.read_admin_token()
        homes: dict[str, Path] = {}
        for user, name in (("alice", "Alice Archer"), ("bob", "Bob Baker")):
            await _admin(
                srv.url,
                token,
                "POST",
                "/v1/admin/users",
                proto.encode_json(proto.UserAdd(user, name)),
            )
        for user, device in (("alice", "phone"), ("alice", "laptop"), ("bob", "phone")):
            issued = proto.decode_json(
                await _admin(
                    srv.url, token, "POST", f"/v1/admin/users/{user}/code", b"{}"
                ),
                proto.CodeIssued,
            )
            home = tmp / f"{user}-{device}"
            done = await client.activate(
                home, srv.url, user, issued.code, f"{user}'s {device}"
            )
            homes[f"{user}/{device}"] = home
            console.print(
                f"[bold]2.[/] activated {user}'s {device} as {done.device_id} "
                f"with code {issued.code} (the code never left the device)"
            )
        async with client.Client(homes["alice/phone"]) as alice:
            await alice.send_text(
                "bob", "Hi Bob, the budget draft is in the usual place."
            )
        stored = _stored(data.path / "strongroom.db")
        async with client.Client(homes["bob/phone"]) as bob:
            got_bob = await bob.receive(0.3)
            await bob.send_text("alice", "Thanks Alice, reading it now.")
        shown: dict[str, list[str]] = {
            "bob/phone": [f"{m.from_user}: {m.text}" for m in got_bob]
        }
        for key in ("alice/phone", "alice/laptop"):
            async with client.Client(homes[key]) as c:
                got = await c.receive(0.3)
                own = [m for m in c.store.messages() if m.outgoing]
            shown[key] = [f"(me) {m.text}" for m in own] + [
                f"{m.from_user}: {m.text}" for m in got
            ]
        panels = [
            Panel("\n".join(lines) or "(nothing)", title=key, width=38)
            for key, lines in shown.items()
        ]
        console.print("[bold]3.[/] what each device shows:")
        console.print(Columns(panels))
        table = Table("inbox of device", "seq", "bytes", "what the server stored (hex)")
        for device_id, seq, body in stored:
            table.add_row(device_id, str(seq), str(len(body)), "…" + body[-24:].hex())
        console.print(
            "[bold]4.[/] what the server stored for Alice's message (ciphertext only):"
        )
        console.print(table)
    console.print(
        f"[bold]5.[/] server stopped; demo took {time.monotonic() - started:.1f}s"
    )


def demo() -> None:
    """Start a server in a temporary directory, activate three devices, exchange messages."""
    with tempfile.TemporaryDirectory(prefix="strongroom-demo-") as tmp:
        run(_scenario(Path(tmp)))
