"""Attachments: a file sealed in fixed-size chunks under a key of its own (AES-256-GCM).

The construction is STREAM (Hoang, Reyhanitabar, Rogaway, Vizár, "Online
Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015), as age and
Tink use it.  For a file of ``size`` bytes cut into chunks of ``chunk`` bytes::

    n        = max(1, ceil(size / chunk))       chunks; an empty file is one empty chunk
    nonce_i  = i as 11 bytes big-endian || flag flag = 0x01 for chunk n-1, else 0x00
    aad      = "strongroom/v1/attachment" || 0x00 || chunk as 4 bytes big-endian
    sealed_i = AES-256-GCM(key, nonce_i, plaintext_i, aad)   ciphertext || 16-byte tag
    blob     = sealed_0 || sealed_1 || ... || sealed_{n-1}

Every chunk but the last holds exactly ``chunk`` plaintext bytes; the last holds 1 to
``chunk`` (0 only for an empty file).  The digest that travels in ``proto.FileRef`` is
SHA-256 of the whole blob.

Rules (what each part is for, and where it is enforced):

1. The index is in the nonce: a chunk opens only at its own place, so chunks cannot be
   reordered, dropped or duplicated (``ChunkCipher.open``).
2. The last-chunk flag is in the nonce: a blob cut at a chunk boundary ends in a chunk
   sealed as "not last", and anything after the chunk sealed as "last" has no place, so
   truncation and appending fail (``AttachmentDecryptor.finish`` / ``feed``).
3. The chunk size is in the associated data: a blob opens only with the chunk size it
   was sealed with, so nobody can re-cut it into different chunk boundaries.
4. The key is fresh for every file (``new_attachment_key``) and used for nothing else, so
   (key, nonce) never repeats for different plaintext.  Sealing the *same* plaintext again
   gives the same bytes, which is what lets an upload resume; sealing *different*
   plaintext under a used key is the one thing a caller must never do (the uploader in
   ``strongroom.client`` resumes only a file that has not changed).

No I/O of our own: the encryptor reads the caller's open binary file object and the
decryptor writes to the caller's, never holding more than two chunks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from strongroom.errors import DecryptionError, LocalProtocolError

__all__ = [
    "ATTACHMENT_KEY_BYTES",
    "ATTACHMENT_TAG_BYTES",
    "DEFAULT_CHUNK",
    "MAX_CHUNK",
    "MIN_CHUNK",
    "AttachmentDecryptor",
    "AttachmentEncryptor",
    "ChunkCipher",
    "chunk_count",
    "new_attachment_key",
    "plain_size",
    "sealed_size",
]

DEFAULT_CHUNK = 1 << 20
MIN_CHUNK = 1024
MAX_CHUNK = 16 << 20  # proto.FileRef accepts no more
ATTACHMENT_KEY_BYTES = 32
ATTACHMENT_TAG_BYTES = 16
_DOMAIN = b"strongroom/v1/attachment\x00"
_MAX_INDEX = (1 << 88) - 1


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


def new_attachment_key() -> bytes:
    """A fresh random AES-256 key, for one file only."""
    return os.urandom(ATTACHMENT_KEY_BYTES)


def _check_chunk(chunk: int) -> None:
    if not MIN_CHUNK <= chunk <= MAX_CHUNK:
        raise LocalProtocolError(
            f"attachment chunk size {chunk} is outside {MIN_CHUNK}..{MAX_CHUNK}",
            "bad_request",
        )


def chunk_count(size: int, chunk: int = DEFAULT_CHUNK) -> int:
    """How many chunks a file of ``size`` bytes is sealed in (at least one)."""
    if size < 0:
        raise LocalProtocolError("a file size cannot be negative", "bad_request")
    _check_chunk(chunk)
    return max(1, -(-size // chunk))


def sealed_size(size: int, chunk: int = DEFAULT_CHUNK) -> int:
    """The length of the blob that a file of ``size`` bytes seals to."""
    return size + ATTACHMENT_TAG_BYTES * chunk_count(size, chunk)


def plain_size(sealed: int, chunk: int = DEFAULT_CHUNK) -> int:
    """The plaintext length behind a blob of ``sealed`` bytes.

    Raises ``DecryptionError`` if no file seals to that length.
    """
    _check_chunk(chunk)
    whole, rest = divmod(sealed, chunk + ATTACHMENT_TAG_BYTES)
    if rest == 0 and whole >= 1:
        return whole * chunk  # the last chunk is full
    if rest < ATTACHMENT_TAG_BYTES or (rest == ATTACHMENT_TAG_BYTES and whole > 0):
        # shorter than a tag, or an empty last chunk after others: never sealed so
        raise DecryptionError(f"no attachment seals to {sealed} bytes")
    return whole * chunk + rest - ATTACHMENT_TAG_BYTES


class ChunkCipher:
    """Seals and opens single chunks: the STREAM construction, one chunk at a time."""

    def __init__(self, key: bytes, chunk: int = DEFAULT_CHUNK) -> None:
        if len(key) != ATTACHMENT_KEY_BYTES:
            raise LocalProtocolError("an attachment key is 32 bytes", "bad_request")
        _check_chunk(chunk)
        self.chunk = chunk
        self._aead = AESGCM(key)
        self._aad = _DOMAIN + chunk.to_bytes(4, "big")  # rule 3

    @staticmethod
    def nonce(index: int, last: bool) -> bytes:
        """Rules 1 and 2: the chunk's place and whether it ends the file."""
        if not 0 <= index <= _MAX_INDEX:
            raise LocalProtocolError("chunk index out of range", "bad_request")
        return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")

    def seal(self, index: int, plaintext: bytes, *, last: bool) -> bytes:
        if len(plaintext) > self.chunk or (not last and len(plaintext) != self.chunk):
            raise LocalProtocolError(
                "only the last chunk may be shorter than the chunk size", "bad_request"
            )
        return self._aead.encrypt(self.nonce(index, last), plaintext, self._aad)

    def open(self, index: int, sealed: bytes, *, last: bool) -> bytes:
        """Raises ``DecryptionError`` unless ``sealed`` is chunk ``index`` as sealed."""
        if len(sealed) < ATTACHMENT_TAG_BYTES:
            raise DecryptionError("attachment chunk too short")
        try:
            return self._aead.decrypt(self.nonce(index, last), sealed, self._aad)
        except InvalidTag as exc:
            raise DecryptionError(
                f"attachment chunk {index} does not open: the file was altered, "
                "cut short or reordered"
            ) from exc


