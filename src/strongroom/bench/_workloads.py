"""The workloads, in the order ``all`` runs them: echo, activation, idle, routing, backlog,
fanout.

Rules:

1. One server per run (per database): devices are activated once, concurrently, and the
   workloads use disjoint sets of them (routing its pairs, the backlog its senders and
   receiver), so no Olm session is used by two workloads.  Idle connections may share
   identities: the server accepts several streams per device.  The fan-out comes last and
   uses the first devices again (its sender and members), since it uses no Olm session
   and everything sent to them before has been acknowledged: a run of ``all`` activates
   no extra device for it.
2. Every figure carries the server child's CPU seconds and peak RSS over its own
   measurement (``_measure``), and the load generator's CPU seconds, so the split of the
   two cores is visible beside the figure.
3. Idle memory is measured before routing and the backlog, so that the per-connection
   figure is not flattered by memory that heavier workloads left free inside the server.
"""

from __future__ import annotations

import asyncio
import datetime
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from strongroom.server._urls import redacted_url

from ._drive import (
    BacklogDrain,
    EchoJob,
    IdleJob,
    Job,
    Result,
    RoutingJob,
)
from ._echo import EchoServer
from ._fanout import FanoutJob, group_traffic
from ._fleet import Lane, Org, make_pairs, organisation, sample_frame
from ._machine import ProcSample, describe_machine, raise_open_files, sample
from ._measure import (
    Window,
    drive,
    drive_phases,
    errors_of,
    floats,
    make_figure,
    rate_of,
)
from ._report import (
    BUDGETS,
    SERVER_WORKLOADS,
    UNAVAILABLE,
    Figure,
    Knobs,
    Report,
    ceiling_of,
    percentile,
)
from ._wire import Identity
from ._workers import Workers

__all__ = ["run_bench"]

_SETTLE = 2.0
# Pre-encrypted messages for a sustained fan-out phase: enough for 100,000 member
# deliveries/s (about twice the echo ceiling), at most this many.
_SUSTAIN_DELIVERIES_PER_S = 100_000
_SUSTAIN_POOL = 20_000

Progress = Callable[[str], None]
T = TypeVar("T")


