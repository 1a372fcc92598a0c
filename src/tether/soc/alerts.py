"""``tether alerts``: findings delivered to webhooks, Slack and Splunk HEC, each at its own pace.

Each sink is its own consumer group (``<prefix>alerts.<name>``) on ``tether.findings``, run on a
thread of its own: a sink that is down holds back only its own position, never another sink's
alerts (and never the workers). Per sink:

- **severity filter**: findings below ``min_severity`` are passed over (and their offsets
  committed: skipping is a delivery decision, not a failure);
- **de-duplication** by finding id (a worker that restarts may emit a finding twice; the id is
  derived from the cause, so both copies carry the same one); the ids seen are bounded
  (``DEDUP_IDS``, oldest forgotten first) and the webhook also receives the id as the
  ``Idempotency-Key`` header so a receiver can drop what a restart repeats;
- **retries with backoff** (exponential, capped by ``max_backoff_s``, ``Retry-After`` honoured)
  for connection errors, timeouts, 408, 425, 429 and 5xx, for as long as it takes: the
  position is committed only after delivery, so a receiver that fails for an hour gets every
  alert when it returns (at-least-once). A 4xx that retrying cannot fix (400, 401, 403, 404,
  413…) is logged with the finding id and passed over after a few attempts, so one bad alert
  cannot stall the sink for good;
- **rate limit that summarises a storm**: a token bucket (``burst``, ``per_minute``); a finding
  over the limit is counted into a summary sent once per ``summary_s`` (codes, severities, a
  sample of workflows) instead of one message each. The offsets of summarised findings are
  committed only after the summary is delivered.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Final

import orjson
from pydantic import ValidationError

from tether.models.common import SEVERITY_RANK
from tether.models.outputs import Finding
from tether.settings import Settings
from tether.soc.alert_config import AlertsConfig, SinkConfig
from tether.soc.alert_payloads import Summary, finding_body, summary_body
from tether.soc.relay import Record, Relay
from tether.topics import FINDINGS

log = logging.getLogger(__name__)

DEDUP_IDS: Final = 100_000
PERMANENT_ATTEMPTS: Final = 3
_RETRY_STATUSES: Final = frozenset({408, 425, 429})

Clock = Callable[[], float]


class TokenBucket:
    """``burst`` at once, ``per_minute`` sustained; pure apart from the clock it is given."""

    def __init__(self, per_minute: float, burst: int, clock: Clock) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.clock = clock
        self.at = clock()

    def take(self) -> bool:
        """Spend one token if there is one."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class PermanentError(Exception):
    """The receiver refused the request in a way retrying will not fix."""


class HttpPoster:
    """POSTs JSON; raises ``PermanentError`` or ``OSError`` (retryable) on failure."""

    def __init__(self, sink: SinkConfig) -> None:
        self.sink = sink
        self.headers = {"Content-Type": "application/json", **sink.headers}
        token = sink.token()
        if token is not None:
            scheme = "Splunk" if sink.type == "splunk_hec" else "Bearer"
            self.headers["Authorization"] = f"{scheme} {token}"

    def post(self, body: dict[str, Any], key: str | None) -> None:
        """One attempt."""
        headers = dict(self.headers)
        if key is not None and self.sink.type == "webhook":
            headers["Idempotency-Key"] = key
        req = urllib.request.Request(  # noqa: S310  # the URL is an http(s) URL from the config
            str(self.sink.url), data=orjson.dumps(body), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.sink.timeout_s) as resp:  # noqa: S310
                resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code in _RETRY_STATUSES or exc.code >= 500:  # noqa: PLR2004
                raise RetryAfter(exc.code, _retry_after(exc)) from exc
            raise PermanentError(f"HTTP {exc.code}") from exc


