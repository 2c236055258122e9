"""The `strongroom` command."""

from __future__ import annotations

import typer

from ._admin import admin_app
from ._backup import backup, restore
from ._bench import bench
from ._chat import chat
from ._demo import demo
from ._device import device_app
from ._escrow import custodian_app
from ._groups import group_app
from ._messaging import edit, listen, react, read, receipts, receive, send, timer
from ._password import password_app
from ._server import init, migrate, serve

__all__ = ["app", "main"]

app = typer.Typer(
    help="Strongroom: secure messaging that your organisation runs for itself.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(init)
app.command()(serve)
app.command()(migrate)
app.command()(backup)
app.command()(restore)
app.add_typer(admin_app, name="admin")
admin_app.add_typer(password_app, name="password")
app.add_typer(device_app, name="device")
app.add_typer(group_app, name="group")
app.add_typer(custodian_app, name="custodian")
app.command()(send)
app.command()(receive)
app.command()(listen)
app.command()(read)
app.command()(react)
app.command()(edit)
app.command()(timer)
app.command()(receipts)
app.command()(chat)
app.command()(demo)
app.command()(bench)


def main() -> None:
    app()