class AttachmentEncryptor:
    """Seals a file of known ``size``, read from ``source``, chunk by chunk.

    ``chunks()`` yields the sealed chunks in order and keeps the SHA-256 of everything
    sealed; ``digest()`` is the whole blob's once they are all out.  ``chunks(start=i)``
    yields from chunk ``i`` (to resume an upload) but still seals and hashes chunks
    ``0..i-1`` without yielding them, because the digest covers the whole blob: resuming
    costs a local re-read of the prefix, never a re-send.
    """

    def __init__(
        self,
        source: Readable,
        size: int,
        key: bytes | None = None,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        self.key = key if key is not None else new_attachment_key()
        self._cipher = ChunkCipher(self.key, chunk)
        self.chunk = chunk
        self.size = size
        self.count = chunk_count(size, chunk)
        self.sealed_size = sealed_size(size, chunk)
        self._source = source
        self._hash = hashlib.sha256()
        self._done = 0
        self._used = False

    def chunks(self, start: int = 0) -> Iterator[bytes]:
        """Raises ``LocalProtocolError`` if the file is not ``size`` bytes long (it
        changed while it was read), or when called a second time."""
        if self._used:
            raise LocalProtocolError("an encryptor seals its file once", "bad_request")
        if not 0 <= start <= self.count:
            raise LocalProtocolError("resume point beyond the file", "bad_request")
        self._used = True
        for index in range(self.count):
            last = index == self.count - 1
            want = self.size - index * self.chunk if last else self.chunk
            plaintext = _read_exactly(self._source, want)
            sealed = self._cipher.seal(index, plaintext, last=last)
            self._hash.update(sealed)
            self._done = index + 1
            if index >= start:
                yield sealed
        if self._source.read(1):
            raise LocalProtocolError(
                "the file grew while it was being encrypted", "bad_request"
            )

    def digest(self) -> bytes:
        """SHA-256 of the blob: raises ``LocalProtocolError`` before the last chunk."""
        if self._done != self.count:
            raise LocalProtocolError("the file is not sealed yet", "bad_request")
        return self._hash.digest()


def _read_exactly(source: Readable, want: int) -> bytes:
    data = source.read(want)
    while len(data) < want:
        more = source.read(want - len(data))
        if not more:
            raise LocalProtocolError(
                "the file shrank while it was being encrypted", "bad_request"
            )
        data += more
    return data


class AttachmentDecryptor:
    """Opens a blob fed in pieces of any length, in order, writing plaintext to ``sink``.

    With ``size`` (the plaintext length, from the ``FileRef``) the decryptor knows which
    chunk is the last; without it, the last is whatever remains at ``finish()``.  Either
    way rule 2 holds.  ``digest()`` is the SHA-256 of everything fed.  Nothing unverified
    reaches ``sink``: each chunk is written only after its tag checked.
    """

    def __init__(
        self,
        key: bytes,
        sink: Writable,
        *,
        size: int | None = None,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        self._cipher = ChunkCipher(key, chunk)
        self._sink = sink
        self._sealed_chunk = chunk + ATTACHMENT_TAG_BYTES
        self._count = None if size is None else chunk_count(size, chunk)
        self._expected = None if size is None else sealed_size(size, chunk)
        self._buffer = bytearray()
        self._index = 0
        self._fed = 0
        self._hash = hashlib.sha256()
        self._finished = False

    def feed(self, data: bytes) -> None:
        """Raises ``DecryptionError`` if a chunk does not open or the blob runs long."""
        if self._finished:
            raise DecryptionError("data after the end of the attachment")
        self._fed += len(data)
        if self._expected is not None and self._fed > self._expected:
            raise DecryptionError("the attachment is longer than its reference says")
        self._hash.update(data)
        self._buffer += data
        # Keep back the final chunk: without ``size`` only finish() knows which it is.
        while len(self._buffer) > self._sealed_chunk or (
            len(self._buffer) == self._sealed_chunk
            and self._count is not None
            and self._index < self._count - 1
        ):
            self._open(bytes(self._buffer[: self._sealed_chunk]), last=False)
            del self._buffer[: self._sealed_chunk]

    def finish(self) -> None:
        """Open the last chunk.  Raises ``DecryptionError`` if the blob was cut short."""
        if self._finished:
            return
        if self._expected is not None and self._fed != self._expected:
            raise DecryptionError("the attachment is shorter than its reference says")
        self._open(bytes(self._buffer), last=True)
        self._buffer.clear()
        self._finished = True

    def digest(self) -> bytes:
        return self._hash.digest()

    def _open(self, sealed: bytes, *, last: bool) -> None:
        if self._count is not None and self._index >= self._count:
            raise DecryptionError("the attachment is longer than its reference says")
        self._sink.write(self._cipher.open(self._index, sealed, last=last))
        self._index += 1
