"""The input of the fault scenarios: fleet corpora placed in time, and a steady-rate feeder."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from confluent_kafka import Producer
from pipeline import workflow_key  # tests/integration, on the path via conftest

from tether.demo.fleet import FleetConfig, iter_json_lines


def fleet_lines(
    events: int,
    seed: int,
    *,
    end_before_now_s: float = 120.0,
    short_s: float | None = None,
    attack_rate: float = 0.3,
) -> list[bytes]:
    """Whole workflows of the synthetic fleet, about ``events`` lines or more, whose last event is
    ``end_before_now_s`` before the wall clock (the worker dead-letters events dated more than
    5 minutes ahead of it).

    ``short_s`` leaves out the workflows that last longer (the fleet's long batch jobs), so that
    the whole stream spans a few minutes and its revocations are still in force when the test
    looks (tokens live ~15 minutes; Redis and gateways ignore expired revocations); more
    workflows then run at once, so that a large stream is as recent as a small one."""
    workflows = max(1, -(-events // 20))
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(3):  # bounded: a short-workflow fleet has ~13 events a workflow
        concurrency = 32 if short_s is None else max(32, workflows // 8)
        config = _fleet_config(seed, workflows, attack_rate, base, concurrency)
        lines = list(iter_json_lines(config))
        keep = _workflows(lines, short_s)
        kept = sum(1 for _ in _only(lines, keep))
        if kept >= events:
            break
        workflows = workflows * events // max(1, kept) + 1
    last = max(
        datetime.fromisoformat(orjson.loads(line)["occurred_at"]) for line in _only(lines, keep)
    )
    start = base + (datetime.now(UTC) - timedelta(seconds=end_before_now_s) - last)
    config = _fleet_config(seed, workflows, attack_rate, start.replace(microsecond=0), concurrency)
    return list(_only(iter_json_lines(config), keep))


def _fleet_config(
    seed: int, workflows: int, attack_rate: float, start: datetime, concurrency: int
) -> FleetConfig:
    return FleetConfig(
        seed=seed,
        workflows=workflows,
        concurrency=concurrency,
        attack_rate=attack_rate,
        disorder=1.0,
        duplicate_rate=0.02,
        start=start,
    )


def _workflows(lines: list[bytes], short_s: float | None) -> set[str] | None:
    """The workflows lasting at most ``short_s`` (None: all)."""
    if short_s is None:
        return None
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for line in lines:
        doc = orjson.loads(line)
        t = datetime.fromisoformat(doc["occurred_at"]).timestamp()
        wf = doc["workflow_id"]
        first[wf], last[wf] = min(first.get(wf, t), t), max(last.get(wf, t), t)
    return {wf for wf in first if last[wf] - first[wf] <= short_s}


def _only(lines: Iterable[bytes], keep: set[str] | None) -> Iterator[bytes]:
    for line in lines:
        if keep is None or orjson.loads(line)["workflow_id"] in keep:
            yield line


class Feeder:
    """Produces lines at a steady rate in a background thread; ``sent`` counts the acknowledged."""

    def __init__(self, bootstrap: str, topic: str, lines: Sequence[bytes], rate: float) -> None:
        self.bootstrap, self.topic, self.lines, self.rate = bootstrap, topic, lines, rate
        self.sent = 0
        self.error: str | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-feeder", daemon=True)

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert self.done.is_set(), f"the feeder is stuck at {self.sent}/{len(self.lines)}"
        assert self.error is None, self.error

    def _run(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                self.error = str(err)
            else:
                self.sent += 1

        try:
            start = time.monotonic()
            for i, line in enumerate(self.lines):
                ahead = i / self.rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
                while True:
                    try:
                        producer.produce(
                            self.topic, value=line, key=workflow_key(line), on_delivery=on_delivery
                        )
                        break
                    except BufferError:
                        producer.poll(0.1)
                producer.poll(0)
            if producer.flush(300) != 0:
                self.error = "records unacknowledged after 300 s"
        finally:
            self.done.set()
