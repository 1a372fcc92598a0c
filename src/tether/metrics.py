"""Prometheus metrics of every long-running tether process, and what each process exports.

The worker's hot path counts into ``Tally`` objects: a plain ``dict`` per metric, incremented
by the one thread that applies records (``d[k] = d.get(k, 0) + 1``, tens of nanoseconds) and
read at scrape time by a collector (``dict.copy()`` is atomic under the GIL). prometheus_client's
own ``Counter.labels(...).inc()`` takes a lock and costs about a microsecond: fine once per
batch or epoch, too much once per record. Figures that already live on components (records
published, watcher statistics, gateway verdicts) are read at scrape time by ``Reading``
collectors, so counting them costs the hot path nothing.

``tether.core`` never imports this module: the core stays free of I/O; the adapters and
``streams/`` around it count.

Names follow Prometheus conventions (``tether_..._total`` counters, base units, ``_seconds``);
``NAMES`` lists every one, and deploy/grafana/tether.json uses only those (a unit test checks).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class Tally:
    """A labelled counter for a hot path: one thread adds, the scrape reads a snapshot."""

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self.name = name  # without the ``_total`` suffix the exposition adds
        self.documentation = documentation
        self.label = label
        self.counts: dict[str, int] = {}

    def add(self, value: str, n: int = 1) -> None:
        """Count ``n`` more for the label ``value`` (from the one thread that owns the tally)."""
        counts = self.counts
        counts[value] = counts.get(value, 0) + n

    def family(self) -> CounterMetricFamily:
        """The tally as it is now, for a scrape."""
        fam = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, n in sorted(self.counts.copy().items()):
            fam.add_metric([value], n)
        return fam


class _Tallies(Collector):
    """Exports every ``Tally`` created by ``tally``."""

    def __init__(self) -> None:
        self.tallies: list[Tally] = []

    def collect(self) -> Iterator[Metric]:
        for t in self.tallies:
            yield t.family()

    def describe(self) -> Iterable[Metric]:
        return [
            CounterMetricFamily(t.name, t.documentation, labels=[t.label]) for t in self.tallies
        ]


_TALLIES = _Tallies()
REGISTRY.register(_TALLIES)


def tally(name: str, documentation: str, label: str) -> Tally:
    """A new ``Tally`` exported by the default registry."""
    t = Tally(name, documentation, label)
    _TALLIES.tallies.append(t)
    return t


# -- the worker ----------------------------------------------------------------------------

EVENTS_TOTAL: Final = tally(
    "tether_events", "Input events applied by the worker, by event_type", "type"
)
DEADLETTERS_TOTAL: Final = tally(
    "tether_deadletters", "Dead letters the worker published, by reason", "reason"
)
FINDINGS_TOTAL: Final = tally("tether_findings", "Findings the worker published, by code", "code")
REVOCATIONS_TOTAL: Final = tally(
    "tether_revocations",
    "Revocations the worker signed for publication, by reason (a finding code or task_completed)",
    "code",
)
DECISION_LATENCY: Final = Histogram(
    "tether_decision_latency_seconds",
    "Per input batch: from the Kafka timestamp of its oldest record to the batch being "
    "applied and its outputs queued to the producer",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
EPOCH_COMMIT: Final = Histogram(
    "tether_epoch_commit_seconds",
    "Per state epoch: from its close to its state being acknowledged by Kafka (after its "
    "outputs and every earlier epoch)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
INPUT_LAG_RECORDS: Final = Gauge(
    "tether_input_lag_records",
    "Records of an assigned intents partition not taken yet (sampled every tick)",
    ["partition"],
)
INPUT_LAG_SECONDS: Final = Gauge(
    "tether_input_lag_seconds",
    "Upper bound on how long the worker's oldest unapplied input record has waited",
)
STATE_KEYS: Final = Gauge(
    "tether_state_keys", "Keys held in the worker's state tables (sampled every tick)", ["table"]
)
SIGNING_QUEUE: Final = Gauge(
    "tether_signing_queue_revocations",
    "Revocations handed to the signing process and not signed yet",
)
FEED_STALENESS: Final = Gauge(
    "tether_feed_staleness_seconds",
    "Worker: seconds since its last heartbeat was acknowledged; watcher and gateway: "
    "seconds since the last heartbeat read from the revocations feed (+Inf: none yet)",
)

# -- every process -------------------------------------------------------------------------

READY: Final = Gauge(
    "tether_ready", "1 if the named readiness check passes now (see /readyz)", ["check"]
)

Reader = Callable[[], Iterable[Metric]]


class Reading(Collector):
    """Metrics read at scrape time from a component (its counters cost the hot path nothing).

    A process adds one reader per component it runs, under a name: a component started again
    in the same process (a test) replaces its reader instead of adding a second. A reader that
    fails is skipped (a scrape must never take the process down)."""

    def __init__(self) -> None:
        self._readers: dict[str, Reader] = {}
        self._lock = threading.Lock()

    def add(self, name: str, reader: Reader) -> None:
        """Export what ``reader`` returns at every scrape (replacing ``name``'s reader)."""
        with self._lock:
            self._readers[name] = reader

    def clear(self) -> None:
        """Forget every reader (tests)."""
        with self._lock:
            self._readers.clear()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            readers = list(self._readers.values())
        for reader in readers:
            try:
                yield from reader()
            except Exception:  # noqa: S112  # a component in flux: skip it this scrape
                continue

    def describe(self) -> Iterable[Metric]:
        return []  # families vary with the process: no up-front description


READINGS: Final = Reading()
REGISTRY.register(READINGS)


def counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    """An unlabelled counter family (``name`` without ``_total``)."""
    return CounterMetricFamily(name, documentation, value=value)


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    """An unlabelled gauge family."""
    return GaugeMetricFamily(name, documentation, value=value)


def labelled(
    name: str, documentation: str, label: str, values: dict[str, int] | dict[str, float]
) -> CounterMetricFamily:
    """A counter family with one label, from a snapshot of ``values``."""
    fam = CounterMetricFamily(name, documentation, labels=[label])
    for key, n in sorted(dict(values).items()):
        fam.add_metric([key], n)
    return fam


# What the readers of tether's components export (tether.metrics_readers); listed here so that
# the dashboard test and docs/monitoring.md have one list of every name.
READ_NAMES: Final = (
    "tether_outputs_published_total",
    "tether_publish_retries_total",
    "tether_outputs_rejected_total",
    "tether_publish_failing_seconds",
    "tether_signing_fallbacks_total",
    "tether_recovered_keys_total",
    "tether_registry_writes_total",
    "tether_feed_records_total",
    "tether_feed_rejected_total",
    "tether_feed_heartbeats_total",
    "tether_feed_revocations_total",
    "tether_fail_open_total",
    "tether_fail_closed_total",
    "tether_registry_lookups_total",
    "tether_feed_lag_records",
    "tether_gateway_checks_total",
    "tether_gateway_verdicts_total",
    "tether_ingest_total",
)

NAMES: Final = frozenset(
    {
        "tether_events_total",
        "tether_deadletters_total",
        "tether_findings_total",
        "tether_revocations_total",
        "tether_decision_latency_seconds",
        "tether_epoch_commit_seconds",
        "tether_input_lag_records",
        "tether_input_lag_seconds",
        "tether_state_keys",
        "tether_signing_queue_revocations",
        "tether_feed_staleness_seconds",
        "tether_ready",
        *READ_NAMES,
    }
)
"""Every metric family tether exports (histograms add ``_bucket``, ``_sum`` and ``_count``),
besides prometheus_client's own ``process_*`` and ``python_*``."""


def registry() -> CollectorRegistry:
    """The registry the endpoint serves (prometheus_client's default: process metrics too)."""
    return REGISTRY
