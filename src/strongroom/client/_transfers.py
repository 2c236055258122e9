"""Attachments on the device: encrypt while uploading, verify before decrypting.

Rules:

1. A file is sealed under a fresh key (``crypto.AttachmentEncryptor``) while it is
   uploaded, one piece (``PUT /v1/blobs/{id}?offset=N``, at most ``MAX_BLOB_PIECE``) at a
   time: memory holds a piece and a chunk, whatever the file's size.  Reading and sealing
   run in a worker thread so the event loop stays free.
2. An upload resumes where the server's count says (``GET /v1/blobs/{id}/status``):
   within one call after a broken connection (retried with backoff), and in a later
   process, because the transfer's blob id, key and chunk size stay in the device's
   encrypted store (meta key ``transfers``, keyed by the file's absolute path) until
   the upload completes.
3. An upload resumes only a file that is unchanged (size, modification time, inode):
   resuming seals again under the same key, which is safe only for the same plaintext
   (``crypto`` rule 4).  A changed file starts over with a fresh key and a new blob.
4. A download goes to ``.<blob>.part`` in the destination directory: ciphertext, resumed
   with a ``Range`` request.  Its SHA-256 must equal the reference's digest before
   anything is decrypted; it is then decrypted into ``.<blob>.open`` (each chunk checked
   before it is written) and only a complete, verified file is given its final name.
   Any mismatch deletes both and raises ``DecryptionError``.
5. A download never overwrites a file: the sender's name is sanitised (no path
   separators, leading dots or dashes, control or format characters) and, when taken,
   numbered ("report (1).pdf").
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import hmac
import mimetypes
import os
import stat
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import msgspec

from strongroom import crypto, proto
from strongroom.errors import (
    ClientError,
    DecryptionError,
    LocalProtocolError,
    ServerRefusedError,
)

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["Progress", "download_file", "safe_file_name", "upload_file"]

#: Called with (bytes done, bytes in all) of the blob as a transfer moves.
Progress = Callable[[int, int], None]

_META_KEY = "transfers"
_RETRIES = 6
_RESYNCS = 20
_READ_BLOCK = 1 << 20
_MAX_NAME_BYTES = 200  # leaves room for " (9999)" and the file system's 255
_STALE_MS = 7 * 24 * 3600 * 1000


class _Upload(msgspec.Struct, frozen=True):
    """An upload in progress, as the device's store keeps it (rule 2)."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    blob: str
    key: bytes
    chunk: int
    started_at: int

    def same_file(self, st: os.stat_result) -> bool:
        return (self.size, self.mtime_ns, self.inode) == (
            st.st_size,
            st.st_mtime_ns,
            st.st_ino,
        )


class _Transient(Exception):
    """The server could not be reached or asked us to come back: try again."""


class _Resync(Exception):
    """The server holds a different amount than we thought: ask it and go on from there."""


# --- upload ----------------------------------------------------------------------------


async def upload_file(
    client: Client,
    path: Path | str,
    progress: Progress | None = None,
    *,
    chunk: int = crypto.DEFAULT_CHUNK,
    piece: int = proto.MAX_BLOB_PIECE,
    mime: str | None = None,
    caption: str = "",
) -> proto.FileRef:
    """Encrypt and upload a file; the reference to put in a message.

    Raises ``ServerRefusedError`` if the server refuses it (``attachment_too_large``
    names the server's limit), ``ClientError`` if the file cannot be read or the server
    stays unreachable (run it again: it resumes).
    """
    path = Path(path).resolve()
    st = _regular_file(path)
    client.check_attachment(st.st_size)
    if not 1 <= piece <= proto.MAX_BLOB_PIECE:
        raise ClientError(f"a piece is 1..{proto.MAX_BLOB_PIECE} bytes")
    state = _transfers(client).get(str(path))
    if state is not None and not state.same_file(st):
        _forget(client, state)
        state = None
    failures = resyncs = 0
    while True:
        try:
            if state is None:
                state = await _start(client, path, st, chunk)
            info = await _status(client, state.blob)
            sealed = crypto.sealed_size(state.size, state.chunk)
            if info is not None and (info.size != sealed or info.received > sealed):
                info = None  # not the upload we started: never trust its count
            if info is None:  # collected on the server: begin again
                _forget(client, state)
                state = None
                failures += 1
                continue
            digest = await _push(client, state, info.received, piece, progress)
            break
        except _Resync:
            resyncs += 1
            if resyncs > _RESYNCS:
                raise ClientError(
                    "the server keeps losing the upload's place; try again later"
                ) from None
        except _Transient as exc:
            failures += 1
            if failures > _RETRIES:
                raise ClientError(
                    f"the upload of {path.name} was interrupted: run it again to resume"
                ) from exc
            await asyncio.sleep(min(0.2 * 2**failures, 5.0))
        except LocalProtocolError as exc:  # the file changed while it was read
            if state is not None:
                _forget(client, state)
            raise ClientError(f"{path.name} changed while it was uploaded") from exc
        except OSError as exc:
            raise ClientError(f"cannot read {path}: {exc.strerror}") from exc
    _forget(client, state)
    return proto.FileRef(
        blob=state.blob,
        key=state.key,
        digest=digest,
        size=state.size,
        chunk=state.chunk,
        name=path.name[: proto.MAX_FILE_NAME],
        mime=mime or mimetypes.guess_type(path.name)[0] or "application/octet-stream",
        caption=caption,
    )


