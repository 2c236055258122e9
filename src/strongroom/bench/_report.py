"""What a benchmark run produces: knobs, figures and the machine, as a table and as JSON."""

from __future__ import annotations

import math
import re
from array import array

import msgspec
from rich.console import Console
from rich.table import Table

from ._machine import Machine

__all__ = [
    "BUDGETS",
    "CEILINGS",
    "SERVER_WORKLOADS",
    "UNAVAILABLE",
    "WORKLOADS",
    "Figure",
    "Knobs",
    "Report",
    "ceiling_of",
    "percentile",
    "print_report",
    "smoke_knobs",
]

SERVER_WORKLOADS = ("activation", "idle", "routing", "backlog", "fanout")
WORKLOADS = ("echo", *SERVER_WORKLOADS)
#: workload -> why it cannot run yet (none at present; the CLI lists and refuses them)
UNAVAILABLE: dict[str, str] = {}


class Knobs(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a run can be told.  The defaults make ``bench all`` take a few minutes."""

    devices: int = 1000  # routing: connected devices, in pairs
    messages: int = 120  # routing: messages per device, per phase (about 6 s at 20k/s)
    size: int = 200  # bytes of text per message (before encryption)
    window: int = 8  # routing: in flight per device (closed loop)
    rate: float = (
        0.0  # routing and echo latency phase: total messages/s (0: half of max)
    )
    backlog: int = 100_000  # backlog: envelopes queued for the offline device
    senders: int = 8  # backlog: devices that fill it
    idle: int = 10_000  # idle: connected devices
    identities: int = 0  # idle: activated devices they share (0: every one activated)
    activations: int = (
        200  # activation: devices to activate when nothing else needs more
    )
    concurrency: int = 16  # activation: at once
    members: tuple[int, ...] = (10, 100, 1000)  # fanout: member devices, one group each
    repeat: int = 20  # fanout: messages sent one at a time, per group
    sustain: float = 3.0  # fanout: seconds of closed-loop group traffic, per group
    workers: int = 1  # load-generator processes
    live: bool = False  # encrypt and decrypt on the path instead of pre-encrypting
    ceiling: bool = (
        True  # also run the echo, so that figures have a ceiling beside them
    )
    smoke: bool = False


def smoke_knobs(knobs: Knobs) -> Knobs:
    """Tiny knobs for CI: every workload completes and prints its table in seconds."""
    return msgspec.structs.replace(
        knobs,
        devices=4,
        messages=10,
        window=4,
        backlog=200,
        senders=2,
        idle=24,
        identities=0,
        activations=4,
        concurrency=4,
        members=(5, 20),
        repeat=2,
        sustain=0.5,
        smoke=True,
    )


class Figure(msgspec.Struct, kw_only=True):
    workload: str
    name: str
    value: float
    unit: str
    higher_is_better: bool = True
    budget: float | None = None
    vs_echo: float | None = None
    server_cpu_s: float = 0.0
    server_peak_rss_kib: int = 0
    loadgen_cpu_s: float = 0.0
    wall_s: float = 0.0
    note: str = ""


class Report(msgspec.Struct, kw_only=True):
    started_at: str
    workloads: list[str]
    database: str
    machine: Machine
    knobs: Knobs
    cores: str = ""
    figures: list[Figure] = []
    unavailable: dict[str, str] = {}
    errors: list[str] = []


#: figure name -> (budget, higher is better), per database kind; from DESIGN.md.
BUDGETS: dict[str, dict[str, float]] = {
    "sqlite": {
        "routing_envelopes_per_s": 20_000,
        "routing_latency_p99_ms": 25,
        "backlog_drain_envelopes_per_s": 50_000,
        "idle_kib_per_connection": 40,
        "fanout_1000_last_ms": 250,
    },
    "postgresql": {
        "routing_envelopes_per_s": 10_000,
        "routing_latency_p99_ms": 25,
        "backlog_drain_envelopes_per_s": 50_000,
        "idle_kib_per_connection": 40,
        "fanout_1000_last_ms": 250,
    },
}

#: figure -> the echo figure it is compared with; fan-out figures as ``fanout_N_…``.
CEILINGS: dict[str, str] = {
    "routing_envelopes_per_s": "echo_messages_per_s",
    "routing_latency_p50_ms": "echo_latency_p50_ms",
    "routing_latency_p95_ms": "echo_latency_p95_ms",
    "routing_latency_p99_ms": "echo_latency_p99_ms",
    "routing_saturated_p99_ms": "echo_saturated_p99_ms",
    "backlog_fill_envelopes_per_s": "echo_messages_per_s",
    "backlog_drain_envelopes_per_s": "echo_messages_per_s",
    "idle_kib_per_connection": "echo_idle_kib_per_connection",
    "activations_per_s": "echo_messages_per_s",
    # A member delivery is one frame out, as an echoed frame is one out (and one in).
    "fanout_N_deliveries_per_s": "echo_messages_per_s",
}

_GROUP_SIZE = re.compile(r"^fanout_\d+_")


def ceiling_of(name: str) -> str | None:
    """The name of the echo figure that figure ``name`` is compared with, if any."""
    return CEILINGS.get(_GROUP_SIZE.sub("fanout_N_", name))


def percentile(values: array[float], p: float) -> float:
    """The ``p`` quantile (0..1) by the nearest-rank method; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(p * len(ordered)))
    return ordered[rank - 1]


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _budget(figure: Figure) -> str:
    if figure.budget is None:
        return ""
    sign = "≥" if figure.higher_is_better else "≤"
    met = (
        figure.value >= figure.budget
        if figure.higher_is_better
        else figure.value <= figure.budget
    )
    if met:
        return f"{sign} {_number(figure.budget)} [green]met[/]"
    if figure.higher_is_better:
        gap = f"{figure.value / figure.budget:.0%} of it"
    else:
        gap = f"{figure.value / figure.budget:.1f}x over"
    return f"{sign} {_number(figure.budget)} [red]missed: {gap}[/]"


