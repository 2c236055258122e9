"""Server-side commands: init, serve, migrate."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from strongroom import server
from strongroom.errors import StrongroomError

from ._common import console, fail

__all__ = ["init", "migrate", "serve"]

DataOpt = Annotated[Path, typer.Option("--data", help="the server's data directory")]


def init(
    data: DataOpt = Path("strongroom-data"),
    org: Annotated[str, typer.Option("--org", help="organisation name")] = "Strongroom",
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            envvar="STRONGROOM_DATABASE_URL",
            help="sqlite:///FILE (default) or postgresql://…[?schema=NAME]",
        ),
    ] = None,
    bus: Annotated[
        str | None,
        typer.Option(
            "--bus",
            envvar="STRONGROOM_BUS_URL",
            help="local: (default, one node) or nats://HOST:PORT[,nats://…]",
        ),
    ] = None,
) -> None:
    """Create a new organisation: config, database, authority key, admin credential."""
    try:
        made = server.init_data_dir(data, org, database=database, bus=bus)
        asyncio.run(server.migrate(made))
    except StrongroomError as exc:
        fail(str(exc))
    console.print(f"created organisation [bold]{org}[/] in {data}")
    console.print(
        f"  authority key   {made.authority} (mode 0600; guard it like a root CA key)"
    )
    console.print(f"  admin credential {made.admin_token} (mode 0600)")
    console.print(f"next: strongroom serve --data {data}")


def serve(
    data: DataOpt = Path("strongroom-data"),
    host: Annotated[str | None, typer.Option("--host")] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key")] = None,
) -> None:
    """Run the server until SIGINT or SIGTERM."""
    if (tls_cert is None) != (tls_key is None):
        fail("--tls-cert and --tls-key go together")
    try:
        server.serve(server.DataDir(data), host, port, tls_cert, tls_key)
    except StrongroomError as exc:
        fail(str(exc))


def migrate(data: DataOpt = Path("strongroom-data")) -> None:
    """Bring the database to this version's schema (nothing is lost)."""
    try:
        version = asyncio.run(server.migrate(server.DataDir(data)))
    except StrongroomError as exc:
        fail(str(exc))
    console.print(f"database schema is at version {version}")
