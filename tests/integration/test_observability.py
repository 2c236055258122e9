"""What operators watch: /metrics, /healthz, /readyz and the server's JSON log."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from conftest import Org, arun, receive, send
from strongroom import client


def scrape(org: Org) -> dict[str, float]:
    """Every sample of /metrics by name and labels, e.g. ``x_count{op="accept"}``."""
    response = httpx.get(org.url + "/metrics", timeout=5.0)
    assert response.status_code == 200
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = (
                sample.value
            )
    return samples


def settled(org: Org, name: str, value: float, wait: float = 5.0) -> float:
    """``name``'s value once it is ``value``, or its last value after ``wait`` s."""
    deadline = time.monotonic() + wait
    while (now := scrape(org)[name]) != value and time.monotonic() < deadline:
        time.sleep(0.05)
    return now


def buckets(
    samples: dict[str, float], name: str, **labels: str
) -> list[tuple[float, float]]:
    """A histogram's buckets as (upper bound, observations at or under it), in order."""
    found = []
    for key, count in samples.items():
        if key.startswith(f"{name}_bucket{{"):
            bucket = dict(re.findall(r'(\w+)="([^"]*)"', key))
            le = bucket.pop("le")
            if bucket == labels:
                found.append((float(le), count))
    return sorted(found)


def test_metrics_follow_the_traffic(org: Org) -> None:
    alice = org.activate("alice")
    bob = org.activate("bob")
    before = scrape(org)
    assert before["strongroom_inbox_depth"] == 0
    for i in range(3):
        arun(send(alice, "bob", f"note {i}"))
    queued = scrape(org)
    assert queued["strongroom_inbox_depth"] == 3  # bob is away
    assert queued["strongroom_envelopes_in_total"] == 3
    assert queued['strongroom_store_seconds_count{op="accept"}'] == 3
    assert queued["strongroom_bus_publish_seconds_count"] == 3

    got, _ = arun(receive(bob))
    assert len(got) == 3
    # bob's three are gone once his acknowledgement (sent as he leaves) is committed;
    # one delivery receipt for all three waits for alice
    assert settled(org, "strongroom_inbox_depth", 1) == 1
    drained = scrape(org)
    assert drained["strongroom_envelopes_in_total"] == 4
    assert drained["strongroom_envelopes_out_total"] == 3
    assert drained['strongroom_store_seconds_count{op="fetch"}'] >= 1
    assert drained['strongroom_store_seconds_count{op="ack"}'] >= 1
    assert drained["strongroom_connected_devices"] == 0
    # the hot path's writes (four sends, one acknowledgement at least) were committed in
    # transactions the metrics count; one each at this trickle, never more
    commits = drained["strongroom_store_commits_total"]
    writes = drained["strongroom_store_committed_writes_total"]
    assert writes >= 5 and 1 <= commits <= writes
    # the latency histograms have buckets, so that quantiles can be computed from them
    for counts in (
        buckets(drained, "strongroom_store_seconds", op="accept"),
        buckets(drained, "strongroom_bus_publish_seconds"),
    ):
        assert len(counts) > 5
        assert counts[-1] == (float("inf"), 4)  # every send, the receipt too
        assert [c for _, c in counts] == sorted(c for _, c in counts)  # cumulative

    # a device counts while its stream is open, and no longer once it is closed
    async def while_connected() -> float:
        async with client.Client(alice) as c:
            await c.connect()
            return await asyncio.to_thread(
                settled, org, "strongroom_connected_devices", 1
            )

    assert arun(while_connected()) == 1
    assert settled(org, "strongroom_connected_devices", 0) == 0


def test_health_endpoints(org: Org) -> None:
    assert httpx.get(org.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(org.url + "/readyz").json() == {"status": "ready"}


def test_the_log_file_is_json_lines(org: Org) -> None:
    alice = org.activate("alice")
    org.activate("bob")
    arun(send(alice, "bob", "hello"))
    org.server.stop()
    lines = (org.data.logs / "server.log").read_text().splitlines()
    assert lines, "the server logged nothing"
    entries = [json.loads(line) for line in lines]
    for entry in entries:
        assert set(entry) >= {"time", "level", "logger", "message"}
        assert entry["time"].endswith("Z")
    assert any("serving" in e["message"] for e in entries)
    assert entries[-1]["message"] == "stopped"
