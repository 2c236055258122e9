"""`strongroom bench WORKLOAD`: measure a real server on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec
import typer

from strongroom import proto
from strongroom.bench import (
    UNAVAILABLE,
    WORKLOADS,
    Knobs,
    print_report,
    smoke_knobs,
)

from ._common import console, err_console, fail

__all__ = ["bench"]

_NAMES = (*WORKLOADS, *UNAVAILABLE, "all")
_D = Knobs()


def bench(
    workload: Annotated[
        str, typer.Argument(help=f"one of: {', '.join(_NAMES)}", show_default=False)
    ],
    devices: Annotated[
        int, typer.Option(help="routing: connected devices (in pairs)")
    ] = _D.devices,
    messages: Annotated[
        int, typer.Option(help="routing: messages per device in each phase")
    ] = _D.messages,
    size: Annotated[int, typer.Option(help="bytes of text per message")] = _D.size,
    window: Annotated[
        int,
        typer.Option(help="routing and fanout: messages in flight per sending device"),
    ] = _D.window,
    rate: Annotated[
        float,
        typer.Option(help="latency phase: total messages/s (0: half the measured max)"),
    ] = _D.rate,
    backlog: Annotated[
        int, typer.Option(help="backlog: envelopes queued for the offline device")
    ] = _D.backlog,
    senders: Annotated[
        int, typer.Option(help="backlog: devices that queue them")
    ] = _D.senders,
    idle: Annotated[int, typer.Option(help="idle: connected idle devices")] = _D.idle,
    identities: Annotated[
        int,
        typer.Option(help="idle: activated devices the connections share (0: all)"),
    ] = _D.identities,
    activations: Annotated[
        int, typer.Option(help="activation: devices to activate (at least)")
    ] = _D.activations,
    concurrency: Annotated[
        int, typer.Option(help="activation: activations at once")
    ] = _D.concurrency,
    members: Annotated[
        str,
        typer.Option(help="fanout: member devices of each group measured, a list"),
    ] = ",".join(map(str, _D.members)),
    repeat: Annotated[
        int, typer.Option(help="fanout: messages sent one at a time, per group")
    ] = _D.repeat,
    sustain: Annotated[
        float,
        typer.Option(help="fanout: seconds of sustained group traffic, per group"),
    ] = _D.sustain,
    workers: Annotated[int, typer.Option(help="load-generator processes")] = _D.workers,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="routing and backlog: encrypt and decrypt on the path (client crypto)",
        ),
    ] = False,
    ceiling: Annotated[
        bool,
        typer.Option(help="also run the echo ceiling, to compare every figure with"),
    ] = True,
    smoke: Annotated[
        bool, typer.Option("--smoke", help="tiny knobs: completes in seconds (CI)")
    ] = False,
    db: Annotated[
        str,
        typer.Option(help="sqlite (a fresh file), or a postgresql://… URL"),
    ] = "sqlite",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write the report here")
    ] = None,
) -> None:
    """Benchmark a real server on loopback: routing, backlog, idle, activation, fanout,
    echo."""
    if workload not in _NAMES:
        fail(f"unknown workload {workload!r}: choose one of {', '.join(_NAMES)}", 2)
    if workload in UNAVAILABLE:
        fail(f"{workload} is not yet available: it {UNAVAILABLE[workload]}", 2)
    if db != "sqlite" and not db.startswith(("postgresql://", "postgres://")):
        fail("--db takes sqlite or a postgresql://… URL", 2)
    group_sizes = _group_sizes(members)
    knobs = Knobs(
        devices=devices,
        messages=messages,
        size=size,
        window=window,
        rate=rate,
        backlog=backlog,
        senders=senders,
        idle=idle,
        identities=identities,
        activations=activations,
        concurrency=concurrency,
        members=group_sizes,
        repeat=repeat,
        sustain=sustain,
        workers=workers,
        live=live,
        ceiling=ceiling,
    )
    if smoke:
        knobs = smoke_knobs(knobs)
    if (
        min(knobs.devices, knobs.messages, knobs.size, knobs.window) < 1
        or min(
            knobs.backlog,
            knobs.senders,
            knobs.idle,
            knobs.activations,
            knobs.workers,
            knobs.repeat,
        )
        < 1
    ):
        fail("counts and sizes must be at least 1", 2)
    if knobs.sustain <= 0:
        fail("--sustain takes a number of seconds above 0", 2)
    if knobs.window > 256:
        fail("--window is at most 256 (the protocol's limit on pending sends)", 2)
    chosen = [*WORKLOADS, *UNAVAILABLE] if workload == "all" else [workload]

    def progress(text: str) -> None:
        err_console.print(f"[dim]bench:[/] {text}", soft_wrap=True)

    from strongroom.bench import run_bench  # the load generator, only when it runs

    report = run_bench(chosen, knobs, None if db == "sqlite" else db, progress)
    print_report(report, console)
    if json_out is not None:
        json_out.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
        err_console.print(f"[dim]bench:[/] wrote {json_out}")
    if report.errors:
        raise typer.Exit(1)


def _group_sizes(text: str) -> tuple[int, ...]:
    """``--members 10,100,1000``: each a group size a ``SendShared`` may reach."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        fail(f"--members takes whole numbers separated by commas, not {text!r}", 2)
    if not all(1 <= n <= proto.MAX_FANOUT for n in sizes):
        fail(f"--members: each group has 1 to {proto.MAX_FANOUT:,} member devices", 2)
    return tuple(dict.fromkeys(sizes))
