"""Attachment encryption: STREAM chunks under AES-256-GCM, streamed both ways."""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom import crypto
from strongroom.errors import DecryptionError, LocalProtocolError

KEY = bytes(range(32))
CHUNK = 1024
SEALED = CHUNK + crypto.ATTACHMENT_TAG_BYTES


def seal(data: bytes, key: bytes = KEY, chunk: int = CHUNK) -> tuple[bytes, bytes]:
    encryptor = crypto.AttachmentEncryptor(io.BytesIO(data), len(data), key, chunk)
    blob = b"".join(encryptor.chunks())
    return blob, encryptor.digest()


def unseal(
    blob: bytes,
    size: int | None,
    key: bytes = KEY,
    chunk: int = CHUNK,
    piece: int = 777,
) -> bytes:
    out = io.BytesIO()
    decryptor = crypto.AttachmentDecryptor(key, out, size=size, chunk=chunk)
    for at in range(0, len(blob), piece):
        decryptor.feed(blob[at : at + piece])
    decryptor.finish()
    assert decryptor.digest() == hashlib.sha256(blob).digest()
    return out.getvalue()


# --- the construction, pinned ------------------------------------------------------------


def test_known_answer() -> None:
    """A fixed key and file give these bytes, and they are the documented construction."""
    data = bytes(i % 251 for i in range(2500))
    blob, digest = seal(data)
    assert len(blob) == 2548 == crypto.sealed_size(2500, CHUNK)
    assert blob[:16].hex() == "0ebdb7ddb12985ba00a1a33e14219f96"
    assert blob[-16:].hex() == "68cee6100c8ab9eca3c7f2b9d7299910"
    assert digest.hex() == (
        "a3bf72a8222da4190f03488d43c30760a5c897c73d7ba12ccb48e196e697a8a1"
    )
    assert digest == hashlib.sha256(blob).digest()

    # rebuilt from the module docstring with nothing but AES-GCM
    aead = AESGCM(KEY)
    aad = b"strongroom/v1/attachment\x00" + CHUNK.to_bytes(4, "big")
    pieces = [data[0:1024], data[1024:2048], data[2048:]]
    expected = b"".join(
        aead.encrypt(i.to_bytes(11, "big") + bytes([i == 2]), piece, aad)
        for i, piece in enumerate(pieces)
    )
    assert blob == expected


@pytest.mark.parametrize(
    ("size", "count", "sealed"),
    [
        (0, 1, 16),
        (1, 1, 17),
        (1024, 1, 1040),
        (1025, 2, 1057),
        (2048, 2, 2080),
        (2049, 3, 2097),
    ],
)
def test_sizes(size: int, count: int, sealed: int) -> None:
    assert crypto.chunk_count(size, CHUNK) == count
    assert crypto.sealed_size(size, CHUNK) == sealed
    assert crypto.plain_size(sealed, CHUNK) == size
    assert len(seal(os.urandom(size))[0]) == sealed


@pytest.mark.parametrize("sealed", [0, 1, 15, 1040 + 16, 1040 + 15])
def test_plain_size_refuses_lengths_nothing_seals_to(sealed: int) -> None:
    with pytest.raises(DecryptionError):
        crypto.plain_size(sealed, CHUNK)


def test_default_chunk_is_one_mebibyte_and_the_limits_hold() -> None:
    assert crypto.DEFAULT_CHUNK == 1 << 20
    assert crypto.sealed_size(3 << 20) == (3 << 20) + 48
    for chunk in (crypto.MIN_CHUNK - 1, crypto.MAX_CHUNK + 1):
        with pytest.raises(LocalProtocolError):
            crypto.ChunkCipher(KEY, chunk)
    with pytest.raises(LocalProtocolError):
        crypto.ChunkCipher(KEY[:16], CHUNK)


def test_a_fresh_key_each_time() -> None:
    one = crypto.AttachmentEncryptor(io.BytesIO(b"x"), 1)
    two = crypto.AttachmentEncryptor(io.BytesIO(b"x"), 1)
    assert len(one.key) == 32 and one.key != two.key


# --- round trips --------------------------------------------------------------------------


_sizes = st.one_of(
    st.integers(0, 5 * CHUNK),
    st.sampled_from([0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 1]),
)


@settings(max_examples=150, deadline=None)
@given(size=_sizes, piece=st.integers(1, 3 * SEALED), known=st.booleans())
def test_round_trip(size: int, piece: int, known: bool) -> None:
    data = os.urandom(size)
    blob, _ = seal(data)
    assert unseal(blob, size if known else None, piece=piece) == data


@settings(max_examples=50, deadline=None)
@given(size=_sizes, data=st.data())
def test_resume_from_any_chunk_yields_the_tail_and_the_whole_digest(
    size: int, data: st.DataObject
) -> None:
    plain = os.urandom(size)
    blob, digest = seal(plain)
    encryptor = crypto.AttachmentEncryptor(io.BytesIO(plain), size, KEY, CHUNK)
    start = data.draw(st.integers(0, encryptor.count))
    tail = b"".join(encryptor.chunks(start))
    assert tail == blob[start * SEALED :]
    assert encryptor.digest() == digest


