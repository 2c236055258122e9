"""The benchmark suite: ``strongroom bench WORKLOAD``, load generator and report.

A run starts a real ``strongroom serve`` child on loopback (and a bare WebSocket echo on
the same stack, the practical ceiling), activates real devices, and drives them from
load-generator worker processes.  ``run_bench`` returns a ``Report``; the CLI prints it as
a table and writes it as JSON.  See docs/performance.md for the figures and the profile.
"""

from ._report import (
    BUDGETS,
    Figure,
    Knobs,
    Report,
    ceiling_of,
    print_report,
    smoke_knobs,
)
from ._workloads import SERVER_WORKLOADS, UNAVAILABLE, WORKLOADS, run_bench

__all__ = [
    "BUDGETS",
    "SERVER_WORKLOADS",
    "UNAVAILABLE",
    "WORKLOADS",
    "Figure",
    "Knobs",
    "Report",
    "ceiling_of",
    "print_report",
    "run_bench",
    "smoke_knobs",
]
