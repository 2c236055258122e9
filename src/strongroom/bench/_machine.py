"""What the benchmark records about the machine and the processes it measures.

Server figures come from ``/proc/PID``: CPU seconds are ``utime + stime`` of every thread
of the process (fields 14 and 15 of ``stat``), memory is ``VmRSS`` now and ``VmHWM`` (the
peak) from ``status``.  Linux only, like the budget's machine.
"""

from __future__ import annotations

import os
import platform
import resource
import sqlite3
import sys
from importlib import metadata
from pathlib import Path

import msgspec

__all__ = [
    "Machine",
    "ProcSample",
    "describe_machine",
    "raise_open_files",
    "sample",
]

_TICKS = os.sysconf("SC_CLK_TCK")


class ProcSample(msgspec.Struct, frozen=True):
    """One process at one moment."""

    cpu_seconds: float
    rss_kib: int
    peak_rss_kib: int


class Machine(msgspec.Struct, frozen=True):
    cpu_model: str
    cores: int
    memory_mib: int
    kernel: str
    python: str
    versions: dict[str, str]
    open_files_limit: int


def sample(pid: int) -> ProcSample:
    """CPU seconds and memory of process ``pid``.  Raises ``OSError`` if it is gone."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    rss = peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1])
    return ProcSample(cpu_seconds=cpu, rss_kib=rss, peak_rss_kib=peak)


def raise_open_files() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_mib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def describe_machine() -> Machine:
    versions = {
        name: _version(name)
        for name in (
            "strongroom",
            "uvicorn",
            "uvloop",
            "httptools",
            "websockets",
            "starlette",
            "msgspec",
            "vodozemac",
            "asyncpg",
        )
    }
    versions["sqlite"] = sqlite3.sqlite_version
    return Machine(
        cpu_model=_cpu_model(),
        cores=os.cpu_count() or 1,
        memory_mib=_memory_mib(),
        kernel=platform.release(),
        python=sys.version.split()[0],
        versions=versions,
        open_files_limit=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    )
