"""What operators watch: /metrics, /healthz, /readyz and the server's JSON log."""

from __future__ import annotations

import json

import httpx
from prometheus_client.parser import text_string_to_metric_families

from conftest import Org, arun, receive, send


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
    drained = scrape(org)
    # bob's three are gone; one delivery receipt for all three waits for alice
    assert drained["strongroom_inbox_depth"] == 1
    assert drained["strongroom_envelopes_in_total"] == 4
    assert drained["strongroom_envelopes_out_total"] == 3
    assert drained['strongroom_store_seconds_count{op="fetch"}'] >= 1
    assert drained['strongroom_store_seconds_count{op="ack"}'] >= 1
    assert drained["strongroom_connected_devices"] == 0


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
