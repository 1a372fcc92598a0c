"""The worker's metrics and health: gauges sampled on its timer, readers of its components'
counters, and the readiness checks behind ``/readyz`` (``tether.health``).

Nothing here runs per record: the gauges are set once per tick (``TETHER_TICK_S``) from the
event loop, and the counters components already keep are read at scrape time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

from prometheus_client.core import Metric

from tether.health import Health
from tether.metrics import (
    FEED_STALENESS,
    INPUT_LAG_RECORDS,
    INPUT_LAG_SECONDS,
    READINGS,
    SIGNING_QUEUE,
    STATE_KEYS,
    counter,
    gauge,
)
from tether.settings import Settings

from .recovery import FastRecovery
from .registry_sync import RegistrySync
from .worker import Worker

ALIVE_S = 30.0
"""``/healthz`` fails once the worker's event loop has not turned its timer for this long (a
bulk recovery of a large table blocks it for seconds, not tens of seconds)."""

CHECKS = ("tables_recovered", "input_assigned", "outputs_writable", "feed_fresh")
"""The worker's readiness checks, in the order ``/readyz`` lists them."""


def worker_health(settings: Settings) -> Health:
    """The worker's ``Health``, before the app exists (its endpoint starts first): not ready
    until ``WorkerObserver`` replaces each check with the real one."""
    health = Health("worker", alive_s=max(ALIVE_S, 10 * settings.tick_s))
    for name in CHECKS:
        health.check(name, _not_yet)
    return health


def _not_yet() -> bool:
    return False


class WorkerObserver:
    """Samples a worker's gauges and answers its readiness checks."""

    def __init__(
        self,
        settings: Settings,
        worker: Worker,
        *,
        tables_ready: Callable[[], bool],
        health: Health | None = None,
    ) -> None:
        self.worker = worker
        self.health = health or worker_health(settings)
        self.assigned = False  # an assignment arrived and was not revoked since
        self.heartbeat_at: float | None = None  # monotonic time of the last acknowledged one
        self.fresh_s = max(3 * settings.heartbeat_s, settings.staleness_s)
        self.stuck_s = max(5.0, 2 * settings.heartbeat_s)
        self._partitions: set[int] = set()
        h = self.health
        h.check("tables_recovered", tables_ready)
        h.check("input_assigned", lambda: self.assigned)
        h.check("outputs_writable", self._writable)
        h.check("feed_fresh", self._fresh)
        FEED_STALENESS.set_function(self._staleness)  # read at scrape time

    def _staleness(self) -> float:
        at = self.heartbeat_at
        return math.inf if at is None else time.monotonic() - at

    def _writable(self) -> bool:
        now = time.monotonic()  # the event loop's clock (asyncio's loop.time())
        pub = self.worker.publisher
        return (
            pub.stuck_for(now) <= self.stuck_s
            and self.worker.heartbeats.stuck_for(now) <= self.stuck_s
        )

    def _fresh(self) -> bool:
        at = self.heartbeat_at
        return at is not None and time.monotonic() - at <= self.fresh_s

    async def heartbeat(self) -> None:
        """Send the worker's heartbeat; note when one was acknowledged (feed freshness)."""
        sent = self.worker.heartbeats  # their own publisher: counts what Kafka acknowledged
        before = sent.published
        await self.worker.heartbeat()
        if sent.published != before:
            self.heartbeat_at = time.monotonic()

    def sample(self) -> None:
        """Set the gauges (call from the worker's timer: the event loop is turning)."""
        self.health.beat()
        worker = self.worker
        lag_s, _ = worker.input_lag()
        INPUT_LAG_SECONDS.set(lag_s)
        records = worker.lag.records
        for p in self._partitions - worker.assigned:
            INPUT_LAG_RECORDS.remove(str(p))
        for p in worker.assigned:
            INPUT_LAG_RECORDS.labels(str(p)).set(records(p) or 0)
        self._partitions = set(worker.assigned)
        STATE_KEYS.labels("sessions").set(len(worker.sessions))
        STATE_KEYS.labels("tokens").set(len(worker.tokens))
        SIGNING_QUEUE.set(worker.signing.queued)

    def readers(self, recovery: FastRecovery, sync: RegistrySync) -> None:
        """Export the counters the worker's components keep, read at scrape time."""
        worker = self.worker

        def read() -> Iterable[Metric]:
            pub = worker.publisher
            yield counter(
                "tether_outputs_published",
                "Output records Kafka acknowledged (findings, decisions, revocations, dead "
                "letters, credential uses, state)",
                pub.published,
            )
            yield counter(
                "tether_publish_retries", "Output records sent again after a failure", pub.retries
            )
            yield counter(
                "tether_outputs_rejected",
                "Output records the broker refused for good, replaced by their dead letter",
                pub.rejected,
            )
            yield gauge(
                "tether_publish_failing_seconds",
                "Seconds the worker's output publishing has been failing (0: healthy)",
                pub.stuck_for(time.monotonic()),
            )
            yield counter(
                "tether_signing_fallbacks",
                "Signing batches signed in the worker because the signing process failed",
                worker.signing.fallbacks,
            )
            yield counter(
                "tether_recovered_keys",
                "State keys installed from the changelogs by table recovery",
                recovery.installed,
            )
            yield counter(
                "tether_registry_writes",
                "Revocations the registry sync wrote to the revocation registry (Redis)",
                sync.written,
            )

        READINGS.add("worker", read)
