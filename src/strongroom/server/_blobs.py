"""Attachment blobs: uploaded in pieces, downloaded with byte ranges, kept as files.

A blob is the ciphertext of one attachment (``strongroom.crypto``'s sealed chunks): the
server learns its size, who uploaded it and who fetches it, nothing else.

Rules:

1. The store keeps each blob's metadata; its bytes are one file, ``<dir>/<id[:2]>/<id>``,
   under the blob directory (``[storage] blobs``; one shared directory for all nodes of
   a cluster).  The store's ``received`` is the truth: a file may hold more than that (a
   piece written but never recorded), never less.
2. A piece is written at the offset the store has recorded and fsynced *before* the store
   records it (``blob_progress``, a compare-and-set on ``received``): a recorded byte is a
   durable byte.  Writing at the recorded offset, rather than at the file's end, makes a
   repeated piece harmless: an honest uploader sends the same bytes for the same offset
   (its encryption is deterministic), so a retry or a race rewrites what is there.  A
   lock per blob orders one process's pieces; between nodes the compare-and-set refuses
   the loser.  An owner that races itself with *different* bytes spoils only its own
   blob, and the recipients' digest check refuses it.
3. Only the device that created a blob adds to it.  Any device of the organisation may
   download a complete blob: it is ciphertext, and the key travels only inside the
   end-to-end messages that name it.
4. A piece's body is read in full (at most ``MAX_BLOB_PIECE``) before anything else,
   because the device's signature covers it.
5. Files go after the store has forgotten their blob (``Store.prune`` returns the ids).  A
   crash in between leaves a file nothing refers to; it is never served.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from strongroom import proto
from strongroom.errors import ConflictError, NotFoundError

from ._auth import NonceCache, authenticate_device
from ._context import ServerContext
from ._errors import ApiRefusal
from ._http_api import json_response, read_body
from .store import BlobRow

__all__ = ["BlobApi", "BlobFiles", "new_blob_id"]

log = logging.getLogger("strongroom.server")
_E = proto.ErrorCode
_READ_BLOCK = 256 * 1024
_RANGE = re.compile(r"bytes=(\d{1,19})-(\d{0,19})")
#: The header of a ``409`` that tells an uploader where to continue.
RECEIVED_HEADER = "strongroom-blob-received"


def new_blob_id() -> str:
    """128 random bits in lowercase unpadded base32 (26 characters)."""
    return base64.b32encode(secrets.token_bytes(16)).decode().lower().rstrip("=")


class BlobFileError(Exception):
    """A blob's file is shorter than the store says: data was lost, or the blob
    directory is not the one shared by every node."""


class BlobFiles:
    """The blob directory.  Blocking methods: call them in a worker thread."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, blob_id: str) -> Path:
        return self.root / blob_id[:2] / blob_id

    def write(self, blob_id: str, offset: int, data: bytes) -> None:
        """Rule 2: ``data`` at ``offset``, durable when this returns."""
        path = self.path(blob_id)
        if not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _fsync_dir(path.parent.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < offset:
                raise BlobFileError(
                    f"{path} holds less than the {offset} bytes recorded"
                )
            view, at = memoryview(data), offset
            while view:
                written = os.pwrite(fd, view, at)
                view, at = view[written:], at + written
            os.fsync(fd)
        finally:
            os.close(fd)
        if offset == 0:  # the first piece: make the file's name durable too
            _fsync_dir(path.parent)

    def open(self, blob: BlobRow, start: int) -> int:
        """A descriptor positioned at ``start``.  Raises ``BlobFileError``."""
        path = self.path(blob.blob_id)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError as exc:
            raise BlobFileError(f"{path} is missing") from exc
        if os.fstat(fd).st_size < blob.size:
            os.close(fd)
            raise BlobFileError(
                f"{path} holds less than the {blob.size} bytes recorded"
            )
        os.lseek(fd, start, os.SEEK_SET)
        return fd

    def delete(self, blob_ids: Iterable[str]) -> None:
        for blob_id in blob_ids:
            with contextlib.suppress(FileNotFoundError):
                self.path(blob_id).unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Locks:
    """One lock per blob id, for this process; gone when nobody holds or waits."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def _info(blob: BlobRow) -> proto.BlobInfo:
    return proto.BlobInfo(
        blob=blob.blob_id,
        size=blob.size,
        received=blob.received,
        complete=blob.complete,
    )


def _unavailable(blob_id: str, exc: BlobFileError) -> ApiRefusal:
    log.error(
        "attachment %s: %s (is the blob directory shared by every node?)", blob_id, exc
    )
    return ApiRefusal(
        503, _E.UNAVAILABLE, "the attachment's data is not available on this server"
    )


#: Ciphertext is a little larger than the file (per-chunk tags); policy counts the file.
_SEALING_ALLOWANCE = 64 * 1024


class BlobApi:
    """The ``/v1/blobs`` handlers."""

    def __init__(self, ctx: ServerContext, nonces: NonceCache) -> None:
        self.ctx = ctx
        self.nonces = nonces
        self.files = None if ctx.blob_dir is None else BlobFiles(ctx.blob_dir)
        self._locks = _Locks()

    def _files(self) -> BlobFiles:
        if self.files is None:
            raise ApiRefusal(503, _E.UNAVAILABLE, "this server takes no attachments")
        return self.files

    async def _blob(self, request: Request) -> BlobRow:
        blob_id = request.path_params["blob"]
        blob = (
            await self.ctx.store.get_blob(blob_id)
            if proto.valid_blob_id(blob_id)
            else None
        )
        if blob is None:
            raise ApiRefusal(
                404, _E.NOT_FOUND, "no such attachment (it may have expired)"
            )
        return blob

    async def create(self, request: Request) -> Response:
        body = await read_body(request)
        device = await authenticate_device(self.ctx, self.nonces, request, body)
        self._files()
        wanted = proto.decode_json(body, proto.BlobCreate)
        limit = self.ctx.config.limits.max_attachment_bytes
        if wanted.size > limit:
            raise ApiRefusal(
                413,
                _E.ATTACHMENT_TOO_LARGE,
                f"the attachment is {_size(wanted.size)} encrypted; this server takes "
                f"attachments up to {_size(limit)} (limits.max_attachment_bytes)",
            )
        rules = await self.ctx.fleet.rules_for(device.user)
        if not rules.attachments_allowed:
            raise ApiRefusal(
                403,
                _E.POLICY_VIOLATION,
                "the organisation's policy does not allow attachments",
            )
        if rules.max_attachment_bytes is not None and wanted.size > (
            rules.max_attachment_bytes + _SEALING_ALLOWANCE
        ):
            raise ApiRefusal(
                413,
                _E.ATTACHMENT_TOO_LARGE,
                f"the organisation's policy allows attachments up to "
                f"{_size(rules.max_attachment_bytes)}",
            )
        blob = await self.ctx.store.create_blob(
            new_blob_id(), device.device_id, wanted.size, self.ctx.clock()
        )
        return json_response(_info(blob))

    async def status(self, request: Request) -> Response:
        device = await authenticate_device(self.ctx, self.nonces, request, b"")
        blob = await self._blob(request)
        if blob.owner != device.device_id:
            raise ApiRefusal(
                404, _E.NOT_FOUND, "no such attachment (it may have expired)"
            )
        return json_response(_info(blob))

    async def put(self, request: Request) -> Response:
        try:
            body = await read_body(request, proto.MAX_BLOB_PIECE)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening
        device = await authenticate_device(self.ctx, self.nonces, request, body)
        files = self._files()
        offset_text = request.query_params.get("offset", "")
        if not offset_text.isdigit() or len(offset_text) > 19:
            raise ApiRefusal(400, _E.BAD_REQUEST, "offset must be a number of bytes")
        offset = int(offset_text)
        blob = await self._blob(request)
        if blob.owner != device.device_id:
            raise ApiRefusal(
                403,
                _E.NOT_AUTHORIZED,
                "only the device that started an upload adds to it",
            )
        if not body:
            raise ApiRefusal(400, _E.BAD_REQUEST, "an empty piece")
        async with self._locks.hold(blob.blob_id):
            blob = await self._blob(request)
            if blob.complete or offset != blob.received:
                return _resume_here(blob)
            if offset + len(body) > blob.size:
                raise ApiRefusal(
                    400,
                    _E.BAD_REQUEST,
                    f"that piece runs past the {blob.size} bytes announced",
                )
            try:
                await asyncio.to_thread(files.write, blob.blob_id, offset, body)
            except BlobFileError as exc:
                raise _unavailable(blob.blob_id, exc) from exc
            try:
                blob = await self.ctx.store.blob_progress(
                    blob.blob_id, offset, len(body), self.ctx.clock()
                )
            except (ConflictError, NotFoundError):  # another node won (rule 2)
                return _resume_here(await self._blob(request))
        return json_response(_info(blob))

    async def download(self, request: Request) -> Response:
        await authenticate_device(self.ctx, self.nonces, request, b"")
        files = self._files()
        blob = await self._blob(request)
        if not blob.complete:
            raise ApiRefusal(
                409, _E.CONFLICT, "the attachment is not uploaded completely"
            )
        try:
            wanted = _byte_range(request.headers.get("range"), blob.size)
        except ValueError:
            return Response(
                proto.encode_json(
                    proto.ErrorBody(
                        code=_E.BAD_REQUEST.value,
                        detail="ask for one range within the attachment's "
                        f"{blob.size} bytes",
                    )
                ),
                416,
                headers={"content-range": f"bytes */{blob.size}"},
                media_type="application/json",
            )
        start, end = wanted or (0, blob.size - 1)
        try:
            fd = await asyncio.to_thread(files.open, blob, start)
        except BlobFileError as exc:
            raise _unavailable(blob.blob_id, exc) from exc
        headers = {
            "content-length": str(end - start + 1),
            "accept-ranges": "bytes",
            "cache-control": "no-store",
        }
        if wanted is not None:
            headers["content-range"] = f"bytes {start}-{end}/{blob.size}"
        return StreamingResponse(
            _read(fd, end - start + 1),
            status_code=206 if wanted is not None else 200,
            headers=headers,
            media_type="application/octet-stream",
        )


def _resume_here(blob: BlobRow) -> Response:
    """409: the piece does not continue the upload; the header says what would."""
    detail = (
        "the attachment is complete already"
        if blob.complete
        else f"the upload has {blob.received} bytes: continue at offset {blob.received}"
    )
    return Response(
        proto.encode_json(proto.ErrorBody(code=_E.CONFLICT.value, detail=detail)),
        409,
        headers={RECEIVED_HEADER: str(blob.received)},
        media_type="application/json",
    )


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a ``Range: bytes=N-[M]`` header, or None for no header.

    Raises ``ValueError`` (answered 416) for anything else or a range outside the
    blob: only single ranges are served, which is all a resuming download needs.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is not None:
        first = int(match[1])
        last = min(int(match[2]), size - 1) if match[2] else size - 1
        if first <= last:
            return first, last
    raise ValueError(header)


async def _read(fd: int, length: int) -> AsyncIterator[bytes]:
    try:
        blocks = _blocks(fd, length)
        while block := await asyncio.to_thread(next, blocks, b""):
            yield block
    finally:
        os.close(fd)


def _blocks(fd: int, length: int) -> Iterator[bytes]:
    while length > 0:
        block = os.read(fd, min(_READ_BLOCK, length))
        if not block:
            return
        length -= len(block)
        yield block


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"
