"""Backup and restore of the SQLite default, against real server processes."""

from __future__ import annotations

import asyncio
import hashlib
import io
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
from strongroom import client, server
from strongroom.cli._local import LocalServer
from strongroom.errors import StrongroomError
from strongroom.server._backup import MANIFEST, Manifest, backup, restore


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
