"""What every command shares: running coroutines, one-line errors, durations."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from strongroom.errors import StrongroomError

__all__ = ["console", "err_console", "fail", "parse_duration", "run"]

T = TypeVar("T")
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

_DURATION = re.compile(r"^(\d+)\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


def parse_duration(text: str) -> int:
    """'48h' -> seconds.  Exits with a clear error on anything else."""
    match = _DURATION.match(text.strip().lower())
    if match is None:
        fail(f"{text!r} is not a duration (like 90s, 30m, 48h, 7d)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; user errors become one line on stderr and exit 1."""
    try:
        return asyncio.run(coro)
    except StrongroomError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