def _regular_file(path: Path) -> os.stat_result:
    try:
        st = path.stat()
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ClientError(f"{path} is not a regular file")
    return st


async def _start(client: Client, path: Path, st: os.stat_result, chunk: int) -> _Upload:
    try:
        sealed = crypto.sealed_size(st.st_size, chunk)
    except LocalProtocolError as exc:
        raise ClientError(str(exc)) from exc
    body = proto.encode_json(proto.BlobCreate(size=sealed))
    response = await _call(client, "POST", "/v1/blobs", body)
    info = _info(response)
    state = _Upload(
        path=str(path),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        inode=st.st_ino,
        blob=info.blob,
        key=crypto.new_attachment_key(),
        chunk=chunk,
        started_at=client.device.clock(),
    )
    # Kept before a single byte leaves, so a later process can finish it (rule 2).
    uploads = _transfers(client)
    uploads[state.path] = state
    _save(client, uploads)
    return state


async def _status(client: Client, blob: str) -> proto.BlobInfo | None:
    response = await _call(client, "GET", f"/v1/blobs/{blob}/status", ok=(200, 404))
    return None if response.status_code == 404 else _info(response)


async def _push(
    client: Client,
    state: _Upload,
    offset: int,
    piece: int,
    progress: Progress | None,
) -> bytes:
    """Send the blob from ``offset`` on; its digest (the prefix is sealed again, locally,
    because the digest covers the whole blob)."""
    sealed_chunk = state.chunk + crypto.ATTACHMENT_TAG_BYTES
    total = crypto.sealed_size(state.size, state.chunk)
    first = offset // sealed_chunk
    with open(state.path, "rb") as source:
        encryptor = crypto.AttachmentEncryptor(
            source, state.size, state.key, state.chunk
        )
        chunks = encryptor.chunks(first)
        position = first * sealed_chunk  # where the next sealed chunk starts
        sent = offset
        pending = bytearray()
        while (sealed := await asyncio.to_thread(next, chunks, None)) is not None:
            pending += memoryview(sealed)[max(0, sent - position) :]
            position += len(sealed)
            while len(pending) >= piece:
                sent = await _put(client, state.blob, sent, bytes(pending[:piece]))
                del pending[:piece]
                if progress is not None:
                    progress(sent, total)
        if pending:
            sent = await _put(client, state.blob, sent, bytes(pending))
            if progress is not None:
                progress(sent, total)
        if sent != total:
            raise _Resync
        return encryptor.digest()


async def _put(client: Client, blob: str, offset: int, data: bytes) -> int:
    response = await _call(
        client,
        "PUT",
        f"/v1/blobs/{blob}?offset={offset}",
        data,
        content_type="application/octet-stream",
        ok=(200, 409),
    )
    if response.status_code == 409:
        raise _Resync
    info = _info(response)
    if info.received != offset + len(data):
        raise _Resync
    return info.received


# --- download --------------------------------------------------------------------------


async def download_file(
    client: Client,
    ref: proto.FileRef,
    dest_dir: Path | str,
    progress: Progress | None = None,
    *,
    piece: int = proto.MAX_BLOB_PIECE,
) -> Path:
    """Fetch, verify and decrypt an attachment into ``dest_dir``; the path it got.

    Raises ``DecryptionError`` if the blob is not what the sender sent (nothing is
    kept), ``ServerRefusedError`` if the server refuses (``not_found``: it expired),
    ``ClientError`` if the server stays unreachable (run it again: it resumes).
    """
    dest = Path(dest_dir)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClientError(f"cannot write to {dest}: {exc.strerror}") from exc
    total = crypto.sealed_size(ref.size, ref.chunk)
    part = dest / f".{ref.blob}.part"
    opened = dest / f".{ref.blob}.open"
    failures = 0
    while True:
        try:
            await _fetch(client, ref, part, total, piece, progress)
            break
        except _Transient as exc:
            failures += 1
            if failures > _RETRIES:
                raise ClientError(
                    f"the download of {ref.name} was interrupted: run it again to resume"
                ) from exc
            await asyncio.sleep(min(0.2 * 2**failures, 5.0))
        except DecryptionError:
            part.unlink(missing_ok=True)
            raise
        except ServerRefusedError as exc:
            if exc.code == proto.ErrorCode.NOT_FOUND:  # collected: nothing to resume
                part.unlink(missing_ok=True)
            raise
    try:
        if not await asyncio.to_thread(_digest_matches, part, ref.digest):
            raise DecryptionError(
                f"the attachment {ref.name!r} on the server is not what its sender "
                "sent: refused"
            )
        await asyncio.to_thread(_decrypt, part, opened, ref)
        final = await asyncio.to_thread(_place, opened, dest, safe_file_name(ref.name))
    except BaseException:
        opened.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
        raise
    part.unlink(missing_ok=True)
    return final


