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


def figures(path: Path) -> dict[str, float]:
    report = json.loads(path.read_text())
    assert report["errors"] == []
    assert report["machine"]["cores"] >= 1
    assert report["machine"]["versions"]["vodozemac"]
    assert report["knobs"]["smoke"] is True
    for figure in report["figures"]:
        assert figure["server_peak_rss_kib"] > 0
    return {f["name"]: f["value"] for f in report["figures"]}


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["echo", "activation", "idle", "backlog"])
def test_each_workload_completes_and_reports(workload: str, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = bench(workload, "--smoke", "--no-ceiling", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "strongroom bench" in result.stdout
    got = figures(out)
    assert FIGURES[workload] <= set(got)
    for name in FIGURES[workload]:
        assert got[name] > 0, name
        assert name in result.stdout


@pytest.mark.slow
def test_routing_with_its_ceiling_and_live_crypto(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = bench("routing", "--smoke", "--live", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    got = figures(out)
    assert FIGURES["routing"] | FIGURES["echo"] <= set(got)
    assert all(got[name] > 0 for name in FIGURES["routing"])
    # every delivery was decrypted and checked by its recipient
    assert got["routing_verified"] == 4 * 10
    report = json.loads(out.read_text())
    ratio = {f["name"]: f["vs_echo"] for f in report["figures"]}
    assert ratio["routing_envelopes_per_s"] > 0
    assert "vs echo" in result.stdout


def test_fanout_alone_says_it_is_not_built_yet() -> None:
    result = bench("fanout")
    assert result.returncode != 0
    assert "server-side groups" in result.stderr


def test_an_unknown_workload_is_refused() -> None:
    result = bench("bogus")
    assert result.returncode == 2
    assert "unknown workload" in result.stderr
