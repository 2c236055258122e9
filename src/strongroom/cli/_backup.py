"""`strongroom backup` and `strongroom restore`: the SQLite default's data directory."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from strongroom.errors import StrongroomError
from strongroom.server import DataDir

if TYPE_CHECKING:
    from strongroom.server._backup import Counts, Manifest

from ._common import console, fail

__all__ = ["backup", "restore"]

DataOpt = Annotated[Path, typer.Option("--data", help="the server's data directory")]


def _counts(counts: Counts) -> str:
    return (
        f"{counts.users} users, {counts.devices} devices, "
        f"{counts.waiting} waiting envelopes, {_blobs(counts.blobs)} "
        f"({_size(counts.blob_bytes)})"
    )


def _blobs(n: int) -> str:
    return f"{n} attachment blob{'' if n == 1 else 's'}"


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _about_blobs(data: DataDir, manifest: Manifest) -> None:
    from strongroom.server._backup import BLOBS, blob_dir_outside

    """Where the blobs came from, if not the data directory, and which were gone."""
    if not manifest.counts.blobs and not manifest.missing_blobs:
        return
    try:
        config = data.load_config()
    except StrongroomError:  # changed since: the archive is written all the same
        return
    blob_dir = config.storage.blob_dir(data.path)
    if blob_dir_outside(config):
        console.print(
            f"  the attachment blobs came from {blob_dir}, outside the data directory: "
            f"the archive holds them as {BLOBS}/, and a restore puts them in the "
            f"restored directory's {BLOBS}/"
        )
    missing = manifest.missing_blobs
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        console.print(
            f"  [bold]missing: {_blobs(len(missing))}[/] named by the database, gone "
            f"from {blob_dir} before they could be archived (pruned since the "
            f"snapshot, or lost); left out, with their rows: {shown}"
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
        from strongroom.server._backup import backup as backup_data_dir

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
    from strongroom.server._backup import BLOBS

    fixed = sorted(name for name in manifest.files if not name.startswith(BLOBS + "/"))
    held = f" and {_blobs(manifest.counts.blobs)}" if manifest.counts.blobs else ""
    console.print(f"  holds {', '.join(fixed)}{held}")
    _about_blobs(DataDir(data), manifest)
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
        from strongroom.server._backup import restore as restore_data_dir

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
