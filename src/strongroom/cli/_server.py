"""Server-side commands: init, serve, migrate."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from typing import Annotated

import typer

from strongroom import server
from strongroom.errors import StrongroomError

from ._common import console, fail

__all__ = ["PASSWORD_ENV", "init", "migrate", "read_password_file", "serve"]

DataOpt = Annotated[Path, typer.Option("--data", help="the server's data directory")]
#: Where a console password may come from instead of a file or a prompt.
PASSWORD_ENV = "STRONGROOM_ADMIN_PASSWORD"  # noqa: S105 (a name, not a secret)


def read_password_file(path: Path) -> str:
    """The password in ``path`` (its first line); exits with a clear error if unreadable."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        fail(f"cannot read the password file {path}: {exc.strerror}")
    if not lines or not lines[0]:
        fail(f"the password file {path} is empty")
    return lines[0]


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
    admin_password_file: Annotated[
        Path | None,
        typer.Option(
            "--admin-password-file",
            help="the web console's password (first line of FILE); else "
            f"${PASSWORD_ENV}; else a random one, printed once",
        ),
    ] = None,
) -> None:
    """Create a new organisation: config, database, authority key, admin credential,
    console password."""
    generated = False
    if admin_password_file is not None:
        password = read_password_file(admin_password_file)
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    else:
        password, generated = secrets.token_urlsafe(18), True
    try:
        made = server.init_data_dir(
            data, org, database=database, bus=bus, admin_password=password
        )
        asyncio.run(server.migrate(made))
    except StrongroomError as exc:
        fail(str(exc))
    console.print(f"created organisation [bold]{org}[/] in {data}")
    console.print(
        f"  authority key   {made.authority} (mode 0600; guard it like a root CA key)"
    )
    console.print(f"  admin credential {made.admin_token} (mode 0600)")
    if generated:
        console.print(
            f"  console password [bold]{password}[/] (shown once: sign in at /admin; "
            f"change it with `strongroom admin password set --data {data}`)",
            soft_wrap=True,
        )
    else:
        console.print("  console password as given (only its Argon2id hash is kept)")
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