class RetryAfter(OSError):
    """A retryable HTTP status, with the receiver's Retry-After when it gave one."""

    def __init__(self, status: int, after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.after = after


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class AlertSink:
    """One sink's delivery: filter, de-duplicate, rate-limit, retry. Driven by a ``Relay``."""

    def __init__(
        self,
        sink: SinkConfig,
        stop: threading.Event,
        *,
        poster: HttpPoster | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.sink = sink
        self.stop = stop
        self.poster = poster or HttpPoster(sink)
        self.clock = clock
        self.bucket = TokenBucket(sink.rate.per_minute, sink.rate.burst, clock)
        self.min_rank = SEVERITY_RANK[sink.min_severity]
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.summary = Summary()
        self.summary_due = 0.0
        self.sent = 0
        self.filtered = 0
        self.duplicates = 0
        self.rejected = 0
        self.unreadable = 0
        self.summaries = 0

    def deliver(self, records: Sequence[Record]) -> bool:
        """Every record delivered, passed over or summarised; False only when stopping."""
        for r in records:
            f = self._finding(r.value)
            if f is None:
                continue
            if SEVERITY_RANK[f.severity] < self.min_rank:
                self.filtered += 1
                continue
            if f.finding_id in self.seen:
                self.duplicates += 1
                continue
            if not self.bucket.take():
                if self.summary.count == 0:
                    self.summary_due = self.clock() + self.sink.rate.summary_s
                self.summary.add(f)
                self._remember(f.finding_id)
                continue
            if not self._send(finding_body(self.sink, f), f.finding_id):
                return False
            self._remember(f.finding_id)
            self.sent += 1
        return True

    def idle(self) -> bool:
        """Send a due summary; True when nothing is owed (the relay may commit)."""
        if self.summary.count == 0:
            return True
        if self.clock() < self.summary_due:
            return False
        if not self._send(summary_body(self.sink, self.summary, time.time()), None):
            return False
        self.summaries += 1
        self.summary = Summary()
        return True

    def _finding(self, value: bytes) -> Finding | None:
        try:
            doc = orjson.loads(value)
            if isinstance(doc, dict) and doc.get("kind") == "finding":
                return Finding.model_validate(doc)
        except (orjson.JSONDecodeError, ValidationError) as exc:
            log.warning("sink %s: skipping an unreadable findings record: %s", self.sink.name, exc)
        self.unreadable += 1
        return None

    def _remember(self, finding_id: str) -> None:
        self.seen[finding_id] = None
        if len(self.seen) > DEDUP_IDS:
            self.seen.popitem(last=False)

    def _send(self, body: dict[str, Any], key: str | None) -> bool:
        backoff = 0.25
        permanent = 0
        while True:
            try:
                self.poster.post(body, key)
                return True
            except PermanentError as exc:
                permanent += 1
                if permanent >= PERMANENT_ATTEMPTS:
                    self.rejected += 1
                    log.error(
                        "sink %s refused finding %s for good (%s): passed over",
                        self.sink.name,
                        key,
                        exc,
                    )
                    return True
                wait = backoff
            except RetryAfter as exc:
                wait = exc.after if exc.after is not None else backoff
            except OSError as exc:  # connection refused, reset, timeout
                log.warning("sink %s: %s (retrying in %.1f s)", self.sink.name, exc, backoff)
                wait = backoff
            if self.stop.wait(min(wait, self.sink.max_backoff_s)):
                return False
            backoff = min(backoff * 2, self.sink.max_backoff_s)


def run_alerts(
    settings: Settings,
    config: AlertsConfig,
    stop: threading.Event,
    *,
    group_prefix: str | None = None,
) -> list[AlertSink]:
    """One thread per sink until ``stop`` is set; returns the sinks (their counters)."""
    sinks: list[AlertSink] = []
    threads: list[threading.Thread] = []
    prefix = group_prefix or f"{settings.topic_prefix}alerts."
    for sc in config.sinks:
        sink = AlertSink(sc, stop)
        relay = Relay(
            settings,
            topics=[settings.topic(FINDINGS)],
            group_id=prefix + sc.name,
            client_id=f"tether-alerts-{sc.name}",
            deliver=sink.deliver,
            stop=stop,
            idle=sink.idle,
        )
        sinks.append(sink)
        threads.append(threading.Thread(target=relay.run, name=f"alerts-{sc.name}", daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sinks
