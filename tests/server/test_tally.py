"""The lock-free hot-path metrics expose exactly what prometheus client's own would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from strongroom.server._tally import TallyCollector

BOUNDS = (0.0005, 0.001, 0.01, 0.1, 1.0, 2.5)
durations = st.lists(
    st.one_of(
        st.sampled_from(BOUNDS),  # on a bound: counted in that bucket (le is inclusive)
        st.floats(min_value=0.0, max_value=10.0, allow_nan=False),
    ),
    max_size=50,
)


def _samples(text: bytes) -> dict[str, float]:
    """Sample lines by name and labels, without the _created ones prometheus adds."""
    out: dict[str, float] = {}
    for line in text.decode().splitlines():
        if line.startswith("#") or "_created" in line:
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


@given(durations, st.lists(st.integers(min_value=1, max_value=1000), max_size=20))
def test_tallies_match_prometheus_client(
    seconds: list[float], counts: list[int]
) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    hot = TallyCollector(ours)
    tally = hot.counter("sr_things", "things")
    timings = hot.timings("sr_seconds", "time", BOUNDS, ["op"], [("a",), ("b",)])
    counter = Counter("sr_things", "things", registry=theirs)
    histogram = Histogram("sr_seconds", "time", ["op"], buckets=BOUNDS, registry=theirs)
    histogram.labels("a")
    histogram.labels("b")  # a child that never observes is listed too
    for n in counts:
        tally.inc(n)
        counter.inc(n)
    for s in seconds:
        timings[("a",)].observe(s)
        histogram.labels("a").observe(s)
    mine, reference = _samples(generate_latest(ours)), _samples(generate_latest(theirs))
    assert mine.keys() == reference.keys()
    for key, value in reference.items():
        assert abs(mine[key] - value) <= 1e-9 * max(1.0, abs(value)), key


def test_time_observes_the_block() -> None:
    hot = TallyCollector(CollectorRegistry())
    (timings,) = hot.timings("sr_block_seconds", "a block", BOUNDS).values()
    with timings.time():
        pass
    with timings.time():
        sum(range(10_000))
    cumulative = timings.cumulative()
    assert cumulative[-1] == ("+Inf", 2)
    assert [n for _, n in cumulative] == sorted(n for _, n in cumulative)
    assert 0 < timings.total < 1.0
