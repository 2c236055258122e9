"""The hot path's metrics, counted without a lock.

Rules:

1. Counted on the event loop's thread only (every stream frame is handled there) and read
   by the ``/metrics`` handler, which runs there too: no lock, no atomic.  prometheus
   client's own ``Counter`` and ``Histogram`` take a mutex per increment, which cost a
   few per cent of the server's CPU at 20,000 envelopes/s (decision 0005).
2. Exposed in Prometheus' text format like their prometheus client twins: a counter
   ``NAME_total``; a histogram ``NAME_bucket{le=…}`` (cumulative, ``le`` inclusive, ending
   in ``+Inf``), ``NAME_count`` and ``NAME_sum``, with its label values.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

__all__ = ["Tally", "TallyCollector", "Timings"]


class Tally:
    """A counter: ``inc`` adds."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def inc(self, amount: int = 1) -> None:
        self.count += amount


class Timings:
    """A histogram of durations in seconds over fixed upper bounds."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    @contextmanager
    def time(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - started)

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, observations at most le), in Prometheus' order, ``+Inf`` last."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((_le(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


def _le(bound: float) -> str:
    """The ``le`` label as prometheus client spells it."""
    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return text


class TallyCollector(Collector):
    """Exposes tallies and timings (rule 2); register it with a registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._counters: list[tuple[str, str, Tally]] = []
        self._histograms: list[
            tuple[str, str, list[str], dict[tuple[str, ...], Timings]]
        ]
        self._histograms = []
        self._read: list[tuple[str, str, Callable[[], int]]] = []
        registry.register(self)

    def counter(self, name: str, documentation: str) -> Tally:
        tally = Tally()
        self._counters.append((name, documentation, tally))
        return tally

    def counter_from(
        self, name: str, documentation: str, read: Callable[[], int]
    ) -> None:
        """A counter kept elsewhere, read at each scrape."""
        self._read.append((name, documentation, read))

    def timings(
        self,
        name: str,
        documentation: str,
        bounds: Sequence[float],
        labels: Sequence[str] = (),
        values: Sequence[Sequence[str]] = ((),),
    ) -> dict[tuple[str, ...], Timings]:
        """One ``Timings`` per tuple of label values in ``values``."""
        children = {tuple(v): Timings(bounds) for v in values}
        self._histograms.append((name, documentation, list(labels), children))
        return children

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        for name, documentation, tally in self._counters:
            yield CounterMetricFamily(name, documentation, value=tally.count)
        for name, documentation, read in self._read:
            yield CounterMetricFamily(name, documentation, value=read())
        for name, documentation, labels, children in self._histograms:
            family = HistogramMetricFamily(name, documentation, labels=labels)
            for values, timings in children.items():
                family.add_metric(list(values), timings.cumulative(), timings.total)
            yield family
