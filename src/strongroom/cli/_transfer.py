"""Progress bars around encrypted file transfers (``client._transfers`` does the work)."""

from __future__ import annotations

from pathlib import Path

import msgspec
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from strongroom import client, proto
from strongroom.errors import ClientError

from ._common import err_console

__all__ = ["download", "upload"]

#: Transfers smaller than this finish before a bar would be worth drawing.
_BAR_FROM = 4 * 1024 * 1024


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )


async def upload(c: client.Client, path: Path, caption: str) -> proto.FileRef:
    from strongroom.client._transfers import upload_file

    if not path.is_file():
        raise ClientError(f"{path} is not a file")
    if path.stat().st_size < _BAR_FROM:
        ref = await upload_file(c, path)
    else:
        with _progress() as bar:
            task = bar.add_task(f"sending {path.name}", total=path.stat().st_size)
            ref = await upload_file(
                c, path, lambda done, _: bar.update(task, completed=done)
            )
    return msgspec.structs.replace(ref, caption=caption)


async def download(c: client.Client, ref: proto.FileRef, directory: Path) -> Path:
    from strongroom.client._transfers import download_file

    if ref.size < _BAR_FROM:
        return await download_file(c, ref, directory)
    with _progress() as bar:
        task = bar.add_task(f"receiving {ref.name}", total=ref.size)
        return await download_file(
            c, ref, directory, lambda done, _: bar.update(task, completed=done)
        )
