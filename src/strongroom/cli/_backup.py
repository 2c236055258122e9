"""`strongroom backup` and `strongroom restore`: the SQLite default's data directory."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Annotated

import typer

from strongroom.errors import StrongroomError
from strongroom.server import DataDir
from strongroom.server._backup import Counts
from strongroom.server._backup import backup as backup_data_dir
from strongroom.server._backup import restore as restore_data_dir

from ._common import console, fail

__all__ = ["backup", "restore"]

DataOpt = Annotated[Path, typer.Option("--data", help="the server's data directory")]


def _counts(counts: Counts) -> str:
    return (
        f"{counts.users} users, {counts.devices} devices, "
        f"{counts.waiting} waiting envelopes"
    )


def backup(
    out: Annotated[
        Path, typer.Argument(help="the archive to write, e.g. strongroom.tar.gz")
    ],
    data: DataOpt = Path("strongroom-data"),
    force: Annotated[
        bool, typer.Option("--force", help="replace OUT if it exists")
    ] = False,
    with_authority_key: Annotated[
        bool,
        typer.Option(
            "--with-authority-key",
            help="put authority.pem in the archive too (then guard it like the key)",
        ),
    ] = False,
) -> None:
    """Back up a data directory (SQLite) to one archive, while the server runs."""
    try:
        manifest = backup_data_dir(
            DataDir(data), out, force=force, authority_key=with_authority_key
        )
    except StrongroomError as exc:
        fail(str(exc))
    size = out.stat().st_size
    console.print(
        f"backed up [bold]{manifest.organisation}[/] to {out} "
        f"({size / 1024:.1f} KiB, mode 0600)"
    )
    console.print(
        f"  {_counts(manifest.counts)}; schema version {manifest.schema_version}; "
        "integrity check ok"
    )
    console.print(f"  holds {', '.join(sorted(manifest.files))}")
    if "authority.pem" in manifest.files:
        console.print(
            "  it holds the authority key: keep it as safe as authority.pem itself"
        )


def restore(
    archive: Annotated[Path, typer.Argument(help="a file `strongroom backup` wrote")],
    data: DataOpt = Path("strongroom-data"),
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="restore into a non-empty directory, replacing its files"
        ),
    ] = False,
) -> None:
    """Restore a backup into a new or empty data directory (never a running server's)."""
    try:
        restored = restore_data_dir(archive, DataDir(data), force=force)
    except StrongroomError as exc:
        fail(str(exc))
    manifest = restored.manifest
    taken = datetime.datetime.fromtimestamp(manifest.created_at / 1000, datetime.UTC)
    console.print(
        f"restored [bold]{manifest.organisation}[/] into {data} "
        f"(backup taken {taken:%Y-%m-%d %H:%M:%S} UTC)"
    )
    console.print(
        f"  {_counts(manifest.counts)}; schema version {manifest.schema_version}; "
        "integrity check ok"
    )
    for note in restored.notes:
        console.print(f"  [bold]before serving:[/] {note}")
    console.print(f"next: strongroom serve --data {data}")
