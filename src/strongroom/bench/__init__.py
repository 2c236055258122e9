"""The benchmark suite: ``strongroom bench WORKLOAD``, load generator and report.

A run starts a real ``strongroom serve`` child on loopback (and a bare WebSocket echo on
the same stack, the practical ceiling), activates real devices, and drives them from
load-generator worker processes.  ``run_bench`` returns a ``Report``; the CLI prints it as
a table and writes it as JSON.  See docs/performance.md for the figures and the profile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._report import (
    BUDGETS,
    SERVER_WORKLOADS,
    UNAVAILABLE,
    WORKLOADS,
    Figure,
    Knobs,
    Report,
    ceiling_of,
    print_report,
    smoke_knobs,
)

if TYPE_CHECKING:
    from ._workloads import run_bench

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


def __getattr__(name: str) -> Any:
    """``run_bench`` loads the load generator and the server's parts on first use."""
    if name == "run_bench":
        from ._workloads import run_bench

        return run_bench
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
