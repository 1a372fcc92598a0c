"""The worker writes state once per epoch, and never ahead of the outputs it reflects.

Outputs (decisions, findings, revocations) leave as soon as a batch is applied; the state the
batches of an epoch left is written to the tables' changelogs once, after Kafka acknowledged
every output of the epoch and every earlier epoch's state. The futures the consumer loop waits
on before acknowledging input resolve only then: a crash at any point replays input against
the earlier state instead of losing an output.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from builders import call, started
from streams.worker import Worker
from tether.security import SetSigner, generate_key
from tether.settings import Settings
from worker_doubles import make_worker, records

CHANGELOGS = {"sessions-changelog", "tokens-changelog"}


class Broker:
    """Records what the worker publishes; acknowledges a topic's records only once released."""

    def __init__(self) -> None:
        self.published: list[list[Any]] = []  # each call's records, in call order
        self.held: dict[str, asyncio.Event] = {}

    def hold(self, topic: str) -> asyncio.Event:
        self.held[topic] = gate = asyncio.Event()
        return gate

    async def publish_many(self, entries: list[Any]) -> list[Any]:
        self.published.append(list(entries))
        for topic in {e[0] for e in entries}:
            gate = self.held.get(topic)
            if gate is not None:
                await gate.wait()
        return []

    def state_writes(self) -> list[list[Any]]:
        return [call for call in self.published if any(e[0] in CHANGELOGS for e in call)]

    def keys(self, topic: str) -> list[bytes]:
        return [e[1] for call in self.published for e in call if e[0] == topic]


@pytest.fixture(scope="module")
def signer() -> SetSigner:
    return SetSigner(generate_key("ES256"), issuer="https://tether.test", token_issuer="sts")


def _worker(signer: SetSigner, broker: Broker, epoch_ms: float) -> Worker:
    settings = Settings(grace_s=2.0, state_epoch_ms=epoch_ms, signing_processes=0)
    return make_worker(signer, settings=settings, publish_many=broker.publish_many)


def _steps(workflow: str = "wf-1") -> Iterator[list[Any]]:
    """One workflow's events as consecutive one-record batches."""
    yield records(started(workflow, "planner", "tok-1", t=0))
    for i in range(1, 4):
        yield records(call(workflow, "planner", "tok-1", t=i), first=i)


def _call_batch() -> list[Any]:
    return records(call("wf-1", "planner", "tok-1", t=1), first=1)


def test_the_steps_of_an_epoch_write_their_state_once(signer: SetSigner) -> None:
    async def scenario() -> Broker:
        broker = Broker()
        w = _worker(signer, broker, epoch_ms=5000)  # only the explicit close ends it
        futures = [w.submit_intents(batch) for batch in _steps()]
        await asyncio.sleep(0.01)
        assert not any(f.done() for f in futures)  # not durable: no state written yet
        assert broker.keys("tether.decisions")  # ... but the outputs are already out
        assert not broker.state_writes()
        w.close_epoch()
        await asyncio.gather(*futures)
        return broker

    broker = asyncio.run(scenario())
    assert len(broker.state_writes()) == 1
    assert broker.keys("sessions-changelog") == [b"wf-1"]  # four steps, one record


def test_an_epoch_closes_by_itself_after_its_interval(signer: SetSigner) -> None:
    async def scenario() -> Broker:
        broker = Broker()
        w = _worker(signer, broker, epoch_ms=20)
        futures = [w.submit_intents(batch) for batch in _steps()]
        await asyncio.wait_for(asyncio.gather(*futures), 5)
        return broker

    broker = asyncio.run(scenario())
    assert broker.keys("sessions-changelog") == [b"wf-1"]


def test_with_no_epoch_every_step_writes_its_state(signer: SetSigner) -> None:
    async def scenario() -> Broker:
        broker = Broker()
        w = _worker(signer, broker, epoch_ms=0)
        await asyncio.gather(*(w.submit_intents(batch) for batch in _steps()))
        return broker

    broker = asyncio.run(scenario())
    assert broker.keys("sessions-changelog") == [b"wf-1"] * 4


def test_state_waits_for_the_outputs_of_its_epoch(signer: SetSigner) -> None:
    async def scenario() -> None:
        broker = Broker()
        gate = broker.hold("tether.decisions")
        w = _worker(signer, broker, epoch_ms=5000)
        futures = [w.submit_intents(batch) for batch in _steps()]
        w.close_epoch()
        await asyncio.sleep(0.05)
        assert broker.keys("tether.decisions")
        assert not broker.state_writes()  # outputs not acknowledged: no state, no input ack
        assert not any(f.done() for f in futures)
        gate.set()
        await asyncio.wait_for(asyncio.gather(*futures), 5)
        assert broker.keys("sessions-changelog") == [b"wf-1"]

    asyncio.run(scenario())


def test_epochs_become_durable_in_order(signer: SetSigner) -> None:
    async def scenario() -> None:
        broker = Broker()
        gate = broker.hold("sessions-changelog")  # the first epoch's state write hangs
        w = _worker(signer, broker, epoch_ms=5000)
        first = w.submit_intents(records(started("wf-1", "planner", "tok-1", t=0)))
        w.close_epoch()
        await asyncio.sleep(0.02)
        assert len(broker.state_writes()) == 1
        second = w.submit_intents(records(started("wf-2", "planner", "tok-2", t=0), first=1))
        w.close_epoch()
        await asyncio.sleep(0.05)
        assert len(broker.state_writes()) == 1  # the second waits for the first
        assert not first.done()
        assert not second.done()
        gate.set()
        await asyncio.wait_for(asyncio.gather(first, second), 5)
        assert broker.keys("sessions-changelog") == [b"wf-1", b"wf-2"]

    asyncio.run(scenario())


def test_a_failed_epoch_leaves_its_input_unacknowledged(signer: SetSigner) -> None:
    async def scenario() -> None:
        broker = Broker()
        broker.hold("tether.decisions")
        w = _worker(signer, broker, epoch_ms=5000)
        step = w.submit_intents([*next(_steps()), *_call_batch()])
        w.close_epoch()
        await asyncio.sleep(0.02)
        tail = w.epochs.tail
        assert tail is not None
        tail.cancel()  # a shutdown while the outputs are unacknowledged
        with pytest.raises(asyncio.CancelledError):
            await step
        assert not broker.state_writes()

    asyncio.run(scenario())
