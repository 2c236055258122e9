"""A passcode on the device store, from the command line: separate processes, a real
server, no terminal (standard input is closed, as in a script or CI)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import secrets
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

from conftest import Org, arun, send
from strongroom import client
from strongroom.client._passcode import is_protected

#: Cheap Argon2id for the tests only; production parameters are the default.
_CHEAP_KDF = {"STRONGROOM_TEST_PASSCODE_KDF": "1,8,1"}


def sr(
    *args: str | Path, check: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    """``strongroom ARGS`` with no terminal and only the passcode variables given."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("STRONGROOM_PASSCODE", "STRONGROOM_NEW_PASSCODE")
    }
    result = subprocess.run(
        [sys.executable, "-m", "strongroom", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**base, "COLUMNS": "200", "NO_COLOR": "1", **_CHEAP_KDF, **env},
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def at_terminal(*args: str | Path, typed: str) -> tuple[int, str, str, bytes]:
    """``strongroom ARGS`` on a pseudo-terminal of its own: type ``typed`` when it asks.

    Returns the exit status, standard output and error, and what the terminal showed.
    """
    base = {k: v for k, v in os.environ.items() if k != "STRONGROOM_PASSCODE"}
    master, slave = pty.openpty()

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        [sys.executable, "-m", "strongroom", *map(str, args)],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**base, "COLUMNS": "200", "NO_COLOR": "1", **_CHEAP_KDF},
        preexec_fn=controlling_terminal,
    )
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + 30
    # getpass flushes typed-ahead input when it turns echo off: wait for its prompt
    while b" " not in shown and time.monotonic() < deadline:
        if select.select([master], [], [], 0.1)[0]:
            shown += os.read(master, 1024)
    os.write(master, typed.encode() + b"\n")
    out, err = process.communicate(timeout=30)
    while select.select([master], [], [], 0.2)[0]:
        try:
            shown += os.read(master, 1024)
        except OSError:
            break
    os.close(master)
    return process.returncode, out.decode(), err.decode(), shown


def _everything(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())


def test_a_passcode_guards_the_device_and_wrong_ones_wipe_it(sqlite_org: Org) -> None:
    alice = sqlite_org.activate("alice")
    bob = sqlite_org.activate("bob")
    marker = f"marker-{secrets.token_hex(8)}"
    arun(send(alice, "bob", marker))
    secret_hex = (bob / "device.key").read_text().strip()
    passcode = "tr0ub4dor-and-3"

    done = sr(
        "device", "passcode", "set", "--home", bob, "--max-tries", "3",
        STRONGROOM_NEW_PASSCODE=passcode,
    )  # fmt: skip
    assert "3 wrong passcodes in a row wipe this device" in done.stdout
    on_disk = _everything(bob)
    for secret in (passcode.encode(), secret_hex.encode(), bytes.fromhex(secret_hex)):
        assert secret not in on_disk

    locked = sr("receive", "--home", bob, check=False)
    assert locked.returncode == 1
    assert "protected by a passcode: set STRONGROOM_PASSCODE" in locked.stderr
    got = sr("receive", "--home", bob, "--json", STRONGROOM_PASSCODE=passcode)
    assert [json.loads(line)["text"] for line in got.stdout.splitlines()] == [marker]
    assert marker.encode() not in _everything(bob)

    for left in ("2 tries left", "1 try left"):
        wrong = sr(
            "device", "info", "--home", bob, check=False, STRONGROOM_PASSCODE="no"
        )
        assert wrong.returncode == 1
        assert f"wrong passcode: {left} before this device wipes itself" in wrong.stderr
    last = sr("device", "info", "--home", bob, check=False, STRONGROOM_PASSCODE="no")
    assert last.returncode == 1
    assert "wrong passcode: this device was wiped (too many wrong passcodes)" in (
        last.stderr
    )

    assert not (bob / "device.db").exists() and not (bob / "device.key").exists()
    left_behind = _everything(bob)
    for secret in (marker.encode(), secret_hex.encode(), bytes.fromhex(secret_hex)):
        assert secret not in left_behind
    for command in (("device", "info"), ("receive",)):
        later = sr(*command, "--home", bob, check=False, STRONGROOM_PASSCODE=passcode)
        assert later.returncode == 1
        assert "this device was wiped (too many wrong passcodes) at " in later.stderr
        assert "activate it again with a new code from IT" in later.stderr

    again = sqlite_org.activate("bob")  # a new code from IT, into the same home
    assert again == bob
    store = client.LocalStore.open(bob)
    assert store.protected is False
    store.close()


def test_passcode_set_change_and_remove_from_the_command_line(sqlite_org: Org) -> None:
    home = sqlite_org.activate("carol")
    home_arg = ("--home", str(home))

    unasked = sr("device", "passcode", "set", *home_arg, check=False)
    assert unasked.returncode == 1 and "STRONGROOM_NEW_PASSCODE" in unasked.stderr
    short = sr(
        "device", "passcode", "set", *home_arg, "--min-length", "10", check=False,
        STRONGROOM_NEW_PASSCODE="123456789",
    )  # fmt: skip
    assert short.returncode == 1 and "at least 10 characters" in short.stderr
    sr(
        "device", "passcode", "set", *home_arg, "--max-tries", "5",
        STRONGROOM_NEW_PASSCODE="first passcode",
    )  # fmt: skip
    assert is_protected(home)
    status, out, err, shown = at_terminal(
        "device", "info", *home_arg, "--json", typed="first passcode"
    )
    assert status == 0, err
    assert "Device passcode:" in err and json.loads(out)["user"] == "carol"
    assert b"first passcode" not in shown  # hidden input

    wrong = sr(
        "device", "passcode", "change", *home_arg, check=False,
        STRONGROOM_PASSCODE="not it", STRONGROOM_NEW_PASSCODE="second passcode",
    )  # fmt: skip
    assert wrong.returncode == 1 and "4 tries left" in wrong.stderr
    sr(
        "device", "passcode", "change", *home_arg,
        STRONGROOM_PASSCODE="first passcode", STRONGROOM_NEW_PASSCODE="second passcode",
    )  # fmt: skip
    sr("device", "passcode", "remove", *home_arg, STRONGROOM_PASSCODE="second passcode")
    assert not is_protected(home)
    assert (
        json.loads(sr("device", "info", *home_arg, "--json").stdout)["user"] == "carol"
    )