async def _fetch(
    client: Client,
    ref: proto.FileRef,
    part: Path,
    total: int,
    piece: int,
    progress: Progress | None,
) -> None:
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as out:
        have = out.seek(0, os.SEEK_END)
        if have > total:
            out.truncate(0)
            have = 0
        while have < total:
            last = min(have + piece, total) - 1
            response = await _call(
                client,
                "GET",
                f"/v1/blobs/{ref.blob}",
                headers={"range": f"bytes={have}-{last}"},
                ok=(206,),
            )
            wanted = f"bytes {have}-{last}/{total}"
            if (
                response.headers.get("content-range") != wanted
                or len(response.content) != last - have + 1
            ):
                raise DecryptionError(
                    f"the attachment {ref.name!r} on the server is not the size its "
                    "sender sent: refused"
                )
            out.write(response.content)
            out.flush()
            have = last + 1
            if progress is not None:
                progress(have, total)
        os.fsync(out.fileno())


def _blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(_READ_BLOCK):
            yield block


def _digest_matches(part: Path, digest: bytes) -> bool:
    hashed = hashlib.sha256()
    for block in _blocks(part):
        hashed.update(block)
    return hmac.compare_digest(hashed.digest(), digest)


def _decrypt(part: Path, opened: Path, ref: proto.FileRef) -> None:
    fd = os.open(opened, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        decryptor = crypto.AttachmentDecryptor(
            ref.key, out, size=ref.size, chunk=ref.chunk
        )
        for block in _blocks(part):
            decryptor.feed(block)
        decryptor.finish()
        out.flush()
        os.fsync(out.fileno())


def _place(opened: Path, dest: Path, name: str) -> Path:
    """Give ``opened`` the first free name like ``name``; never replace a file."""
    stem, suffix = os.path.splitext(name)
    if not stem:  # ".bashrc" became "bashrc"; "tar.gz" keeps its whole name
        stem, suffix = name, ""
    for n in range(10_000):
        target = dest / (name if n == 0 else f"{stem} ({n}){suffix}")
        try:
            os.link(opened, target)  # atomic, and fails if the name is taken
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
                raise
            if not _claim(target):  # a file system without hard links
                continue
            os.replace(opened, target)
            return target
        opened.unlink()
        return target
    raise ClientError(f"{dest} holds too many files named like {name!r}")


def _claim(target: Path) -> bool:
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    return True


def safe_file_name(name: str) -> str:
    """``name`` as a file name that stays in its directory and shows what it is.

    Drops path separators, control and format characters (bidirectional overrides
    among them: "cod.exe" must not pass for "exe.doc"), leading dots, dashes and
    spaces; keeps the name within 200 bytes, extension first.
    """
    kept = "".join(
        "_" if ch in "/\\" else ch
        for ch in unicodedata.normalize("NFC", name)
        if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Zl", "Zp")
    )
    kept = kept.strip().lstrip(".- ").rstrip(". ")
    stem, suffix = os.path.splitext(kept)
    if len(suffix.encode()) > 20:
        stem, suffix = kept, ""
    if len(kept.encode()) > _MAX_NAME_BYTES:
        while stem and len((stem + suffix).encode()) > _MAX_NAME_BYTES:
            stem = stem[:-1]
        kept = stem.rstrip(". ") + suffix if stem.rstrip(". ") else ""
    return kept or "attachment"


# --- plumbing ----------------------------------------------------------------------------


async def _call(
    client: Client,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    ok: tuple[int, ...] = (200,),
) -> httpx.Response:
    """One signed request; ``_Transient`` if it could not get through or the server
    was unavailable, ``ServerRefusedError`` for any other status not in ``ok``."""
    try:
        response = await client.signed(
            method, path, body, content_type=content_type, headers=headers
        )
    except ServerRefusedError:
        raise
    except ClientError as exc:
        raise _Transient(str(exc)) from exc
    if response.status_code in ok:
        return response
    if response.status_code in (502, 503, 504):
        raise _Transient(f"server answered {response.status_code}")
    from ._client import http_error  # here: _client may come to import this module

    raise http_error(response)


def _info(response: httpx.Response) -> proto.BlobInfo:
    return proto.decode_json(response.content, proto.BlobInfo)


_uploads_decoder = msgspec.msgpack.Decoder(dict[str, _Upload])


def _transfers(client: Client) -> dict[str, _Upload]:
    """Uploads in progress; ones older than a week are forgotten (the server has
    collected their blobs long since)."""
    raw = client.store.get_meta(_META_KEY)
    if not raw:
        return {}
    try:
        uploads = _uploads_decoder.decode(raw)
    except proto.DECODE_ERRORS:
        return {}
    now = client.device.clock()
    return {k: v for k, v in uploads.items() if now - v.started_at < _STALE_MS}


def _save(client: Client, uploads: dict[str, _Upload]) -> None:
    client.store.set_meta(_META_KEY, msgspec.msgpack.encode(uploads))


def _forget(client: Client, state: _Upload) -> None:
    uploads = _transfers(client)
    with contextlib.suppress(KeyError):
        del uploads[state.path]
    _save(client, uploads)
