"""The worker's outputs leave through two producers: revocations, findings and heartbeats at
once (linger 0), the routine records (decisions, credential uses, dead letters, state) after
up to TETHER_OUTPUT_LINGER_MS, so that they share requests to the broker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams import faust_fixes
from streams.app import build
from streams.outputs import Batch, Publisher, routed
from tether.adapters.kafka_publisher import DeliveryError
from tether.bootstrap import worker_parts
from tether.settings import Settings

URGENT = ("t.revocations", "t.findings")


class Producer:
    """Queues records when called, like ``KafkaPublisher.publish_many``; fails ``failing``."""

    def __init__(self, failing: frozenset[bytes] = frozenset()) -> None:
        self.calls: list[list[Any]] = []
        self.failing = failing

    def __call__(self, entries: list[Any]) -> asyncio.Future[list[Any]]:
        self.calls.append(list(entries))
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        done.set_result(
            [(e, DeliveryError(e[0], e[1], "nope")) for e in entries if e[1] in self.failing]
        )
        return done


def _entry(topic: str, key: bytes) -> tuple[str, bytes, bytes, None]:
    return (topic, key, b"{}", None)


@pytest.mark.parametrize(
    ("topics", "urgent_calls", "bulk_calls"),
    [
        (["t.revocations", "t.decisions", "t.findings", "t.sessions-changelog"], 1, 1),
        (["t.revocations", "t.findings"], 1, 0),  # no empty request to the other producer
        (["t.decisions", "t.credential-uses"], 0, 1),
        ([], 0, 1),  # nothing at all: one (empty) call, as before
    ],
)
def test_records_go_to_the_producer_of_their_topic_queued_before_it_returns(
    topics: list[str], urgent_calls: int, bulk_calls: int
) -> None:
    async def scenario() -> tuple[Producer, Producer, list[Any]]:
        urgent, bulk = Producer(), Producer()
        publish = routed(URGENT, urgent, bulk)
        records = [_entry(t, str(i).encode()) for i, t in enumerate(topics)]
        pending = publish(records)
        queued = (len(urgent.calls), len(bulk.calls))  # before anything was awaited
        assert queued == (urgent_calls, bulk_calls)
        return urgent, bulk, await pending

    urgent, bulk, failures = asyncio.run(scenario())
    assert failures == []
    assert [e[0] for c in urgent.calls for e in c] == [t for t in topics if t in URGENT]
    assert [e[0] for c in bulk.calls for e in c] == [t for t in topics if t not in URGENT]


def test_the_failures_of_both_producers_come_back_and_are_retried() -> None:
    async def scenario() -> tuple[Producer, Producer, Publisher]:
        urgent, bulk = Producer(failing=frozenset({b"r"})), Producer(failing=frozenset({b"d"}))
        publisher = Publisher(routed(URGENT, urgent, bulk), max_backoff_s=0.01)
        batch = Batch()
        batch.add("t.revocations", b"r", b"{}")
        batch.add("t.decisions", b"d", b"{}")
        batch.add("t.decisions", b"ok", b"{}")
        done = publisher.send_now(batch)
        await asyncio.sleep(0.2)
        urgent.failing = bulk.failing = frozenset()  # the broker is back
        await asyncio.wait_for(done, 5)
        return urgent, bulk, publisher

    urgent, bulk, publisher = asyncio.run(scenario())
    assert publisher.published == 3
    assert [c[-1][1] for c in urgent.calls[1:]] == [b"r"] * (len(urgent.calls) - 1)
    assert [e[1] for e in bulk.calls[-1]] == [b"d"]  # only the failed record again
    assert publisher.retries >= 2


def test_the_worker_sends_alerts_at_once_and_routine_records_after_the_linger() -> None:
    settings = Settings(topic_prefix="routing.", output_linger_ms=25)
    try:
        parts = worker_parts(settings)
        build(settings, parts)
        alerts, routine = parts.alerts, parts.outputs
        assert alerts._config["linger.ms"] == 0
        assert routine._config["linger.ms"] == 25
        assert alerts._config["client.id"] != routine._config["client.id"]
    finally:
        faust_fixes._elsewhere.clear()