def test_encryptor_refuses_a_file_that_changed_size() -> None:
    with pytest.raises(LocalProtocolError, match="shrank"):
        list(
            crypto.AttachmentEncryptor(io.BytesIO(b"x" * 100), 101, KEY, CHUNK).chunks()
        )
    with pytest.raises(LocalProtocolError, match="grew"):
        list(
            crypto.AttachmentEncryptor(io.BytesIO(b"x" * 100), 99, KEY, CHUNK).chunks()
        )


def test_digest_only_once_everything_is_sealed() -> None:
    encryptor = crypto.AttachmentEncryptor(io.BytesIO(b"x" * 3000), 3000, KEY, CHUNK)
    chunks = encryptor.chunks()
    next(chunks)
    with pytest.raises(LocalProtocolError):
        encryptor.digest()


# --- tampering ----------------------------------------------------------------------------


DATA = bytes(range(256)) * 14  # 3584 bytes: three full chunks and a short one
BLOB, _ = seal(DATA)


def _chunks(blob: bytes) -> list[bytes]:
    return [blob[i : i + SEALED] for i in range(0, len(blob), SEALED)]


def _tampered() -> dict[str, bytes]:
    c = _chunks(BLOB)
    flipped = bytearray(BLOB)
    flipped[SEALED + 5] ^= 0x01
    tag_flipped = bytearray(BLOB)
    tag_flipped[-1] ^= 0x80
    return {
        "flip a byte": bytes(flipped),
        "flip a tag bit": bytes(tag_flipped),
        "swap two chunks": c[1] + c[0] + c[2] + c[3],
        "duplicate a chunk": c[0] + c[0] + c[1] + c[2] + c[3],
        "drop a middle chunk": c[0] + c[2] + c[3],
        "drop the last chunk": c[0] + c[1] + c[2],
        "truncate inside the last chunk": BLOB[:-1],
        "truncate to nothing": b"",
        "append a byte": BLOB + b"\x00",
        "append a chunk": BLOB + c[1],
        "append the last chunk again": BLOB + c[3],
    }


@pytest.mark.parametrize("case", sorted(_tampered()))
@pytest.mark.parametrize("known", [True, False], ids=["size-known", "size-unknown"])
def test_every_tampering_is_refused(case: str, known: bool) -> None:
    with pytest.raises(DecryptionError):
        unseal(_tampered()[case], len(DATA) if known else None)


def test_wrong_key_or_chunk_size_is_refused() -> None:
    with pytest.raises(DecryptionError):
        unseal(BLOB, len(DATA), key=bytes(32))
    # the same bytes read as 2048-byte chunks: the chunk size is bound in the AAD
    blob, _ = seal(DATA, chunk=2048)
    with pytest.raises(DecryptionError):
        unseal(blob, None, chunk=1024)


def test_nothing_unverified_reaches_the_sink() -> None:
    out = io.BytesIO()
    decryptor = crypto.AttachmentDecryptor(KEY, out, size=len(DATA), chunk=CHUNK)
    bad = bytearray(BLOB)
    bad[2 * SEALED + 3] ^= 1
    decryptor.feed(bytes(bad[: 2 * SEALED]))
    assert out.getvalue() == DATA[: 2 * CHUNK]  # two good chunks, each checked
    with pytest.raises(DecryptionError):
        decryptor.feed(bytes(bad[2 * SEALED :]))
    assert out.getvalue() == DATA[: 2 * CHUNK]


# --- memory ------------------------------------------------------------------------------


def test_a_64_mib_file_needs_a_few_mib(tmp_path: Path) -> None:
    size = 64 << 20
    plain, sealed, opened = tmp_path / "p", tmp_path / "s", tmp_path / "o"
    with plain.open("wb") as f:
        block = os.urandom(1 << 20)
        for i in range(64):
            f.write(block[i:] + block[:i])
    tracemalloc.start()
    try:
        with plain.open("rb") as src, sealed.open("wb") as dst:
            encryptor = crypto.AttachmentEncryptor(src, size)
            for chunk in encryptor.chunks():
                dst.write(chunk)
        with sealed.open("rb") as src, opened.open("wb") as dst:
            decryptor = crypto.AttachmentDecryptor(encryptor.key, dst, size=size)
            while piece := src.read(256 * 1024):
                decryptor.feed(piece)
            decryptor.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 << 20, f"peak {peak / (1 << 20):.1f} MiB"
    assert decryptor.digest() == encryptor.digest()
    assert sealed.stat().st_size == crypto.sealed_size(size)
    with plain.open("rb") as a, opened.open("rb") as b:
        while left := a.read(1 << 20):
            assert left == b.read(1 << 20)
        assert b.read(1) == b""
