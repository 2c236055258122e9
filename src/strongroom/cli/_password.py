"""`strongroom admin password set`: reset the web console's password, offline.

It edits the data directory's config (only the Argon2id hash is kept) and writes the
reset to the audit log, so a password changed by whoever holds the server's files is
seen.  Servers read the config when they start: restart every node afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from strongroom import server
from strongroom.errors import StrongroomError

from ._common import console, fail, run
from ._server import PASSWORD_ENV, read_password_file

__all__ = ["password_app"]

password_app = typer.Typer(help="The web console's password (served at /admin).")


def _data_dir(ctx: typer.Context, given: Path | None) -> Path:
    """``--data`` of this command, else of ``strongroom admin --data``, else the default."""
    if given is not None:
        return given
    parent = ctx.parent
    while parent is not None:
        value = parent.params.get("data")
        if isinstance(value, Path):
            return value
        parent = parent.parent
    return Path("strongroom-data")


async def _audit(data: server.DataDir) -> None:
    ctx = server.build_context(data)
    await ctx.store.open()
    try:
        await ctx.fleet.audit.record("cli", "console.password_set", "console")
    finally:
        await ctx.store.close()


@password_app.command("set")
def password_set(
    ctx: typer.Context,
    data: Annotated[
        Path | None, typer.Option("--data", help="the server's data directory")
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option("--password-file", help="read the new password from FILE"),
    ] = None,
) -> None:
    """Set a new console password: from FILE, else $STRONGROOM_ADMIN_PASSWORD, else
    asked twice."""
    folder = server.DataDir(_data_dir(ctx, data))
    try:
        folder.load_config()
    except StrongroomError as exc:
        fail(str(exc))
    if password_file is not None:
        password = read_password_file(password_file)
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    else:
        password = typer.prompt(
            "new console password", hide_input=True, confirmation_prompt=True
        )
    try:
        folder.set_admin_password(password)
    except StrongroomError as exc:
        fail(str(exc))
    run(_audit(folder))
    console.print(
        f"console password set in {folder.config}; restart the server (every node) "
        "for it to take effect"
    )