class _Bench:
    def __init__(self, knobs: Knobs, database: str | None, progress: Progress) -> None:
        self.knobs = knobs
        self.database = database
        self.progress = progress
        self.kind = "postgresql" if database else "sqlite"
        self.figures: list[Figure] = []
        self.errors: list[str] = []
        self.frame_size = sample_frame(knobs.size)

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)

    # --- echo -----------------------------------------------------------------------------

    def echo(self) -> None:
        k = self.knobs
        # The echo is an order of magnitude faster than the server: give it enough frames
        # (100,000 at the defaults) that a run lasts seconds, not a scheduler hiccup.
        count = k.messages if k.smoke else max(k.messages, 100_000 // k.devices)
        with EchoServer() as echo:
            self.progress(f"echo: {k.devices} connections x {count} frames")
            jobs: list[Job] = [
                EchoJob(echo.ws_url, n, count, self.frame_size, window=k.window)
                for n in self._shares(k.devices)
            ]
            results, window = drive(jobs, echo.pid)
            self.errors += errors_of(results)
            peak = rate_of(results)
            cpu = sum(r.cpu_seconds for r in results)
            note = f"echo frames are {self.frame_size} bytes, the size of a routed Send"
            self.add(
                make_figure(
                    "echo", "echo_messages_per_s", peak, "msg/s", window, cpu, note=note
                )
            )
            sat = percentile(floats(r.latencies for r in results), 0.99) * 1000
            self.add(
                make_figure(
                    "echo",
                    "echo_saturated_p99_ms",
                    sat,
                    "ms",
                    window,
                    cpu,
                    higher=False,
                )
            )
            rate = k.rate or peak / 2
            self.progress(f"echo: paced at {rate:,.0f}/s")
            jobs = [
                EchoJob(
                    echo.ws_url,
                    n,
                    count,
                    self.frame_size,
                    window=k.window,
                    rate=rate * n / k.devices,
                )
                for n in self._shares(k.devices)
            ]
            results, window = drive(jobs, echo.pid)
            self.errors += errors_of(results)
            self._latency_figures("echo", "echo", results, window, rate)
            self.progress(f"echo: {k.idle} idle connections")
            before = sample(echo.pid)
            jobs = [
                IdleJob(echo.ws_url, [], n, bare=True) for n in self._shares(k.idle)
            ]
            self._idle("echo", "echo_idle_kib_per_connection", jobs, echo.pid, before)

    def _shares(self, total: int) -> list[int]:
        workers = max(1, min(self.knobs.workers, total))
        return [len(range(i, total, workers)) for i in range(workers)]

    def _latency_figures(
        self,
        workload: str,
        prefix: str,
        results: list[Result],
        window: Window,
        rate: float,
    ) -> None:
        values = floats(r.latencies for r in results)
        cpu = sum(r.cpu_seconds for r in results)
        achieved = rate_of(results)
        self.add(
            make_figure(
                workload, f"{prefix}_paced_rate_per_s", achieved, "msg/s", window, cpu
            )
        )
        for p in (50, 95, 99):
            value = percentile(values, p / 100) * 1000
            self.add(
                make_figure(
                    workload,
                    f"{prefix}_latency_p{p}_ms",
                    value,
                    "ms",
                    window,
                    cpu,
                    higher=False,
                    note=f"{prefix} latency: paced at {rate:,.0f}/s offered "
                    "(half the measured maximum unless --rate), timed from the schedule",
                )
            )

    def _idle(
        self, workload: str, name: str, jobs: list[Job], pid: int, before: ProcSample
    ) -> None:
        with Workers(jobs) as workers:
            window = Window(pid)
            window.before = before
            workers.wait_ready()
            time.sleep(_SETTLE)
            window.end()
            workers.go()
            results = workers.results()
        connected = sum(r.connected for r in results)
        self.errors += errors_of(results)
        grown = window.after.rss_kib - before.rss_kib
        per = grown / max(connected, 1)
        self.add(
            make_figure(
                workload,
                name,
                per,
                "KiB",
                window,
                0.0,
                higher=False,
                note=f"{name}: {connected:,} connections held open, server RSS "
                f"grew {grown / 1024:,.1f} MiB",
            )
        )

    # --- the server ---------------------------------------------------------------------------

    def server(self, workloads: list[str]) -> None:
        k = self.knobs
        routing = max(2, k.devices - k.devices % 2) if "routing" in workloads else 0
        backlog = k.senders + 1 if "backlog" in workloads else 0
        group = max(k.members) + 1 if "fanout" in workloads else 0
        needed = max(routing + backlog, group)
        if "idle" in workloads and needed == 0:
            needed = min(k.identities or k.activations, k.idle)
        if "activation" in workloads:
            needed = max(needed, k.activations)
        with organisation(self.database) as org:
            self.progress(f"activating {needed:,} devices, {k.concurrency} at once")
            window = Window(org.pid)
            devices, seconds = _run_async(org.enrol(needed, k.concurrency))
            window.end()
            if "activation" in workloads:
                self.add(
                    make_figure(
                        "activation",
                        "activations_per_s",
                        needed / seconds,
                        "act/s",
                        window,
                        0.0,
                        note=f"activation: {needed:,} devices through SPAKE2 and "
                        "certificate issue; client-side PAKE and SQLCipher store run in "
                        "the load generator too",
                    )
                )
            if "idle" in workloads:
                self.idle(org, devices)
            if "routing" in workloads:
                self.routing(org, devices[:routing])
            if "backlog" in workloads:
                self.backlog(org, devices[routing : routing + backlog])
            if "fanout" in workloads:
                for members in k.members:
                    self.fanout(org, devices[0], devices[1 : members + 1])

    def idle(self, org: Org, devices: list[Identity]) -> None:
        k = self.knobs
        share = devices[: k.identities] if k.identities else devices
        self.progress(
            f"idle: {k.idle:,} connections over {len(share):,} activated devices"
        )
        time.sleep(0.5)
        before = sample(org.pid)
        jobs: list[Job] = []
        for i, n in enumerate(self._shares(k.idle)):
            mine = share[i :: max(1, min(k.workers, k.idle))] or share
            jobs.append(IdleJob(org.ws_url, mine, n))
        self._idle("idle", "idle_kib_per_connection", jobs, org.pid, before)

    def _routing_jobs(
        self, org: Org, lanes: list[Lane], rate: float | None, count: int
    ) -> list[Job]:
        k = self.knobs
        workers = max(1, min(k.workers, len(lanes) // 2))
        # Whole pairs per worker: lanes come as (a->b, b->a).
        pairs = [lanes[i : i + 2] for i in range(0, len(lanes), 2)]
        jobs: list[Job] = []
        for i in range(workers):
            mine = [lane for pair in pairs[i::workers] for lane in pair]
            # Each recipient decrypts with its own end of the session: the lane back.
            receivers = [
                (ab.recipient, {ab.sender.device_id: ba})
                for ab, ba in ((p[0], p[1]) for p in pairs[i::workers])
            ] + [
                (ba.recipient, {ba.sender.device_id: ab})
                for ab, ba in ((p[0], p[1]) for p in pairs[i::workers])
            ]
            jobs.append(
                RoutingJob(
                    org.ws_url,
                    [(lane, count) for lane in mine],
                    receivers,
                    window=k.window,
                    rate=None if rate is None else rate * len(mine) / len(lanes),
                    live=k.live,
                    text="x" * k.size,
                )
            )
        return jobs

    def routing(self, org: Org, devices: list[Identity]) -> None:
        k = self.knobs
        self.progress(
            f"routing: {len(devices):,} devices in pairs, sessions via the directory"
        )
        pairs = _run_async(
            make_pairs(
                [(devices[i], devices[i + 1]) for i in range(0, len(devices), 2)]
            )
        )
        lanes = [lane for p in pairs for lane in (p.ab, p.ba)]
        if not k.live:
            self.progress(
                f"routing: pre-encrypting {2 * k.messages * len(lanes):,} messages"
            )
            for lane in lanes:
                lane.prepare(2 * k.messages, k.size)
        mode = "live Olm on the path" if k.live else "pre-encrypted"
        self.progress(f"routing: saturating, {k.window} in flight per device ({mode})")
        results, window = drive(
            self._routing_jobs(org, lanes, None, k.messages), org.pid
        )
        self.errors += errors_of(results)
        peak = rate_of(results)
        cpu = sum(r.cpu_seconds for r in results)
        size = lanes[0].payload_size if lanes[0].payload_size else self.frame_size
        note = (
            f"routing: {len(devices):,} connected devices, {k.size}-byte texts as "
            f"{size}-byte Olm envelopes, {mode}"
        )
        self.add(
            make_figure(
                "routing",
                "routing_envelopes_per_s",
                peak,
                "env/s",
                window,
                cpu,
                note=note,
            )
        )
        sat = percentile(floats(r.latencies for r in results), 0.99) * 1000
        self.add(
            make_figure(
                "routing",
                "routing_saturated_p99_ms",
                sat,
                "ms",
                window,
                cpu,
                higher=False,
            )
        )
        if k.live:
            verified = sum(r.verified for r in results)
            self.add(
                make_figure("routing", "routing_verified", verified, "msg", window, cpu)
            )
        rate = k.rate or peak / 2
        self.progress(f"routing: paced at {rate:,.0f}/s")
        if not k.live:
            for lane in lanes:
                lane.frames = lane.frames[k.messages :]
        results, window = drive(
            self._routing_jobs(org, lanes, rate, k.messages), org.pid
        )
        self.errors += errors_of(results)
        self._latency_figures("routing", "routing", results, window, rate)

    def backlog(self, org: Org, devices: list[Identity]) -> None:
        k = self.knobs
        senders, receiver = devices[:-1], devices[-1]
        pairs = _run_async(make_pairs([(s, receiver) for s in senders]))
        per = [len(range(i, k.backlog, len(senders))) for i in range(len(senders))]
        if not k.live:
            self.progress(f"backlog: pre-encrypting {k.backlog:,} messages")
            for pair, n in zip(pairs, per, strict=True):
                pair.ab.prepare(n, k.size)
        self.progress(
            f"backlog: {len(senders)} devices queue {k.backlog:,} envelopes for an "
            "offline one"
        )
        jobs: list[Job] = []
        workers = max(1, min(k.workers, len(pairs)))
        for i in range(workers):
            mine = list(zip(pairs, per, strict=True))[i::workers]
            jobs.append(
                RoutingJob(
                    org.ws_url,
                    [(p.ab, n) for p, n in mine],
                    [],
                    window=min(256, 4 * k.window),
                    live=k.live,
                    text="x" * k.size,
                    need_delivery=False,
                )
            )
        results, window = drive(jobs, org.pid)
        self.errors += errors_of(results)
        cpu = sum(r.cpu_seconds for r in results)
        self.add(
            make_figure(
                "backlog",
                "backlog_fill_envelopes_per_s",
                rate_of(results),
                "env/s",
                window,
                cpu,
                note="backlog fill: accepted and committed with the recipient offline",
            )
        )
        self.progress("backlog: the device reconnects and drains")
        decrypt = {p.ab.sender.device_id: p.ba for p in pairs} if k.live else None
        drain: list[Job] = [
            BacklogDrain(org.ws_url, receiver, k.backlog, decrypt, ack_every=256)
        ]
        results, window = drive(drain, org.pid)
        self.errors += errors_of(results)
        self.add(
            make_figure(
                "backlog",
                "backlog_drain_envelopes_per_s",
                rate_of(results),
                "env/s",
                window,
                sum(r.cpu_seconds for r in results),
                note="backlog drain: from connect (handshake included) to the last "
                "delivery, acknowledged every 256",
            )
        )

    def fanout(self, org: Org, sender: Identity, members: list[Identity]) -> None:
        k = self.knobs
        n = len(members)
        pool = min(_SUSTAIN_POOL, int(k.sustain * _SUSTAIN_DELIVERIES_PER_S / n) + 1)
        self.progress(
            f"fanout {n:,}: pre-encrypting {k.repeat + pool:,} group messages (Megolm)"
        )
        traffic = group_traffic(sender, members, k.repeat + pool, k.size)
        self.progress(
            f"fanout {n:,}: {k.repeat} messages one at a time, then {k.sustain:g} s "
            f"with {k.window} in flight"
        )
        job = FanoutJob(
            org.ws_url, traffic, repeat=k.repeat, sustain=k.sustain, window=k.window
        )
        (single, window), (sustained, window2) = drive_phases([job], org.pid, 2)
        results = [*single, *sustained]
        self.errors += errors_of(results)
        prefix = f"fanout_{n}"
        spans = floats(r.spans for r in single)
        if spans:
            note = (
                f"{prefix}: one {traffic.body_size}-byte Megolm body in a "
                f"{traffic.frame_size:,}-byte SendShared, stored once, to {n:,} "
                f"connected member devices; {len(spans)} messages one at a time on a "
                "quiet server, timed from the send to the last member's delivery "
                "(median, max) and to each member's (p99)"
            )
            each = floats(r.latencies for r in single)
            for name, value in (
                ("last_ms", statistics.median(spans)),
                ("last_max_ms", max(spans)),
                ("device_p99_ms", percentile(each, 0.99)),
            ):
                self.add(
                    self._fanout_figure(
                        f"{prefix}_{name}", value * 1000, "ms", window, single, note
                    )
                )
        done = sum(r.completed for r in sustained)
        if done:
            rate = rate_of(sustained)
            cut = sum(r.sent for r in sustained) >= pool
            note = (
                f"{prefix} sustained: one sender, at most {k.window} group messages in "
                f"flight (until accepted and delivered to every member), {k.sustain:g} s"
                + (
                    f"; cut short: all {pool:,} pre-encrypted messages sent"
                    if cut
                    else ""
                )
                + "; server CPU per group message (accept, commit, deliveries, "
                "acknowledgements)"
            )
            for name, value, unit in (
                ("deliveries_per_s", rate * n, "env/s"),
                ("messages_per_s", rate, "msg/s"),
                ("server_cpu_ms_per_message", window2.cpu / done * 1000, "ms"),
            ):
                self.add(
                    self._fanout_figure(
                        f"{prefix}_{name}", value, unit, window2, sustained, note
                    )
                )
        sent = sum(r.sent for r in results)
        checked = sum(r.verified for r in results)
        self.add(
            self._fanout_figure(
                f"{prefix}_delivered_pct",
                100 * checked / max(1, sent * n),
                "%",
                window2,
                [],
                f"{prefix}_delivered_pct: member deliveries whose id, sender, shared "
                f"flag and body were checked, of {sent:,} messages x {n:,} members",
            )
        )

    @staticmethod
    def _fanout_figure(
        name: str,
        value: float,
        unit: str,
        window: Window,
        results: list[Result],
        note: str,
    ) -> Figure:
        higher = not (name.endswith("_ms") or name.endswith("_per_message"))
        cpu = sum(r.cpu_seconds for r in results)
        return make_figure(
            "fanout", name, value, unit, window, cpu, higher=higher, note=note
        )


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def run_bench(
    workloads: list[str], knobs: Knobs, database: str | None, progress: Progress
) -> Report:
    """Run ``workloads`` (names from ``WORKLOADS``) and return the report."""
    limit = raise_open_files()
    bench = _Bench(knobs, database, progress)
    report = Report(
        started_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        workloads=workloads,
        database=redacted_url(database) if database else "sqlite",
        machine=describe_machine(),
        knobs=knobs,
        unavailable={w: UNAVAILABLE[w] for w in workloads if w in UNAVAILABLE},
    )
    run_echo = "echo" in workloads or (
        knobs.ceiling and any(w in SERVER_WORKLOADS for w in workloads)
    )
    try:
        if run_echo:
            bench.echo()
        served = [w for w in SERVER_WORKLOADS if w in workloads]
        if served:
            bench.server(served)
    except Exception as exc:
        bench.errors.append(f"{type(exc).__name__}: {exc}")
    _compare(bench.figures, bench.kind)
    report.figures = bench.figures
    report.errors = bench.errors
    store = (
        "SQLite commit and reader threads"
        if database is None
        else "its PostgreSQL pool; PostgreSQL's own processes are not counted in "
        "the server CPU column and share the same cores"
    )
    report.cores = (
        f"{report.machine.cores} cores, not pinned: the server child (one process: "
        f"event loop + {store}) and {knobs.workers} load-generator process(es) share "
        f"them; compare the CPU-seconds columns with wall time. "
        f"RLIMIT_NOFILE {limit:,} in both."
    )
    return report


def _compare(figures: list[Figure], kind: str) -> None:
    by_name = {f.name: f for f in figures}
    budgets = BUDGETS[kind]
    for figure in figures:
        figure.budget = budgets.get(figure.name)
        echo = by_name.get(ceiling_of(figure.name) or "")
        if echo is not None and echo.value > 0:
            figure.vs_echo = figure.value / echo.value
