"""Backup and restore of the SQLite default, against real server processes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import sqlite3
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from _cli import sr as _sr
from conftest import Org, arun, receive, send
from strongroom import client, proto, server
from strongroom.cli._local import LocalServer
from strongroom.errors import StrongroomError
from strongroom.server._backup import MANIFEST, Manifest, _take, backup, restore
from strongroom.server._blobs import new_blob_id


def sr(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``strongroom ARGS``; the tests look at the exit status themselves."""
    return _sr(*args, check=False, env=env)


def _db(org: Org) -> Path:
    return org.data.path / "strongroom.db"


def _waiting(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        count: int = conn.execute("SELECT count(*) FROM inbox").fetchone()[0]
        return count


def _wait_for_waiting(db: Path, expected: int) -> None:
    """Acknowledgements are written after the client has gone: wait for them."""
    deadline = time.monotonic() + 10
    while _waiting(db) != expected:
        assert time.monotonic() < deadline, f"inbox never held {expected} envelopes"
        time.sleep(0.05)


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        out: dict[str, bytes] = {}
        for member in tar:
            f = tar.extractfile(member)
            assert f is not None
            out[member.name] = f.read()
        return out


def _serve_restored(org: Org, archive: Path, target: Path) -> LocalServer:
    """Stop the original server, restore; the server to start on the same address."""
    assert org.server.stop() == 0
    restored = sr("restore", archive, "--data", target)
    assert restored.returncode == 0, restored.stderr
    # The devices know the server by its URL: the restored one takes the same port.
    return LocalServer(target, port=org.server.port)


def test_a_backup_taken_while_serving_restores_the_waiting_messages(
    sqlite_org: Org, tmp_path: Path
) -> None:
    alice = sqlite_org.activate("alice")
    bob = sqlite_org.activate("bob")
    arun(send(alice, "bob", "read before the backup"))
    got, _ = arun(receive(bob))
    assert [m.text for m in got] == ["read before the backup"]
    arun(receive(alice))  # bob's delivery receipt
    _wait_for_waiting(_db(sqlite_org), 0)
    marker = f"MARKER-{uuid.uuid4().hex}"
    waiting = ["one", f"two {marker}", "three"]
    for text in waiting:
        arun(send(alice, "bob", text))

    archive = tmp_path / "hq.tar.gz"
    made = sr(  # the server is running
        "backup", "--data", sqlite_org.data.path, archive, "--with-authority-key"
    )
    assert made.returncode == 0, made.stderr
    assert "2 users, 2 devices, 3 waiting envelopes" in made.stdout
    assert "integrity check ok" in made.stdout
    assert archive.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    members = _members(archive)
    assert set(members) == {
        MANIFEST,
        "strongroom.toml",
        "strongroom.db",
        "authority.pem",
        "admin.token",
    }
    for content in [archive.read_bytes(), *members.values()]:
        assert marker.encode() not in content
        assert marker.encode("utf-16-le") not in content

    with _serve_restored(sqlite_org, archive, tmp_path / "restored"):
        got, warnings = arun(receive(bob))
        assert [(m.from_user, m.text) for m in got] == [("alice", t) for t in waiting]
        assert warnings == []
        arun(send(bob, "alice", "back after the restore"))
        got, warnings = arun(receive(alice))
        assert [m.text for m in got] == ["back after the restore"]
        assert warnings == []


def test_a_backup_taken_during_traffic_holds_a_prefix_of_it(
    sqlite_org: Org, tmp_path: Path
) -> None:
    alice = sqlite_org.activate("alice")
    bob = sqlite_org.activate("bob")
    texts = [f"burst {i}" for i in range(40)]
    accepted: list[str] = []
    started = threading.Event()

    async def send_all() -> None:
        async with client.Client(alice) as c:
            for text in texts:
                await c.send_text("bob", text)
                accepted.append(text)
                if len(accepted) == 5:
                    started.set()

    sender = threading.Thread(target=lambda: asyncio.run(send_all()))
    sender.start()
    assert started.wait(30)
    archive = tmp_path / "busy.tar.gz"
    taken = backup(sqlite_org.data, archive, authority_key=True)
    sender.join(60)
    assert accepted == texts
    assert 5 <= taken.counts.waiting <= len(texts)

    with _serve_restored(sqlite_org, archive, tmp_path / "restored"):
        got, _ = arun(receive(bob))
    # One consistent moment: every message up to some point, in order, and no other.
    assert [m.text for m in got] == texts[: taken.counts.waiting]


def test_backup_refuses_a_database_that_is_not_sqlite(tmp_path: Path) -> None:
    data = server.init_data_dir(tmp_path / "hq", "Test Ministry")
    arun(server.migrate(data))
    secret_url = "postgresql://strongroom:s3cret@db.example/strongroom?schema=sr"
    archive = tmp_path / "hq.tar.gz"

    by_env = sr(
        "backup",
        "--data",
        data.path,
        archive,
        env={"STRONGROOM_DATABASE_URL": secret_url},
    )
    data.config.write_text(
        data.config.read_text().replace("sqlite:///strongroom.db", secret_url)
    )
    by_file = sr("backup", "--data", data.path, archive)
    for refused in (by_env, by_file):
        assert refused.returncode == 1
        assert "pg_dump" in refused.stderr and "docs/deploy.md" in refused.stderr
        assert "s3cret" not in refused.stderr  # the URL may carry a password
    assert not archive.exists()


def test_backup_refuses_what_it_should_not_touch(tmp_path: Path) -> None:
    not_data = tmp_path / "empty"
    not_data.mkdir()
    refused = sr("backup", "--data", not_data, tmp_path / "x.tar.gz")
    assert refused.returncode == 1 and "strongroom init" in refused.stderr

    data = server.init_data_dir(tmp_path / "hq", "Test Ministry")
    arun(server.migrate(data))
    archive = tmp_path / "hq.tar.gz"
    archive.write_bytes(b"last week's backup")
    refused = sr("backup", "--data", data.path, archive)
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert archive.read_bytes() == b"last week's backup"
    forced = sr("backup", "--data", data.path, archive, "--force")
    assert forced.returncode == 0, forced.stderr
    assert MANIFEST in _members(archive)


def test_restore_never_writes_over_a_running_server_or_other_files(
    sqlite_org: Org, tmp_path: Path
) -> None:
    archive = tmp_path / "hq.tar.gz"
    backup(sqlite_org.data, archive)
    before = _db(sqlite_org).read_bytes()
    running = sr("restore", archive, "--data", sqlite_org.data.path, "--force")
    assert running.returncode == 1 and "is running" in running.stderr
    assert _db(sqlite_org).read_bytes() == before

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    refused = sr("restore", archive, "--data", occupied)
    assert refused.returncode == 1 and "not empty" in refused.stderr
    assert [p.name for p in occupied.iterdir()] == ["notes.txt"]
    forced = sr("restore", archive, "--data", occupied, "--force")
    assert forced.returncode == 0, forced.stderr
    assert (occupied / "strongroom.db").exists()


# --- archives that are not what they claim ----------------------------------------------


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    data = server.init_data_dir(tmp_path / "hq", "Test Ministry")
    arun(server.migrate(data))
    path = tmp_path / "hq.tar.gz"
    backup(data, path, authority_key=True)
    return path


Entry = tuple[tarfile.TarInfo, bytes]


def _entry(name: str, content: bytes, kind: bytes = tarfile.REGTYPE) -> Entry:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(content) if kind == tarfile.REGTYPE else 0
    if kind == tarfile.SYMTYPE:
        info.linkname = "/etc/passwd"
    return info, content


def _rewrite(archive: Path, edit: Callable[[list[Entry]], list[Entry]]) -> None:
    entries = [_entry(name, content) for name, content in _members(archive).items()]
    with tarfile.open(archive, "w:gz") as tar:
        for info, content in edit(entries):
            tar.addfile(info, io.BytesIO(content) if info.isreg() else None)


def _truncate(archive: Path) -> None:
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])


