"""A record the broker refuses for good is not retried for ever (``streams.outputs.Publisher``).

The integration test against a real broker is
``tests/integration/test_worker_hostile.py::test_state_record_refused_as_too_large_is_dead_lettered_and_the_pipeline_goes_on``.
"""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import KafkaError

from streams.output_rejects import OutputRejects
from streams.outputs import Batch, Failures, Publisher
from tether.adapters.kafka_publisher import DeliveryError, Entry
from tether.settings import Settings

LIMIT = 100  # the fake broker's max.message.bytes


class Broker:
    """Refuses batches whose total size passes ``LIMIT``, as Kafka does a record batch."""

    def __init__(self, *, unwritable: frozenset[str] = frozenset()) -> None:
        self.stored: list[Entry] = []
        self.unwritable = unwritable
        self.attempts = 0

    async def publish_many(self, records: list[Entry]) -> Failures:
        self.attempts += 1
        size = sum(len(r[2] or b"") for r in records)
        failures = []
        for rec in records:
            if size > LIMIT or rec[0] in self.unwritable:
                err = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large")
                failures.append((rec, DeliveryError(rec[0], rec[1], err)))
            else:
                self.stored.append(rec)
        return failures


def dead_letter_of(rec: Entry, err: DeliveryError) -> Entry | None:
    if rec[0] == "revocations" or len(rec[2] or b"") <= 20:
        return None  # never given up / small: the topic is at fault
    return ("deadletter", rec[1], b"dl:" + (rec[2] or b"")[:8], None)


def run(publisher: Publisher, batch: Batch, timeout: float = 2.0) -> bool:
    async def go() -> bool:
        try:
            await asyncio.wait_for(publisher.send(batch), timeout)
        except TimeoutError:
            return False
        return True

    return asyncio.run(go())


def batch(*records: Entry) -> Batch:
    b = Batch()
    b.records.extend(records)
    return b


def test_a_record_too_large_is_dead_lettered_and_the_rest_are_published() -> None:
    broker = Broker()
    pub = Publisher(broker.publish_many, reject=dead_letter_of)
    big = ("state", b"wf-big", b"x" * 500, None)
    small = ("decisions", b"wf-1", b"y" * 30, None)
    assert run(pub, batch(big, small))
    assert small in broker.stored
    assert ("deadletter", b"wf-big", b"dl:xxxxxxxx", None) in broker.stored
    assert pub.rejected == 1


def test_records_refused_only_together_are_each_published_alone() -> None:
    broker = Broker()
    pub = Publisher(broker.publish_many, reject=dead_letter_of)
    records = [("state", f"k{i}".encode(), b"z" * 60, None) for i in range(3)]
    assert run(pub, batch(*records))  # 180 bytes together, 60 alone: all stored
    assert all(r in broker.stored for r in records)
    assert pub.rejected == 0


@pytest.mark.parametrize(
    "record",
    [
        ("revocations", b"token:t", b"r" * 500, None),  # a revocation is never given up
        ("state", b"wf", b"s" * 10, None),  # small: the topic is unwritable, hold
    ],
)
def test_what_must_not_be_given_up_is_held(record: Entry) -> None:
    broker = Broker(unwritable=frozenset({record[0]}))
    pub = Publisher(broker.publish_many, reject=dead_letter_of, max_backoff_s=0.05)
    assert not run(pub, batch(record), timeout=0.5)  # still retrying: the input is held
    assert broker.attempts > 2
    assert pub.rejected == 0


def test_without_reject_everything_is_retried() -> None:
    broker = Broker()
    pub = Publisher(broker.publish_many, max_backoff_s=0.05)
    assert not run(pub, batch(("state", b"wf-big", b"x" * 500, None)), timeout=0.5)


# -- the worker's decision: give a record up, or hold it -------------------------------------


class Limits:
    def __init__(self, limit: int | None) -> None:
        self.limit = limit

    def get(self, topic: str) -> int | None:
        return self.limit


@pytest.mark.parametrize(
    ("topic", "size", "limit", "given_up"),
    [
        ("sessions-changelog", 20_000, 6_000, True),  # too large for a working topic
        ("sessions-changelog", 800, 600, True),  # small, but the topic works (limit >= 512)
        ("sessions-changelog", 800, 1, False),  # the topic refuses everything: hold
        ("sessions-changelog", 800, None, False),  # limit not read yet: wait for it
        ("sessions-changelog", 2_000_000, None, True),  # far too large for any sane topic
        ("revocations", 20_000, 6_000, False),  # a revocation is never given up
    ],
)
def test_a_record_is_given_up_only_when_it_is_the_records_fault(
    topic: str, size: int, limit: int | None, given_up: bool
) -> None:
    topics = {"revocations": "t.revocations", "deadletter": "t.deadletter"}
    rejects = OutputRejects(Settings(), topics, Limits(limit))
    name = f"t.{topic}"
    rec: Entry = (name, b"wf-big", b"\x00" * size, 3)
    err = DeliveryError(name, b"wf-big", KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large"))
    instead = rejects(rec, err)
    assert (instead is not None) == given_up
    if instead is not None:
        topic_out, key, value, _ = instead
        assert topic_out == "t.deadletter"
        assert key == b"wf-big"
        assert value is not None
        assert len(value) < 4096
        assert b"output_rejected" in value
        assert b"MSG_SIZE_TOO_LARGE" in value
