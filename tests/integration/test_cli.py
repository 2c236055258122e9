"""The command-line contract, run as a user would run it: separate processes."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from _cli import sr
from strongroom import client
from strongroom.cli._local import LocalServer
from strongroom.server.store import SCHEMA_VERSION
from strongroom.server.store._migrations import statements


def test_the_whole_contract_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sr("init", "--data", data, "--org", "Embassy")
    assert (data / "authority.pem").stat().st_mode & 0o777 == 0o600
    assert (data / "admin.token").stat().st_mode & 0o777 == 0o600
    again = sr("init", "--data", data, check=False)
    assert again.returncode != 0 and "not overwriting" in again.stderr

    with LocalServer(data) as server:
        sr("admin", "--data", data, "user", "add", "alice", "--name", "Alice A")
        sr("admin", "--data", data, "user", "add", "bob")
        users = json.loads(sr("admin", "--data", data, "user", "list", "--json").stdout)
        assert [u["user"] for u in users] == ["alice", "bob"]
        homes = {}
        for user in ("alice", "bob"):
            issued = json.loads(
                sr("admin", "--data", data, "code", user, "--json").stdout
            )
            assert set(issued) == {"user", "code", "expires_at"}
            homes[user] = tmp_path / user
            sr(
                "device",
                "activate",
                "--home",
                homes[user],
                "--server",
                server.url,
                "--user",
                user,
                "--code",
                issued["code"],
                "--name",
                f"{user}-phone",
            )
        info = json.loads(sr("device", "info", "--home", homes["bob"], "--json").stdout)
        assert info["user"] == "bob" and len(info["device_id"]) == 16

        sr("send", "--home", homes["alice"], "bob", "hello from the shell")
        out = sr("receive", "--home", homes["bob"], "--json").stdout.splitlines()
        (message,) = [json.loads(line) for line in out]
        assert set(message) == {
            "id",
            "from_user",
            "from_device",
            "conversation",
            "group",
            "sent_at",
            "text",
        }
        assert message["group"] is None
        assert message["text"] == "hello from the shell"
        assert message["from_user"] == "alice"

        devices = json.loads(
            sr("admin", "--data", data, "device", "list", "bob", "--json").stdout
        )
        assert [d["device_id"] for d in devices] == [info["device_id"]]
        sr("admin", "--data", data, "device", "revoke", info["device_id"])
        refused = sr("receive", "--home", homes["bob"], check=False)
        assert refused.returncode == 1
        assert "revoked" in refused.stderr


def test_user_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    cases = [
        ("receive", "--home", tmp_path / "nowhere"),
        (
            "device",
            "activate",
            "--home",
            tmp_path / "d",
            "--server",
            "http://127.0.0.1:9",
            "--user",
            "alice",
            "--code",
            "not-a-code",
        ),
        (
            "device",
            "activate",
            "--home",
            tmp_path / "d",
            "--server",
            "http://127.0.0.1:9",
            "--user",
            "alice",
            "--code",
            "AAAA-BBBB-CCCC",
        ),
        ("admin", "--data", tmp_path / "nodata", "user", "list"),
        ("admin", "--data", tmp_path, "code", "alice", "--ttl", "soon"),
    ]
    for args in cases:
        result = sr(*args, check=False)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith("error:"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_serve_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sr("init", "--data", data)
    server = LocalServer(data).start()
    assert (data / "run.json").exists()
    assert server.stop() == 0
    assert not (data / "run.json").exists()


def test_serve_refuses_a_database_of_another_version_and_migrate_upgrades_it(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    sr("init", "--data", data)
    database = data / "strongroom.db"
    newer = SCHEMA_VERSION + 1
    with sqlite3.connect(database) as conn:  # as a newer Strongroom would leave it
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (newer,))
    refused = sr("serve", "--data", data, check=False)
    assert refused.returncode != 0
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error:") and f"schema version {newer}" in line
    assert f"up to {SCHEMA_VERSION}" in line and "newer Strongroom" in line

    # as the release before this one left it, with a user in it
    older = SCHEMA_VERSION - 1
    database.unlink()
    with sqlite3.connect(database) as conn:
        for version in range(older):
            for statement in statements(version, "sqlite", "BLOB"):
                conn.execute(statement)
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (older,))
        conn.execute(
            "INSERT INTO users(user_id, name, created_at) VALUES ('amir', 'Amir', 0)"
        )
    refused = sr("serve", "--data", data, check=False)
    assert refused.returncode != 0
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error:") and f"schema version {older}" in line
    assert f"needs {SCHEMA_VERSION}" in line and "`strongroom migrate`" in line
    migrated = sr("migrate", "--data", data)
    assert f"database schema is at version {SCHEMA_VERSION}" in migrated.stdout
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT user_id FROM users").fetchall() == [("amir",)]


def test_listen_prints_messages_as_they_arrive(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sr("init", "--data", data)
    with LocalServer(data) as server:
        homes = {}
        for user in ("alice", "bob"):
            sr("admin", "--data", data, "user", "add", user)
            issued = json.loads(
                sr("admin", "--data", data, "code", user, "--json").stdout
            )
            homes[user] = tmp_path / user
            asyncio.run(client.activate(homes[user], server.url, user, issued["code"]))
        with subprocess.Popen(
            [
                sys.executable,
                "-m",
                "strongroom",
                "listen",
                "--home",
                str(homes["bob"]),
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        ) as listener:
            try:
                # Wait until bob's stream is up, then send.
                for _ in range(50):
                    if server_connected(server.url) >= 1:
                        break
                    time.sleep(0.1)
                sr("send", "--home", homes["alice"], "bob", "live one")
                assert listener.stdout is not None
                line = listener.stdout.readline()
                assert json.loads(line)["text"] == "live one"
            finally:
                listener.terminate()
                listener.wait(10)


def server_connected(url: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("strongroom_connected_devices "):
            return float(line.split()[1])
    return 0.0