def _flip_a_byte(archive: Path) -> None:
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    archive.write_bytes(bytes(raw))


def _alter_the_database(archive: Path) -> None:
    def edit(entries: list[Entry]) -> list[Entry]:
        return [
            _entry(
                i.name, c.replace(b"Test", b"Fake") if i.name.endswith(".toml") else c
            )
            for i, c in entries
        ]

    _rewrite(archive, edit)


def _escape(archive: Path) -> None:
    _rewrite(
        archive, lambda entries: [*entries[:1], _entry("../escape", b"x"), *entries[1:]]
    )


def _link(archive: Path) -> None:
    _rewrite(
        archive,
        lambda entries: [*entries[:1], _entry("admin.token", b"", tarfile.SYMTYPE)],
    )


def _extra(archive: Path) -> None:
    _rewrite(archive, lambda entries: [*entries, _entry("run.json", b"{}")])


def _no_manifest(archive: Path) -> None:
    _rewrite(archive, lambda entries: entries[1:])


def _foreign(archive: Path) -> None:
    archive.write_bytes(b"[organisation]\nname = 'not a backup'\n")


def _replace_database(archive: Path, content: bytes) -> None:
    """Swap in another database, with a manifest that vouches for it."""

    def edit(entries: list[Entry]) -> list[Entry]:
        manifest = msgspec.json.decode(entries[0][1], type=Manifest)
        digest = hashlib.sha256(content).hexdigest()
        renewed = msgspec.structs.replace(
            manifest, files={**manifest.files, "strongroom.db": digest}
        )
        out = [_entry(MANIFEST, msgspec.json.encode(renewed))]
        for info, original in entries[1:]:
            is_db = info.name == "strongroom.db"
            out.append(_entry(info.name, content if is_db else original))
        return out

    _rewrite(archive, edit)


