"""The consumer loop's intake: batches handed over, acknowledged once durable, and a bound on
what is in flight counted in records."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from streams.app import mark_inbound
from streams.intake import Intake


class Steps:
    """A handler whose batches become durable only when the test says so."""

    def __init__(self) -> None:
        self.pending: list[asyncio.Future[None]] = []

    def __call__(self, records: list[Any]) -> asyncio.Future[None]:
        step: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(step)
        return step

    def settle_all(self) -> None:
        for step in self.pending:
            if not step.done():
                step.set_result(None)


def _intake(steps: Steps, acked: list[int], *, batch_max: int) -> Intake:
    return Intake(
        {"intents": steps},
        ready=lambda: True,
        ack=lambda message: acked.append(message.offset),
        generation=lambda: 1,
        batch_max=batch_max,
    )


def _add(intake: Intake, first: int, count: int) -> None:
    for offset in range(first, first + count):
        intake.add(SimpleNamespace(topic="intents", partition=0, offset=offset))


def test_many_small_batches_in_flight_do_not_hold_the_loop() -> None:
    async def scenario() -> None:
        steps, acked = Steps(), []
        intake = _intake(steps, acked, batch_max=100)  # bound: 400 records
        for i in range(30):  # a trickle: 30 batches of 5 records, none durable yet
            _add(intake, 5 * i, 5)
            await asyncio.wait_for(intake.flush(), 1)
        assert len(steps.pending) == 30
        assert acked == []  # nothing acknowledged before it is durable
        steps.settle_all()
        await asyncio.sleep(0.01)
        assert acked == list(range(150))

    asyncio.run(scenario())


def test_a_worker_catching_up_holds_a_bounded_number_of_records() -> None:
    async def scenario() -> None:
        steps, acked = Steps(), []
        intake = _intake(steps, acked, batch_max=100)
        for i in range(4):
            _add(intake, 100 * i, 100)
            await asyncio.wait_for(intake.flush(), 1)
        _add(intake, 400, 100)
        blocked = asyncio.ensure_future(intake.flush())  # 500 records would be in flight
        await asyncio.sleep(0.05)
        assert not blocked.done()
        steps.pending[0].set_result(None)
        await asyncio.wait_for(blocked, 1)
        assert acked == list(range(100))

    asyncio.run(scenario())


def test_each_batch_handed_over_is_reported_inbound() -> None:
    """faust's monitor must learn that the intake processes its partitions, or faust logs
    "Stream has not started processing" at ERROR for every partition with unread records."""

    async def scenario() -> None:
        seen: list[list[int]] = []
        intake = Intake(
            {"intents": Steps()},
            ready=lambda: True,
            ack=lambda message: None,
            generation=lambda: 1,
            batch_max=10,
            inbound=lambda batch: seen.append([m.offset for m in batch]),
        )
        _add(intake, 0, 3)
        await intake.flush()
        _add(intake, 3, 2)
        await intake.flush()
        assert seen == [[0, 1, 2], [3, 4]]

    asyncio.run(scenario())


def test_mark_inbound_stamps_every_partition_of_the_batch() -> None:
    monitor = SimpleNamespace(stream_inbound_time={("other", 0): 1.0})
    batch = [SimpleNamespace(tp=("intents", p)) for p in (0, 1, 1)]
    mark_inbound(monitor, batch)
    stamped = monitor.stream_inbound_time
    assert set(stamped) == {("other", 0), ("intents", 0), ("intents", 1)}
    assert stamped[("intents", 0)] == stamped[("intents", 1)] > 1.0
