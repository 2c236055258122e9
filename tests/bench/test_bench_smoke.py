"""The benchmark's smoke: every workload runs through the real CLI with tiny knobs.

Benchmarks are never timed tests: these check that each workload completes, prints its
table and writes the figures it promises, each positive, not how fast anything is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from strongroom import proto
from strongroom.bench import BUDGETS, ceiling_of

FIGURES = {
    "echo": {
        "echo_messages_per_s",
        "echo_saturated_p99_ms",
        "echo_paced_rate_per_s",
        "echo_latency_p50_ms",
        "echo_latency_p95_ms",
        "echo_latency_p99_ms",
        "echo_idle_kib_per_connection",
    },
    "activation": {"activations_per_s"},
    "idle": {"idle_kib_per_connection"},
    "routing": {
        "routing_envelopes_per_s",
        "routing_saturated_p99_ms",
        "routing_paced_rate_per_s",
        "routing_latency_p50_ms",
        "routing_latency_p95_ms",
        "routing_latency_p99_ms",
    },
    "backlog": {"backlog_fill_envelopes_per_s", "backlog_drain_envelopes_per_s"},
}


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "strongroom", "bench", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )


class Smoke:
    """``bench ARGS --smoke --json``, which must succeed: its output and its report."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        out = tmp_path / "report.json"
        self.result = bench(*args, "--smoke", "--json", str(out))
        assert self.result.returncode == 0, self.result.stdout + self.result.stderr
        self.stdout = self.result.stdout
        self.report = report = json.loads(out.read_text())
        assert report["errors"] == []
        assert report["machine"]["cores"] >= 1
        assert report["machine"]["versions"]["vodozemac"]
        assert report["knobs"]["smoke"] is True
        for figure in report["figures"]:
            assert figure["server_peak_rss_kib"] > 0
        self.figures: dict[str, float] = {
            f["name"]: f["value"] for f in report["figures"]
        }


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["echo", "activation", "idle", "backlog"])
def test_each_workload_completes_and_reports(workload: str, tmp_path: Path) -> None:
    run = Smoke(tmp_path, workload, "--no-ceiling")
    assert "strongroom bench" in run.stdout
    got = run.figures
    assert FIGURES[workload] <= set(got)
    for name in FIGURES[workload]:
        assert got[name] > 0, name
        assert name in run.stdout


@pytest.mark.slow
def test_routing_with_its_ceiling_and_live_crypto(tmp_path: Path) -> None:
    run = Smoke(tmp_path, "routing", "--live")
    got = run.figures
    assert FIGURES["routing"] | FIGURES["echo"] <= set(got)
    assert all(got[name] > 0 for name in FIGURES["routing"])
    # every delivery was decrypted and checked by its recipient
    assert got["routing_verified"] == 4 * 10
    ratio = {f["name"]: f["vs_echo"] for f in run.report["figures"]}
    assert ratio["routing_envelopes_per_s"] > 0
    assert "vs echo" in run.stdout


#: per group size N, as ``fanout_{N}_…``
FANOUT = {
    "last_ms",
    "last_max_ms",
    "device_p99_ms",
    "deliveries_per_s",
    "messages_per_s",
    "server_cpu_ms_per_message",
    "delivered_pct",
}


@pytest.mark.slow
def test_fanout_reaches_every_member_of_each_group(tmp_path: Path) -> None:
    run = Smoke(tmp_path, "fanout", "--no-ceiling")
    got = run.figures
    sizes = run.report["knobs"]["members"]
    assert len(sizes) >= 2
    for n in sizes:
        names = {f"fanout_{n}_{name}" for name in FANOUT}
        assert names <= set(got), n
        assert all(got[name] > 0 for name in names)
        assert all(name in run.stdout for name in names)
        # every member got every message: checked by id, sender, shared flag and body
        assert got[f"fanout_{n}_delivered_pct"] == 100
        assert got[f"fanout_{n}_last_ms"] <= got[f"fanout_{n}_last_max_ms"]
        assert got[f"fanout_{n}_deliveries_per_s"] == pytest.approx(
            n * got[f"fanout_{n}_messages_per_s"]
        )


def test_fanout_rates_are_compared_with_the_echo_and_the_budget_named() -> None:
    assert ceiling_of("fanout_37_deliveries_per_s") == "echo_messages_per_s"
    assert ceiling_of("fanout_37_last_ms") is None
    assert ceiling_of("routing_envelopes_per_s") == "echo_messages_per_s"
    for kind in ("sqlite", "postgresql"):
        assert "fanout_1000_last_ms" in BUDGETS[kind]


@pytest.mark.parametrize("members", ["0,10", "10,x", str(proto.MAX_FANOUT + 1)])
def test_fanout_refuses_a_group_size_it_cannot_send(members: str) -> None:
    result = bench("fanout", "--members", members)
    assert result.returncode == 2
    assert "--members" in result.stderr


def test_an_unknown_workload_is_refused() -> None:
    result = bench("bogus")
    assert result.returncode == 2
    assert "unknown workload" in result.stderr
