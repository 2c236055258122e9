"""Attachments against a real server process: the server stores only ciphertext,
transfers resume after a broken connection or a new process, the size limit is a clear
refusal, a tampered blob is refused, and blobs go once nobody waits for them.

What reaches the server's database (what it stores, how far an upload got, what is
referenced and collected) runs on both backends; what the device or the blob endpoints
decide on their own runs on the embedded default only, as the store's half of it is in
the conformance suite (tests/server/test_store.py).

Files are a few MiB cut in small chunks and pieces, so that a transfer takes many
requests without making the suite slow.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from _proxy import TcpProxy
from conftest import SQLITE, Backend, Org, arun
from strongroom import client, crypto, proto
from strongroom.errors import ClientError, DecryptionError, ServerRefusedError

MARKER = b"PLAINTEXT-MARKER-a7c1e9"
CHUNK = 16 * 1024
PIECE = 128 * 1024
SIZE = 3 * 1024 * 1024 + 123


class Aborted(Exception):
    """Raised from a progress callback: the process "dies" mid-transfer."""


Configure = Callable[..., Org]


def _configurer(tmp_path: Path, backend: Backend) -> Iterator[Configure]:
    started: list[Org] = []

    def make(**limits: float) -> Org:
        org = Org(tmp_path, backend)
        config = org.data.config.read_text()
        assert config.rstrip().rsplit("\n[", 1)[1].startswith("limits]")
        with org.data.config.open("a") as f:  # the [limits] table is the last one
            f.writelines(f"{key} = {value}\n" for key, value in limits.items())
        org.server.start()
        started.append(org)
        return org

    yield make
    for org in started:
        org.server.stop()


@pytest.fixture
def configured(tmp_path: Path, backend: Backend) -> Iterator[Configure]:
    """An organisation whose ``[limits]`` the test sets before its server starts."""
    yield from _configurer(tmp_path, backend)


@pytest.fixture
def configured_sqlite(tmp_path: Path) -> Iterator[Configure]:
    """The same on the embedded default only."""
    yield from _configurer(tmp_path, SQLITE)


def make_file(path: Path, size: int = SIZE) -> bytes:
    """Random bytes with the marker all through them."""
    data = bytearray(os.urandom(size))
    for at in range(0, size - len(MARKER), 64 * 1024):
        data[at : at + len(MARKER)] = MARKER
    path.write_bytes(data)
    return bytes(data)


def blob_file(org: Org, blob: str) -> Path:
    return org.data.path / "blobs" / blob[:2] / blob


async def upload(
    home: Path, path: Path, progress: client.Progress | None = None
) -> proto.FileRef:
    async with client.Client(home) as c:
        return await client.upload_file(c, path, progress, chunk=CHUNK, piece=PIECE)


async def download(
    home: Path,
    ref: proto.FileRef,
    dest: Path,
    progress: client.Progress | None = None,
) -> Path:
    async with client.Client(home) as c:
        return await client.download_file(c, ref, dest, progress, piece=PIECE)


async def send_file(home: Path, to: str, ref: proto.FileRef) -> None:
    async with client.Client(home) as c:
        await c.send(to, ref, blobs=[ref.blob])


async def received_files(home: Path) -> list[proto.FileRef]:
    async with client.Client(home) as c:
        return [m.file for m in await c.receive(0.1) if m.file is not None]


def blob_rows(org: Org) -> int:
    return int(org.sql("SELECT COUNT(*) FROM blobs")[0][0])


# --- the round trip -----------------------------------------------------------------------


def test_a_file_round_trips_and_the_server_sees_only_ciphertext(
    configured: Configure, tmp_path: Path
) -> None:
    org = configured()
    amir, bo = org.activate("amir"), org.activate("bo")
    data = make_file(tmp_path / "report.pdf")
    ref = arun(upload(amir, tmp_path / "report.pdf"))
    assert (ref.name, ref.mime, ref.size, ref.chunk) == (
        "report.pdf",
        "application/pdf",
        SIZE,
        CHUNK,
    )
    arun(send_file(amir, "bo", ref))
    (got,) = arun(received_files(bo))
    assert got == ref  # key, digest and all came inside the encryption
    saved = arun(download(bo, got, tmp_path / "inbox"))
    assert saved == tmp_path / "inbox" / "report.pdf"
    assert saved.read_bytes() == data
    assert sorted(p.name for p in saved.parent.iterdir()) == ["report.pdf"]

    stored = blob_file(org, ref.blob).read_bytes()
    assert len(stored) == crypto.sealed_size(SIZE, CHUNK)
    assert MARKER not in stored
    for path in org.data.path.rglob("*"):
        if path.is_file():
            assert MARKER not in path.read_bytes(), path
    assert MARKER not in org.database_contents()
    # the server knows the blob's size and owner, and nothing of the file
    assert org.sql("SELECT size, complete FROM blobs") == [(len(stored), 1)]

    # a second download never overwrites the first
    again = arun(download(bo, got, tmp_path / "inbox"))
    assert again.name == "report (1).pdf" and again.read_bytes() == data


def _peak_rss_kib(pid: int) -> int:
    """The process's peak resident memory so far (``VmHWM``), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_large_file_streams_through_in_bounded_memory(
    sqlite_org: Org, tmp_path: Path
) -> None:
    """Neither side holds the file: 48 MiB go up and down at the default chunk and
    piece sizes (4 MiB pieces) while the client's Python heap peaks at a few pieces and
    the server's resident memory grows by far less than the file."""
    org, size = sqlite_org, 48 << 20
    amir, bo = org.activate("amir"), org.activate("bo")
    with (tmp_path / "big.bin").open("wb") as f:
        block = os.urandom(1 << 20)
        for i in range(48):
            f.write(block[i:] + block[:i])
    assert org.server.process is not None
    server_pid = org.server.process.pid
    server_before = _peak_rss_kib(server_pid)

    async def go() -> tuple[int, int, Path]:
        async with client.Client(amir) as a:
            await a.send_text("bo", "warm-up")  # sessions and stores opened first
            tracemalloc.start()
            try:
                ref = await client.upload_file(a, tmp_path / "big.bin")
                _, up = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            await a.send("bo", ref, blobs=[ref.blob])
        async with client.Client(bo) as b:
            (got,) = [m.file for m in await b.receive(0.1) if m.file is not None]
            tracemalloc.start()
            try:
                saved = await client.download_file(b, got, tmp_path / "inbox")
                _, down = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        return up, down, saved

    up, down, saved = arun(go())
    # a piece being sealed, the piece on the wire and its signature input: a few
    # pieces, whatever the file's size (38 MiB, growing with it, before responses
    # were unlinked from their streams)
    bound = 5 * proto.MAX_BLOB_PIECE
    assert up < bound, f"upload peak {up / (1 << 20):.1f} MiB"
    assert down < bound, f"download peak {down / (1 << 20):.1f} MiB"
    grown = (_peak_rss_kib(server_pid) - server_before) * 1024
    assert grown < size // 3, f"server grew by {grown / (1 << 20):.1f} MiB"
    assert saved.stat().st_size == size
    with (tmp_path / "big.bin").open("rb") as a, saved.open("rb") as b:
        while left := a.read(1 << 20):
            assert left == b.read(1 << 20)


