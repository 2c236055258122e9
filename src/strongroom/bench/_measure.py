"""One measurement: drive the workers, sample the server around it, make its figures.

Every figure carries the server child's CPU seconds and peak RSS over its own window
(``/proc``) and the load generator's CPU seconds, so that the split of the cores is
visible beside the figure.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterable

from ._drive import Job, Result
from ._machine import ProcSample, sample
from ._report import Figure
from ._workers import Workers

__all__ = [
    "Window",
    "drive",
    "drive_phases",
    "errors_of",
    "floats",
    "make_figure",
    "rate_of",
]


class Window:
    """A measurement: the server's and the load generator's resources over it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = sample(pid)
        self.after: ProcSample = self.before
        self.started = time.perf_counter()
        self.wall = 0.0

    def end(self) -> Window:
        self.after = sample(self.pid)
        self.wall = time.perf_counter() - self.started
        return self

    @property
    def cpu(self) -> float:
        return self.after.cpu_seconds - self.before.cpu_seconds


def make_figure(
    workload: str,
    name: str,
    value: float,
    unit: str,
    window: Window,
    loadgen_cpu: float,
    *,
    higher: bool = True,
    note: str = "",
) -> Figure:
    return Figure(
        workload=workload,
        name=name,
        value=value,
        unit=unit,
        higher_is_better=higher,
        server_cpu_s=round(window.cpu, 3),
        server_peak_rss_kib=window.after.peak_rss_kib,
        loadgen_cpu_s=round(loadgen_cpu, 3),
        wall_s=round(window.wall, 3),
        note=note,
    )


def drive(jobs: list[Job], pid: int) -> tuple[list[Result], Window]:
    """Connect every job, start them together, collect the results."""
    return drive_phases(jobs, pid, 1)[0]


def drive_phases(
    jobs: list[Job], pid: int, phases: int
) -> list[tuple[list[Result], Window]]:
    """Connect every job once, then start and collect each phase in its own window."""
    out: list[tuple[list[Result], Window]] = []
    with Workers(jobs) as workers:
        workers.wait_ready()
        for _ in range(phases):
            window = Window(pid)
            workers.go()
            results = workers.results()
            out.append((results, window.end()))
    return out


def rate_of(results: list[Result]) -> float:
    """Completed messages per second, from the first start to the last finish."""
    done = sum(r.completed for r in results)
    started = min(r.started for r in results)
    finished = max(r.finished for r in results)
    return done / max(finished - started, 1e-9)


def floats(chunks: Iterable[bytes]) -> array[float]:
    """The timings that workers sent as ``array('d')`` bytes, joined."""
    values: array[float] = array("d")
    for chunk in chunks:
        values.frombytes(chunk)
    return values


def errors_of(results: list[Result]) -> list[str]:
    return [e for r in results for e in r.errors]