def _future_schema(archive: Path) -> None:
    db = archive.parent / "future.db"
    db.write_bytes(_members(archive)["strongroom.db"])
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.close()
    _replace_database(archive, db.read_bytes())


def _corrupt_database(archive: Path) -> None:
    content = bytearray(_members(archive)["strongroom.db"])
    content[4096 : 4096 * 3] = bytes(range(256)) * 32  # pages 2 and 3: noise
    _replace_database(archive, bytes(content))


def _foreign_database(archive: Path) -> None:
    db = archive.parent / "foreign.db"
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()
    _replace_database(archive, db.read_bytes())


@pytest.mark.parametrize("target_exists", [False, True], ids=["new", "empty"])
@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_truncate, "damaged or truncated"),
        (_flip_a_byte, "damaged"),
        (_alter_the_database, "does not match the checksum"),
        (_escape, "outside the data directory"),
        (_link, "not as a plain file"),
        (_extra, "unexpected member 'run.json'"),
        (_no_manifest, "not a Strongroom backup"),
        (_foreign, "not a Strongroom backup"),
        (_future_schema, "knows only up to"),
        (_corrupt_database, "damaged"),
        (_foreign_database, "not a Strongroom database"),
    ],
)
def test_restore_refuses_a_damaged_or_foreign_archive(
    archive: Path, damage: Callable[[Path], None], expected: str, target_exists: bool
) -> None:
    damage(archive)
    target = archive.parent / "restored"
    if target_exists:
        target.mkdir()
    before = sorted(p.name for p in archive.parent.iterdir())
    with pytest.raises(StrongroomError, match=expected):
        restore(archive, server.DataDir(target))
    # Nothing written: no directory, no staging left behind, nothing outside.
    assert sorted(p.name for p in archive.parent.iterdir()) == before
    if target_exists:
        assert list(target.iterdir()) == []


