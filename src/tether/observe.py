"""What each long-running process other than the worker exports and checks (``streams.observe``
is the worker's): the revocation feed as a watcher reads it, a gateway's answers, and the
endpoint's start.

Every figure here is read at scrape time from counters the components already keep, so the
gateway's hot path (``is_revoked``) is not touched: a scrape costs the process a few dictionary
copies, a request nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, Metric

from tether.health import Health, OpsServer, serve
from tether.metrics import FEED_STALENESS, READINGS, counter, gauge, labelled
from tether.settings import Settings

if TYPE_CHECKING:
    from tether.gateway.service import Gateway
    from tether.sdk.watcher import Watcher


def start(
    process: str, settings: Settings, checks: dict[str, Callable[[], bool]] | None = None
) -> tuple[Health, OpsServer | None]:
    """Serve ``process``'s ``/metrics``, ``/healthz`` and ``/readyz`` (``TETHER_METRICS_ADDR``,
    default 127.0.0.1 and the process's port), ready when every one of ``checks`` holds."""
    health = Health(process)
    for name, fn in (checks or {}).items():
        health.check(name, fn)
    return health, serve(settings.metrics_addr, health)


@contextmanager
def serving(process: str, settings: Settings) -> Iterator[Health]:
    """``start`` for the length of a ``with`` block: the endpoint stops (its port is released)
    when the process's work returns."""
    health, ops = start(process, settings)
    try:
        yield health
    finally:
        if ops is not None:
            ops.stop()


def watch_feed(health: Health, watcher: Watcher) -> None:
    """Export what ``watcher`` knows of the revocations feed; ready once it has read the topic
    to its end and its heartbeats are fresh."""
    health.check("feed_bootstrapped", watcher.ready.is_set)
    health.check("feed_fresh", watcher.revocations.is_fresh)

    def read() -> Iterable[Metric]:
        stats = watcher.stats
        yield counter("tether_feed_records", "Revocations-feed records read", stats.records)
        yield counter("tether_feed_revocations", "Verified revocations applied", stats.revocations)
        yield counter("tether_feed_heartbeats", "Verified heartbeats applied", stats.heartbeats)
        yield labelled(
            "tether_feed_rejected",
            "Feed records not applied, by reason (replayed: a duplicate, normal)",
            "reason",
            stats.rejected,
        )
        yield counter(
            "tether_fail_open",
            'is_revoked answers of "not revoked" given only because the tier fails open',
            stats.fail_open,
        )
        yield counter(
            "tether_fail_closed",
            'is_revoked answers of "revoked" given only because the feed was stale',
            stats.fail_closed,
        )
        yield counter(
            "tether_registry_lookups",
            "Registry (Redis) lookups made while the feed was stale",
            stats.registry_lookups,
        )
        if stats.lag is not None:
            yield gauge(
                "tether_feed_lag_records",
                "Records between the watcher's position and the end of the revocations topic",
                stats.lag,
            )

    READINGS.add("feed", read)

    def staleness() -> float:
        last = watcher.last_heartbeat
        return math.inf if last is None else max(0.0, time.time() - last)

    FEED_STALENESS.set_function(staleness)  # one family, whichever process sets it


def gateway_answers(gateway: Gateway) -> None:
    """Export a gateway's answers by answer and tier, and its verdicts by outcome and reason."""

    def read() -> Iterable[Metric]:
        stats = gateway.stats
        with gateway.lock:
            answers = dict(stats.answers)
            verdicts = dict(stats.verdicts)
        yield _two_labels(
            "tether_gateway_checks",
            "Requests the gateway answered, by answer (revoked, not_revoked, fail_open, "
            "fail_closed, refused) and the tier that decided it",
            ("answer", "tier"),
            answers,
        )
        yield _two_labels(
            "tether_gateway_verdicts",
            "Requests the gateway answered, by outcome (allow, deny, unavailable) and reason "
            "(the x-tether-reason header)",
            ("outcome", "reason"),
            {tuple(k.split(":", 1)): n for k, n in verdicts.items()},
        )

    READINGS.add("gateway", read)


def _two_labels(
    name: str,
    documentation: str,
    labels: tuple[str, str],
    values: Mapping[tuple[str, str], int] | Mapping[tuple[str, ...], int],
) -> Metric:
    fam = CounterMetricFamily(name, documentation, labels=list(labels))
    for key, n in sorted(values.items()):
        fam.add_metric(list(key), n)
    return fam