def test_an_empty_file_round_trips(configured: Configure, tmp_path: Path) -> None:
    org = configured()
    amir = org.activate("amir")
    (tmp_path / "empty").write_bytes(b"")
    ref = arun(upload(amir, tmp_path / "empty"))
    assert ref.size == 0
    assert arun(download(amir, ref, tmp_path / "out")).read_bytes() == b""


def test_the_size_limit_is_a_clear_error_and_stores_nothing(
    configured_sqlite: Configure, tmp_path: Path
) -> None:
    org = configured_sqlite(max_attachment_bytes=1024 * 1024)
    amir = org.activate("amir")
    make_file(tmp_path / "big.bin", 2 * 1024 * 1024)
    with pytest.raises(ServerRefusedError) as refused:
        arun(upload(amir, tmp_path / "big.bin"))
    assert refused.value.code == "attachment_too_large"
    message = str(refused.value)
    assert "up to 1.0 MiB" in message and "max_attachment_bytes" in message
    assert blob_rows(org) == 0
    assert not (org.data.path / "blobs").exists()
    # and nothing waits on the device to be resumed
    store = client.LocalStore.open(amir)
    try:
        assert not store.get_meta("transfers")
    finally:
        store.close()
    # a file within the limit goes through
    make_file(tmp_path / "small.bin", 512 * 1024)
    arun(upload(amir, tmp_path / "small.bin"))
    assert blob_rows(org) == 1


# --- resuming -------------------------------------------------------------------------------