def test_restore_into_an_existing_empty_directory(archive: Path) -> None:
    hq = server.DataDir(archive.parent / "hq")
    keyless = archive.parent / "keyless.tar.gz"
    taken = backup(hq, keyless)  # the default: the key stays out
    assert "authority.pem" not in taken.files
    assert b"PRIVATE KEY" not in b"".join(_members(keyless).values())
    target = server.DataDir(archive.parent / "restored")
    target.path.mkdir(mode=0o755)
    restored = restore(keyless, target)
    assert any("authority.pem" in note for note in restored.notes)
    assert sorted(p.name for p in target.path.iterdir()) == [
        "admin.token",
        "logs",
        "strongroom.db",
        "strongroom.toml",
    ]
    assert target.path.stat().st_mode & 0o777 == 0o700
    assert target.admin_token.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(target.path / "strongroom.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# --- attachment blobs ---------------------------------------------------------------------


class Aborted(Exception):
    """Raised from a progress callback: the uploader "dies" mid-transfer."""


async def _upload(
    home: Path, path: Path, progress: client.Progress | None = None
) -> proto.FileRef:
    async with client.Client(home) as c:
        return await client.upload_file(
            c, path, progress, chunk=16 * 1024, piece=64 * 1024
        )


async def _send_file(home: Path, to: str, ref: proto.FileRef) -> None:
    async with client.Client(home) as c:
        await c.send(to, ref, blobs=[ref.blob])


async def _download_all(home: Path, dest: Path) -> list[Path]:
    """Receive, and download every file received (the SDK checks each digest)."""
    async with client.Client(home) as c:
        refs = [m.file for m in await c.receive(0.5) if m.file is not None]
        return [await client.download_file(c, ref, dest) for ref in refs]


def _blob_path(root: Path, blob: str) -> Path:
    return root / blob[:2] / blob


def test_a_file_waiting_for_an_offline_recipient_survives_backup_and_restore(
    sqlite_org: Org, tmp_path: Path
) -> None:
    alice = sqlite_org.activate("alice")
    bob = sqlite_org.activate("bob")  # and offline from here to the restore
    report = os.urandom(300 * 1024 + 7)
    (tmp_path / "report.pdf").write_bytes(report)
    ref = arun(_upload(alice, tmp_path / "report.pdf"))
    arun(_send_file(alice, "bob", ref))
    # An upload cut off before the backup: the archive holds none of its bytes.
    notes = os.urandom(200 * 1024)
    (tmp_path / "notes.txt").write_bytes(notes)

    def die(sent: int, total: int) -> None:
        raise Aborted

    with pytest.raises(Aborted):
        arun(_upload(alice, tmp_path / "notes.txt", die))
    blob = _blob_path(sqlite_org.data.path / "blobs", ref.blob)
    sealed = blob.read_bytes()

    archive = tmp_path / "hq.tar.gz"
    made = sr("backup", "--data", sqlite_org.data.path, archive, "--with-authority-key")
    assert made.returncode == 0, made.stderr
    assert f", 1 attachment blob ({len(sealed) / 1024:.1f} KiB)" in (made.stdout)
    assert (
        "holds admin.token, authority.pem, strongroom.db, strongroom.toml and 1 "
        in (made.stdout)
    )
    assert "missing" not in made.stdout
    members = _members(archive)
    member = f"blobs/{ref.blob[:2]}/{ref.blob}"
    assert sorted(name for name in members if name.startswith("blobs/")) == [member]
    assert members[member] == sealed
    manifest = msgspec.json.decode(members[MANIFEST], type=Manifest)
    assert manifest.files[member] == hashlib.sha256(sealed).hexdigest()
    assert (manifest.counts.blobs, manifest.counts.blob_bytes) == (1, len(sealed))
    assert manifest.missing_blobs == []

    target = tmp_path / "restored"
    with _serve_restored(sqlite_org, archive, target):
        restored = _blob_path(target / "blobs", ref.blob)
        assert restored.read_bytes() == sealed
        assert restored.stat().st_mode & 0o777 == 0o600
        saved = arun(_download_all(bob, tmp_path / "inbox"))
        assert [(p.name, p.read_bytes()) for p in saved] == [("report.pdf", report)]
        # The cut-off upload starts again (the archive held no bytes of it) and ends.
        again = arun(_upload(alice, tmp_path / "notes.txt"))
        arun(_send_file(alice, "bob", again))
        saved = arun(_download_all(bob, tmp_path / "inbox"))
        assert [(p.name, p.read_bytes()) for p in saved] == [("notes.txt", notes)]


def _put_blob(
    data: server.DataDir,
    content: bytes,
    *,
    size: int | None = None,
    root: Path | None = None,
) -> str:
    """A blob as the server leaves it: its row, and its file in ``root`` (default:
    ``blobs`` in the data directory); complete unless ``size`` says more is to come."""
    blob = new_blob_id()
    path = _blob_path(root or data.path / "blobs", blob)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    total = len(content) if size is None else size
    db = data.path / "strongroom.db"
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "INSERT INTO blobs (blob_id, owner, size, received, complete, "
            "created_at, touched_at) VALUES (?, 'dev', ?, ?, ?, 0, 0)",
            (blob, total, len(content), int(total == len(content))),
        )
        conn.execute(
            "INSERT INTO blob_refs (blob_id, sender, envelope_id) VALUES (?, ?, ?)",
            (blob, "alice", os.urandom(16)),
        )
    return blob


