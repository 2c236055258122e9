"""The device passcode on the command line: one helper finds it, three commands manage it.

Every command that opens a device home gets its passcode from ``passcode_for``:
``STRONGROOM_PASSCODE`` when set, else a hidden prompt if the store is protected and a
person is at a terminal, else a one-line error naming the variable.  Unprotected homes
never ask.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from strongroom import client, proto
from strongroom.client._passcode import (
    DEFAULT_MAX_TRIES,
    DEFAULT_MIN_LENGTH,
    WrappedKey,
    change_passcode,
    is_protected,
    protect_home,
    read_key_file,
    remove_passcode,
)
from strongroom.client._policy import rules_in_force
from strongroom.client._wipe import raise_if_wiped
from strongroom.errors import StrongroomError

from ._common import console, fail

__all__ = [
    "NEW_PASSCODE_ENV",
    "PASSCODE_ENV",
    "enforce_passcode_policy",
    "open_client",
    "open_store",
    "passcode_app",
    "passcode_for",
]

T = TypeVar("T")
PASSCODE_ENV = "STRONGROOM_PASSCODE"
NEW_PASSCODE_ENV = "STRONGROOM_NEW_PASSCODE"

passcode_app = typer.Typer(help="A passcode that protects this device's store.")
_Home = Annotated[Path, typer.Option("--home", help="the device's own directory")]
_MinLength = Annotated[
    int, typer.Option("--min-length", help="the shortest passcode accepted")
]
_MaxTries = Annotated[
    int,
    typer.Option("--max-tries", help="wrong passcodes in a row that wipe the device"),
]


def passcode_for(home: Path) -> str | None:
    """The passcode to open ``home`` with, or ``None`` for an unprotected store.

    ``STRONGROOM_PASSCODE`` when set; otherwise, for a protected store, a hidden prompt
    when standard input is a terminal, else exit with a one-line error.
    """
    given = os.environ.get(PASSCODE_ENV)
    if given:
        return given
    try:
        protected = is_protected(home)
    except StrongroomError:
        return None  # opening the store says what is wrong with it
    if not protected:
        return None
    if not sys.stdin.isatty():
        fail(
            f"this device is protected by a passcode: set {PASSCODE_ENV}, "
            "or run the command at a terminal to be asked for it"
        )
    passcode: str = typer.prompt("Device passcode", hide_input=True, err=True)
    return passcode


def open_client(home: Path) -> client.Client:
    """``Client(home)``, with the passcode from ``passcode_for``, under the policy's
    passcode rules (``enforce_passcode_policy``)."""
    passcode = passcode_for(home)
    opened = client.Client(home, passcode=passcode)
    try:
        enforce_passcode_policy(home, opened.rules, passcode)
    except BaseException:
        opened.store.close()
        raise
    return opened


def enforce_passcode_policy(
    home: Path, rules: proto.PolicyRules, passcode: str | None
) -> None:
    """What the organisation's policy says about the passcode, done before any command.

    A required passcode that is not set is asked for now (``STRONGROOM_NEW_PASSCODE``
    or a terminal) and set with the policy's length and try limit; without one the
    command stops with what to do.  A passcode shorter than the policy's minimum must
    be changed first.  The policy's try limit is written into the key file.
    """
    if not rules.passcode_required:
        return
    need = rules.passcode_min_length
    if passcode is None and not _do(lambda: is_protected(home)):
        if not os.environ.get(NEW_PASSCODE_ENV) and not sys.stdin.isatty():
            fail(
                f"the organisation's policy requires a passcode of at least {need} "
                f"characters on this device: run `strongroom device passcode set`, or "
                f"set {NEW_PASSCODE_ENV}"
            )
        console.print(
            f"The organisation's policy requires a passcode ({need}+ characters)."
        )
        new = _new_passcode()
        _do(
            lambda: protect_home(
                home, new, min_length=need, max_tries=rules.passcode_max_attempts
            )
        )
        console.print("passcode set: the device store is now protected by it")
        return
    if passcode is None:
        return
    if len(passcode) < need:
        fail(
            f"the organisation's policy requires a passcode of at least {need} "
            "characters: run `strongroom device passcode change`"
        )
    key = _do(lambda: read_key_file(home))
    if isinstance(key, WrappedKey) and key.max_tries != rules.passcode_max_attempts:
        _do(
            lambda: change_passcode(
                home,
                passcode,
                passcode,
                min_length=need,
                max_tries=rules.passcode_max_attempts,
            )
        )


def open_store(home: Path) -> client.LocalStore:
    """``LocalStore.open(home)``, with the passcode from ``passcode_for``, under the
    policy's passcode rules."""
    passcode = passcode_for(home)
    store = client.LocalStore.open(home, passcode)
    try:
        enforce_passcode_policy(home, rules_in_force(store), passcode)
    except BaseException:
        store.close()
        raise
    return store


def _new_passcode() -> str:
    given = os.environ.get(NEW_PASSCODE_ENV)
    if given:
        return given
    if not sys.stdin.isatty():
        fail(
            f"no new passcode: set {NEW_PASSCODE_ENV}, "
            "or run the command at a terminal to be asked for it"
        )
    passcode: str = typer.prompt(
        "New passcode", hide_input=True, confirmation_prompt=True, err=True
    )
    return passcode


def _current(home: Path, what: str) -> str:
    """The current passcode of a store that must have one (``change``, ``remove``)."""
    passcode = passcode_for(home) if _protected(home) else None
    if passcode is None:
        fail(f"this device has no passcode to {what}")
    return passcode


def _protected(home: Path) -> bool:
    """Whether the device in ``home`` has a passcode; exits if it was wiped, is missing
    or is damaged (before anyone is asked to type a passcode)."""

    def check() -> bool:
        raise_if_wiped(home)
        return isinstance(read_key_file(home), WrappedKey)

    return _do(check)


def _do(action: Callable[[], T]) -> T:
    try:
        return action()
    except StrongroomError as exc:
        fail(str(exc))


@passcode_app.command("set")
def set_passcode(
    home: _Home,
    min_length: _MinLength = DEFAULT_MIN_LENGTH,
    max_tries: _MaxTries = DEFAULT_MAX_TRIES,
) -> None:
    """Protect this device's store with a passcode (asked twice, or STRONGROOM_NEW_PASSCODE)."""
    if _protected(home):
        fail("this device already has a passcode: use `device passcode change`")
    new = _new_passcode()
    _do(lambda: protect_home(home, new, min_length=min_length, max_tries=max_tries))
    console.print(
        f"passcode set: {max_tries} wrong passcodes in a row wipe this device"
    )


@passcode_app.command("change")
def change(
    home: _Home,
    min_length: _MinLength = DEFAULT_MIN_LENGTH,
    max_tries: Annotated[
        int | None,
        typer.Option(
            "--max-tries", help="wrong passcodes in a row that wipe the device"
        ),
    ] = None,
) -> None:
    """Change the passcode (the current one from STRONGROOM_PASSCODE or a prompt)."""
    old = _current(home, "change")
    new = _new_passcode()
    _do(
        lambda: change_passcode(
            home, old, new, min_length=min_length, max_tries=max_tries
        )
    )
    console.print("passcode changed")


@passcode_app.command("remove")
def remove(home: _Home) -> None:
    """Take the passcode off this device's store (needs the current one)."""
    old = _current(home, "remove")
    _do(lambda: remove_passcode(home, old))
    console.print("passcode removed: the store key is kept unwrapped in device.key")