def test_an_upload_cut_off_midway_resumes_where_the_server_stopped(
    configured: Configure, tmp_path: Path
) -> None:
    org = configured()
    with TcpProxy(org.server.port) as proxy:
        amir = org.activate("amir", url=f"http://127.0.0.1:{proxy.port}")
        data = make_file(tmp_path / "f.bin")
        before, connections = len(proxy.recorded()), proxy.connections
        proxy.cut_after(up=SIZE // 2)
        ref = arun(upload(amir, tmp_path / "f.bin"))
        sent = len(proxy.recorded()) - before
        assert proxy.connections > connections + 1  # it did reconnect
    assert SIZE < sent < 1.5 * SIZE  # and did not start again
    assert blob_rows(org) == 1
    bo = org.activate("bo")
    assert arun(download(bo, ref, tmp_path / "out")).read_bytes() == data


def test_an_upload_resumes_in_a_new_process(sqlite_org: Org, tmp_path: Path) -> None:
    org = sqlite_org
    amir = org.activate("amir")
    data = make_file(tmp_path / "f.bin")

    def die_halfway(done: int, total: int) -> None:
        if done > total // 2:
            raise Aborted

    with pytest.raises(Aborted):
        arun(upload(amir, tmp_path / "f.bin", die_halfway))
    ((received,),) = org.sql("SELECT received FROM blobs")
    assert SIZE // 2 < received < SIZE

    seen: list[int] = []
    ref = arun(upload(amir, tmp_path / "f.bin", lambda done, _: seen.append(done)))
    assert seen[0] == received + PIECE  # went on from the server's count
    assert blob_rows(org) == 1
    assert arun(download(amir, ref, tmp_path / "out")).read_bytes() == data


def test_a_changed_file_is_uploaded_afresh_under_a_new_key(
    sqlite_org: Org, tmp_path: Path
) -> None:
    """Sealing different plaintext under a used key would reuse GCM nonces."""
    org = sqlite_org
    amir = org.activate("amir")
    make_file(tmp_path / "f.bin")

    def die_halfway(done: int, total: int) -> None:
        if done > total // 2:
            raise Aborted

    with pytest.raises(Aborted):
        arun(upload(amir, tmp_path / "f.bin", die_halfway))
    (first,) = org.sql("SELECT blob_id FROM blobs")
    data = make_file(tmp_path / "f.bin")  # same size, other bytes
    seen: list[int] = []
    ref = arun(upload(amir, tmp_path / "f.bin", lambda done, _: seen.append(done)))
    assert seen[0] == PIECE
    assert ref.blob != first[0] and blob_rows(org) == 2
    assert arun(download(amir, ref, tmp_path / "out")).read_bytes() == data


def test_a_download_cut_off_midway_resumes(sqlite_org: Org, tmp_path: Path) -> None:
    org = sqlite_org
    amir = org.activate("amir")
    data = make_file(tmp_path / "f.bin")
    ref = arun(upload(amir, tmp_path / "f.bin"))
    with TcpProxy(org.server.port) as proxy:
        bo = org.activate("bo", url=f"http://127.0.0.1:{proxy.port}")
        before, connections = proxy.returned, proxy.connections
        proxy.cut_after(down=SIZE // 2)
        saved = arun(download(bo, ref, tmp_path / "out"))
        fetched = proxy.returned - before
        assert proxy.connections > connections + 1
    assert saved.read_bytes() == data
    assert SIZE < fetched < 1.5 * SIZE


def test_a_download_resumes_in_a_new_process(sqlite_org: Org, tmp_path: Path) -> None:
    org = sqlite_org
    amir = org.activate("amir")
    data = make_file(tmp_path / "f.bin")
    ref = arun(upload(amir, tmp_path / "f.bin"))

    def die_halfway(done: int, total: int) -> None:
        if done > total // 2:
            raise Aborted

    out = tmp_path / "out"
    with pytest.raises(Aborted):
        arun(download(amir, ref, out, die_halfway))
    part = out / f".{ref.blob}.part"
    have = part.stat().st_size
    assert MARKER not in part.read_bytes()  # what waits on disk is ciphertext
    seen: list[int] = []
    saved = arun(download(amir, ref, out, lambda done, _: seen.append(done)))
    assert seen[0] == have + PIECE
    assert saved.read_bytes() == data
    assert sorted(p.name for p in out.iterdir()) == ["f.bin"]


# --- a hostile server ---------------------------------------------------------------------


def test_a_tampered_blob_is_refused_by_the_recipient(
    sqlite_org: Org, tmp_path: Path
) -> None:
    org = sqlite_org
    amir, bo = org.activate("amir"), org.activate("bo")
    make_file(tmp_path / "f.bin")
    ref = arun(upload(amir, tmp_path / "f.bin"))
    stored = blob_file(org, ref.blob)
    raw = bytearray(stored.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    stored.write_bytes(raw)
    out = tmp_path / "out"
    with pytest.raises(DecryptionError, match="not what its sender sent"):
        arun(download(bo, ref, out))
    assert list(out.iterdir()) == []  # neither the ciphertext nor any plaintext stays

    # a reference whose digest is right but whose key is not: the chunks do not open
    wrong_key = msgspec.structs.replace(ref, key=bytes(32))
    raw[len(raw) // 2] ^= 0x01
    stored.write_bytes(raw)
    with pytest.raises(DecryptionError, match="does not open"):
        arun(download(bo, wrong_key, out))
    assert list(out.iterdir()) == []


def test_the_blob_endpoints_hold_to_who_may_do_what(
    sqlite_org: Org, tmp_path: Path
) -> None:
    org = sqlite_org
    amir, bo = org.activate("amir"), org.activate("bo")
    make_file(tmp_path / "f.bin", 40_000)
    ref = arun(upload(amir, tmp_path / "f.bin"))

    async def as_bo() -> None:
        async with client.Client(bo) as c:
            start = await c.signed(
                "POST", "/v1/blobs", proto.encode_json(proto.BlobCreate(size=100))
            )
            mine = proto.decode_json(start.content, proto.BlobInfo)
            assert (mine.size, mine.received, mine.complete) == (100, 0, False)
            # nobody adds to someone else's upload, or reads its status
            put = await c.signed(
                "PUT", f"/v1/blobs/{ref.blob}?offset=0", b"x", content_type="x"
            )
            assert put.status_code == 403
            status = await c.signed("GET", f"/v1/blobs/{ref.blob}/status")
            assert status.status_code == 404
            # any device of the organisation reads a complete blob, in ranges
            whole = await c.signed("GET", f"/v1/blobs/{ref.blob}")
            assert whole.status_code == 200
            assert whole.content == blob_file(org, ref.blob).read_bytes()
            tail = await c.signed(
                "GET", f"/v1/blobs/{ref.blob}", headers={"range": "bytes=100-"}
            )
            assert tail.status_code == 206 and tail.content == whole.content[100:]
            beyond = await c.signed(
                "GET",
                f"/v1/blobs/{ref.blob}",
                headers={"range": f"bytes={len(whole.content)}-"},
            )
            assert beyond.status_code == 416
            # an unfinished upload is not served, and pieces must continue it
            unfinished = await c.signed("GET", f"/v1/blobs/{mine.blob}")
            assert unfinished.status_code == 409
            gap = await c.signed(
                "PUT", f"/v1/blobs/{mine.blob}?offset=10", b"y" * 10, content_type="x"
            )
            assert gap.status_code == 409
            assert gap.headers["strongroom-blob-received"] == "0"
            over = await c.signed(
                "PUT", f"/v1/blobs/{mine.blob}?offset=0", b"y" * 101, content_type="x"
            )
            assert over.status_code == 400

    arun(as_bo())
    unsigned = httpx.get(f"{org.url}/v1/blobs/{ref.blob}", timeout=10)
    assert unsigned.status_code == 401


def test_a_message_naming_a_missing_attachment_is_refused(
    configured: Configure, tmp_path: Path
) -> None:
    org = configured()
    amir = org.activate("amir")
    org.activate("bo")
    make_file(tmp_path / "f.bin", 40_000)
    ref = arun(upload(amir, tmp_path / "f.bin"))
    org.sql("DELETE FROM blobs")
    with pytest.raises(ServerRefusedError) as refused:
        arun(send_file(amir, "bo", ref))
    assert refused.value.code == "conflict"
    assert ref.blob in str(refused.value) and "upload it again" in str(refused.value)


# --- disappearing -----------------------------------------------------------------------


def store_contents(home: Path) -> bytes:
    """Every value of every table of a device's (decrypted) store, as bytes to grep."""
    store = client.LocalStore.open(home)
    try:
        conn = store._conn  # the test reads what an unlocked device holds
        tables = [
            str(name)
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        ]
        out = bytearray()
        for table in tables:
            for row in conn.execute(f"SELECT * FROM {table}"):
                for value in row:
                    out += value if isinstance(value, bytes) else str(value).encode()
        return bytes(out)
    finally:
        store.close()


def test_an_expired_file_message_takes_its_key_with_it(
    sqlite_org: Org, tmp_path: Path
) -> None:
    """The file key lives only in the message that carried it, so when the message
    disappears nobody can open the blob again.  What happens on each device does not
    depend on the server's backend: SQLite only."""
    org = sqlite_org
    amir, bo = org.activate("amir"), org.activate("bo")
    data = make_file(tmp_path / "f.bin", 40_000)
    ref = arun(upload(amir, tmp_path / "f.bin"))

    async def send_vanishing() -> None:
        async with client.Client(amir) as c:
            await c.send("bo", ref, blobs=[ref.blob], expires_in=1)

    async def messages(home: Path) -> list[client.Received]:
        async with client.Client(home) as c:
            return [m for m in await c.receive(0.2) if m.kind in ("text", "file")]

    arun(send_vanishing())
    (got,) = arun(messages(bo))
    assert got.file == ref and got.expires_at is not None
    assert arun(download(bo, ref, tmp_path / "out")).read_bytes() == data
    for home in (amir, bo):
        assert ref.key in store_contents(home)

    time.sleep(max(0.0, got.expires_at / 1000 - time.time()) + 0.05)
    for home in (amir, bo):
        assert arun(messages(home)) == []  # each device deletes it as it runs
        store = client.LocalStore.open(home)
        try:
            assert store.get_message(bytes.fromhex(got.id)) is None
        finally:
            store.close()
        assert ref.key not in store_contents(home)


# --- collection ------------------------------------------------------------------------------


def test_a_blob_stays_while_its_message_waits_and_goes_after(
    configured: Configure, tmp_path: Path
) -> None:
    grace = 1.0
    org = configured(blob_grace_seconds=grace, prune_seconds=0.2)
    amir, bo = org.activate("amir"), org.activate("bo")
    data = make_file(tmp_path / "f.bin", 200_000)
    make_file(tmp_path / "unsent.bin", 1000)

    async def send_then_upload_another() -> tuple[proto.FileRef, proto.FileRef]:
        async with client.Client(amir) as c:
            ref = await client.upload_file(c, tmp_path / "f.bin", chunk=CHUNK)
            await c.send("bo", ref, blobs=[ref.blob])
            return ref, await client.upload_file(c, tmp_path / "unsent.bin")

    ref, unsent = arun(send_then_upload_another())
    # The unsent blob is newer: once it is collected, the grace is over for the sent
    # one too, and only the message waiting for bo keeps it.
    deadline = time.monotonic() + grace + 15
    while blob_file(org, unsent.blob).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not blob_file(org, unsent.blob).exists()
    assert blob_rows(org) == 1 and blob_file(org, ref.blob).exists()

    (got,) = arun(received_files(bo))  # fetched and acknowledged
    assert arun(download(bo, got, tmp_path / "out")).read_bytes() == data
    deadline = time.monotonic() + grace + 15
    while blob_rows(org) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert blob_rows(org) == 0
    assert org.sql("SELECT COUNT(*) FROM blob_refs") == [(0,)]
    while blob_file(org, ref.blob).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not blob_file(org, ref.blob).exists()
    with pytest.raises(ServerRefusedError) as gone:
        arun(download(bo, got, tmp_path / "later"))
    assert gone.value.code == "not_found"


def test_an_unsent_upload_is_collected_after_the_grace(
    configured: Configure, tmp_path: Path
) -> None:
    org = configured(blob_grace_seconds=1, upload_ttl_seconds=1, prune_seconds=0.2)
    amir = org.activate("amir")
    make_file(tmp_path / "f.bin", 40_000)
    ref = arun(upload(amir, tmp_path / "f.bin"))

    def die(done: int, total: int) -> None:
        raise Aborted

    with pytest.raises(Aborted):
        arun(upload(amir, tmp_path / "f.bin", die))  # a stalled upload
    assert blob_rows(org) == 2
    deadline = time.monotonic() + 15
    while blob_rows(org) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert blob_rows(org) == 0
    assert not blob_file(org, ref.blob).exists()


def test_upload_refuses_what_is_not_a_file(sqlite_org: Org, tmp_path: Path) -> None:
    org = sqlite_org
    amir = org.activate("amir")
    with pytest.raises(ClientError, match="not a regular file"):
        arun(upload(amir, tmp_path))
    with pytest.raises(ClientError, match="cannot read"):
        arun(upload(amir, tmp_path / "missing"))