def _blob_rows(db: Path) -> list[tuple[str, int, int]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [
            (str(blob), int(received), int(complete))
            for blob, received, complete in conn.execute(
                "SELECT blob_id, received, complete FROM blobs ORDER BY blob_id"
            )
        ]


def _refs(db: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT blob_id FROM blob_refs ORDER BY blob_id")
        return [str(blob) for (blob,) in rows]


@pytest.fixture
def hq(tmp_path: Path) -> server.DataDir:
    data = server.init_data_dir(tmp_path / "hq", "Test Ministry")
    arun(server.migrate(data))
    return data


def test_a_backup_with_no_blobs_holds_none_and_restores(
    hq: server.DataDir, tmp_path: Path
) -> None:
    archive = tmp_path / "hq.tar.gz"
    made = sr("backup", "--data", hq.path, archive)
    assert made.returncode == 0, made.stderr
    assert "0 attachment blobs (0 bytes)" in made.stdout
    assert "holds admin.token, strongroom.db, strongroom.toml\n" in made.stdout
    assert not [name for name in _members(archive) if name.startswith("blobs")]
    target = server.DataDir(tmp_path / "restored")
    restore(archive, target)
    assert not (target.path / "blobs").exists()


def test_a_blob_gone_before_it_is_archived_is_left_out_with_its_rows(
    hq: server.DataDir, tmp_path: Path
) -> None:
    kept = _put_blob(hq, b"kept ciphertext")
    gone = _put_blob(hq, b"pruned ciphertext")
    partial = _put_blob(hq, b"first piece", size=4096)
    # The database still names it, as a snapshot taken just before pruning would.
    _blob_path(hq.path / "blobs", gone).unlink()

    archive = tmp_path / "hq.tar.gz"
    made = sr("backup", "--data", hq.path, archive)
    assert made.returncode == 0, made.stderr
    assert "missing: 1 attachment blob" in made.stdout and gone in made.stdout
    members = _members(archive)
    assert sorted(name for name in members if name.startswith("blobs/")) == [
        f"blobs/{kept[:2]}/{kept}"
    ]
    manifest = msgspec.json.decode(members[MANIFEST], type=Manifest)
    assert manifest.missing_blobs == [gone]
    assert manifest.counts.blobs == 1

    target = server.DataDir(tmp_path / "restored")
    restore(archive, target)
    db = target.path / "strongroom.db"
    # The gone blob's rows went; the unfinished upload starts again from nothing.
    assert _blob_rows(db) == sorted([(kept, 15, 1), (partial, 0, 0)])
    assert _refs(db) == sorted([kept, partial])
    assert _blob_path(target.path / "blobs", kept).read_bytes() == b"kept ciphertext"
    assert not _blob_path(target.path / "blobs", partial).exists()
    # The organisation's own database is untouched.
    assert len(_blob_rows(hq.path / "strongroom.db")) == 3


def test_a_blob_pruned_between_hashing_and_archiving_is_left_out(
    hq: server.DataDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = _put_blob(hq, b"kept ciphertext")
    pruned = _put_blob(hq, b"pruned ciphertext")
    hash_first = _take._blob_sha256

    def prune_after_hashing(path: Path, size: int) -> str | None:
        digest = hash_first(path, size)
        if path.name == pruned:
            path.unlink()  # the server prunes it once the first pass has hashed it
        return digest

    monkeypatch.setattr(_take, "_blob_sha256", prune_after_hashing)
    archive = tmp_path / "hq.tar.gz"
    taken = backup(hq, archive)
    assert taken.missing_blobs == [pruned]
    assert [n for n in _members(archive) if n.startswith("blobs/")] == [
        f"blobs/{kept[:2]}/{kept}"
    ]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    target = server.DataDir(tmp_path / "restored")
    restore(archive, target)
    assert _blob_rows(target.path / "strongroom.db") == [(kept, 15, 1)]


def test_a_blob_directory_outside_the_data_directory_comes_back_inside(
    hq: server.DataDir, tmp_path: Path
) -> None:
    shared = tmp_path / "shared-blobs"
    config = hq.config.read_text()
    hq.config.write_text(config.replace("[admin]", f'blobs = "{shared}"\n\n[admin]'))
    assert hq.load_config().storage.blob_dir(hq.path) == shared
    blob = _put_blob(hq, b"ciphertext", root=shared)
    archive = tmp_path / "hq.tar.gz"
    made = sr("backup", "--data", hq.path, archive)
    assert made.returncode == 0, made.stderr
    assert f"came from {shared}, outside the data directory" in made.stdout
    assert f"blobs/{blob[:2]}/{blob}" in _members(archive)

    target = server.DataDir(tmp_path / "restored")
    restored = restore(archive, target)
    assert _blob_path(target.path / "blobs", blob).read_bytes() == b"ciphertext"
    assert any(
        "not a directory inside the data directory" in note for note in restored.notes
    )


@pytest.fixture
def blob_archive(hq: server.DataDir, tmp_path: Path) -> Path:
    _put_blob(hq, b"one ciphertext")
    _put_blob(hq, b"another ciphertext")
    path = tmp_path / "hq.tar.gz"
    backup(hq, path)
    return path


def _first_blob(entries: list[Entry]) -> int:
    return next(
        i for i, (info, _) in enumerate(entries) if info.name.startswith("blobs/")
    )


def _tamper_with_a_blob(archive: Path) -> None:
    def edit(entries: list[Entry]) -> list[Entry]:
        at = _first_blob(entries)
        info, content = entries[at]
        entries[at] = _entry(info.name, bytes([content[0] ^ 1]) + content[1:])
        return entries

    _rewrite(archive, edit)


def _vouch(entries: list[Entry], files: dict[str, str]) -> list[Entry]:
    """The entries under a manifest that vouches for ``files``."""
    manifest = msgspec.json.decode(entries[0][1], type=Manifest)
    renewed = msgspec.structs.replace(manifest, files=files)
    return [_entry(MANIFEST, msgspec.json.encode(renewed)), *entries[1:]]


def _drop_a_blob_and_its_checksum(archive: Path) -> None:
    def edit(entries: list[Entry]) -> list[Entry]:
        name = entries.pop(_first_blob(entries))[0].name
        files = msgspec.json.decode(entries[0][1], type=Manifest).files
        return _vouch(entries, {k: v for k, v in files.items() if k != name})

    _rewrite(archive, edit)


def _add_a_blob_with_its_checksum(archive: Path) -> None:
    def edit(entries: list[Entry]) -> list[Entry]:
        blob = new_blob_id()
        name, content = f"blobs/{blob[:2]}/{blob}", b"smuggled"
        files = msgspec.json.decode(entries[0][1], type=Manifest).files
        digest = hashlib.sha256(content).hexdigest()
        return _vouch([*entries, _entry(name, content)], {**files, name: digest})

    _rewrite(archive, edit)


def _misplace_a_blob(archive: Path, name: Callable[[str], str]) -> None:
    def edit(entries: list[Entry]) -> list[Entry]:
        at = _first_blob(entries)
        info, content = entries[at]
        blob = info.name.rsplit("/", 1)[1]
        entries[at] = _entry(name(blob), content)
        files = msgspec.json.decode(entries[0][1], type=Manifest).files
        files[name(blob)] = files.pop(info.name)
        return _vouch(entries, files)

    _rewrite(archive, edit)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_tamper_with_a_blob, "does not match the checksum"),
        (_drop_a_blob_and_its_checksum, "names attachment blobs it does not hold"),
        (_add_a_blob_with_its_checksum, "blobs its database does not name"),
        (
            lambda a: _misplace_a_blob(a, lambda b: f"blobs/{b[:2]}/../../{b}"),
            "outside the data directory",
        ),
        (
            lambda a: _misplace_a_blob(a, lambda b: f"blobs/zz/{b}"),
            "unexpected member",
        ),
        (
            lambda a: _misplace_a_blob(a, lambda b: f"blobs/{b[:2]}/{b}.pem"),
            "unexpected member",
        ),
    ],
    ids=["tampered", "dropped", "smuggled", "escaping", "misfiled", "misnamed"],
)
def test_restore_refuses_an_archive_whose_blobs_do_not_check_out(
    blob_archive: Path, damage: Callable[[Path], None], expected: str
) -> None:
    damage(blob_archive)
    target = blob_archive.parent / "restored"
    before = sorted(p.name for p in blob_archive.parent.iterdir())
    with pytest.raises(StrongroomError, match=expected):
        restore(blob_archive, server.DataDir(target))
    assert sorted(p.name for p in blob_archive.parent.iterdir()) == before


def test_an_archive_from_before_blobs_restores_with_a_note(blob_archive: Path) -> None:
    def edit(entries: list[Entry]) -> list[Entry]:
        manifest = msgspec.json.decode(entries[0][1], type=Manifest)
        old = [(i, c) for i, c in entries[1:] if not i.name.startswith("blobs/")]
        files = {i.name: manifest.files[i.name] for i, _ in old}
        renewed = msgspec.structs.replace(manifest, format=1, files=files)
        return [_entry(MANIFEST, msgspec.json.encode(renewed)), *old]

    _rewrite(blob_archive, edit)
    restored = restore(blob_archive, server.DataDir(blob_archive.parent / "restored"))
    assert any("copy the 2 blob files" in note for note in restored.notes)