def _ratio(figure: Figure) -> str:
    if figure.vs_echo is None:
        return ""
    if figure.name.endswith("_ms") or figure.name.endswith("_kib_per_connection"):
        return f"{figure.vs_echo:.1f}x"
    return (
        f"{figure.vs_echo:.1%}" if figure.vs_echo >= 0.01 else f"{figure.vs_echo:.3%}"
    )


def print_report(report: Report, console: Console) -> None:
    table = Table(
        title=f"strongroom bench: {' '.join(report.workloads)} on {report.database}",
        title_justify="left",
    )
    for column, justify in (
        ("workload", "left"),
        ("figure", "left"),
        ("value", "right"),
        ("unit", "left"),
        ("budget", "left"),
        ("vs echo", "right"),
        ("server CPU s", "right"),
        ("server peak RSS MiB", "right"),
        ("load-gen CPU s", "right"),
        ("wall s", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for f in report.figures:
        table.add_row(
            f.workload,
            f.name,
            _number(f.value),
            f.unit,
            _budget(f),
            _ratio(f),
            f"{f.server_cpu_s:.2f}",
            f"{f.server_peak_rss_kib / 1024:.0f}",
            f"{f.loadgen_cpu_s:.2f}",
            f"{f.wall_s:.1f}",
        )
    for name in report.unavailable:
        table.add_row(name, "not yet available", "", "", "", "", "", "", "", "")
    if not console.is_terminal:
        # A pipe or a CI log: do not squeeze the table into 80 columns.
        console.width = max(console.width, 170)
    console.print(table)
    for name, why in report.unavailable.items():
        console.print(f"  {name}: not yet available: it {why}", soft_wrap=True)
    notes = [f.note for f in report.figures if f.note]
    for note in dict.fromkeys(notes):
        console.print(f"  note: {note}", soft_wrap=True)
    if report.cores:
        console.print(f"  cores: {report.cores}", soft_wrap=True)
    m = report.machine
    console.print(
        f"  machine: {m.cpu_model}, {m.cores} cores, {m.memory_mib:,} MiB, "
        f"Python {m.python}, SQLite {m.versions.get('sqlite')}, "
        f"uvicorn {m.versions.get('uvicorn')}, vodozemac {m.versions.get('vodozemac')}",
        soft_wrap=True,
    )
    for error in report.errors:
        console.print(f"  [bold red]error:[/] {error}", soft_wrap=True)
