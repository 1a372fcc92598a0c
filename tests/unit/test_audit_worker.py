"""The worker writes the decisions' hash chain (streams/audit_chain.py): each decision pinned to
its workflow's intents partition and linked after that partition's head; a newly assigned
partition continues from the head read from the log; checkpoints name only acknowledged links
and verify; a partition whose head could not be read restarts visibly."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

import pytest

from builders import call, started
from streams.worker import Worker
from tether.audit.chain import GENESIS, UNKNOWN, Link, seal, unseal
from tether.audit.checkpoint import keys_of, verify_checkpoint
from tether.audit.verify import Entry, verify_log
from tether.security import SetSigner, generate_key
from tether.settings import Settings
from worker_doubles import make_worker, records

DECISIONS = "tether.decisions"
CHECKPOINTS = "tether.audit-checkpoints"


class Broker:
    """Acknowledges every record (or holds them all until ``release``)."""

    def __init__(self) -> None:
        self.entries: list[Any] = []
        self.held: list[asyncio.Future[list[Any]]] = []
        self.hold = False

    def publish_many(self, entries: list[Any]) -> asyncio.Future[list[Any]]:
        self.entries += entries
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        if self.hold:
            self.held.append(done)
        else:
            done.set_result([])
        return done

    def release(self) -> None:
        for f in self.held:
            f.set_result([])
        self.held.clear()

    def on(self, topic: str) -> list[Any]:
        return [e for e in self.entries if e[0] == topic]


@pytest.fixture(scope="module")
def signer() -> SetSigner:
    return SetSigner(generate_key("ES256"), issuer="urn:tether:test")


def worker(signer: SetSigner, broker: Broker, heads: dict[int, Link | None]) -> Worker:
    settings = Settings(grace_s=2.0, state_epoch_ms=0, signing_processes=0)
    w = make_worker(signer, settings=settings, publish_many=broker.publish_many)  # type: ignore[arg-type]
    assert w.audit is not None

    def read(partitions: Collection[int]) -> dict[int, Link | None]:
        return {p: heads[p] for p in partitions if p in heads}

    w.audit.read_heads = read
    return w


def calls(wf: str, partition: int, n: int, first: int = 0) -> list[Any]:
    events = [started(wf, "planner", f"tok-{wf}", t=0)]
    events += [call(wf, "planner", f"tok-{wf}", t=1 + i) for i in range(n)]
    return records(*events, partition=partition, first=first)


def test_decisions_are_pinned_to_their_intents_partition_and_continue_the_log(
    signer: SetSigner,
) -> None:
    body = b'{"kind":"decision","event_id":"earlier"}'
    _, before = seal(body, 2, 41, GENESIS)  # partition 2 already ends at seq 41
    broker = Broker()

    async def scenario() -> Worker:
        w = worker(signer, broker, {1: None, 2: before})
        w.assign({1, 2})
        assert w.audit is not None
        await w.audit.assign(w.assigned)
        await w.on_intents(calls("wf-a", 1, 3))
        await w.on_intents(calls("wf-b", 2, 2, first=10))
        await w.checkpoint()
        return w

    asyncio.run(scenario())
    decisions = broker.on(DECISIONS)
    assert [(e[3], unseal(e[2]).link.seq) for e in decisions] == [
        (1, 0),
        (1, 1),
        (1, 2),
        (2, 42),
        (2, 43),
    ]
    assert unseal(decisions[0][2]).link.prev == GENESIS
    assert unseal(decisions[3][2]).link.prev == before.hash
    keys = keys_of({"keys": [signer.public_jwk()]})
    tokens = [(e[2], "cp") for e in broker.on(CHECKPOINTS)]
    assert sorted(
        (verify_checkpoint(t, keys).partition, verify_checkpoint(t, keys).seq) for t, _ in tokens
    ) == [
        (1, 2),
        (2, 43),
    ]
    entries = [Entry(e[2], f"#{i}", e[3]) for i, e in enumerate(decisions)]
    report = verify_log(entries, tokens, keys)
    assert report.ok, [i.line() for i in report.issues]


def test_a_checkpoint_never_names_an_unacknowledged_link(signer: SetSigner) -> None:
    broker = Broker()

    async def scenario() -> list[Any]:
        w = worker(signer, broker, {0: None})
        w.assign({0})
        assert w.audit is not None
        await w.audit.assign(w.assigned)
        broker.hold = True
        w.submit_intents(calls("wf-a", 0, 2))
        await asyncio.sleep(0)
        await w.checkpoint()  # nothing acknowledged yet: nothing to vouch for
        before = list(broker.on(CHECKPOINTS))
        broker.hold = False
        broker.release()
        await w.drain()
        await w.checkpoint()
        return before

    assert asyncio.run(scenario()) == []
    assert len(broker.on(CHECKPOINTS)) == 1


def test_an_unreadable_head_restarts_the_chain_visibly(signer: SetSigner) -> None:
    broker = Broker()

    async def scenario() -> None:
        w = worker(signer, broker, {})  # the reader could not read partition 0
        w.assign({0})
        assert w.audit is not None
        await w.audit.assign(w.assigned)
        await w.on_intents(calls("wf-a", 0, 1))

    asyncio.run(scenario())
    link = unseal(broker.on(DECISIONS)[0][2]).link
    assert (link.seq, link.prev) == (0, UNKNOWN)


def test_a_later_step_acknowledged_first_does_not_move_the_durable_head(signer: SetSigner) -> None:
    """A step still retried while a later one is acknowledged: a checkpoint of the later head
    would name links not in the log yet (a crash would then look like a removal)."""
    broker = Broker()

    async def scenario() -> list[int]:
        w = worker(signer, broker, {0: None})
        w.assign({0})
        assert w.audit is not None
        await w.audit.assign(w.assigned)
        broker.hold = True
        w.submit_intents(calls("wf-a", 0, 2))  # the first step: held
        first = list(broker.held)
        broker.held.clear()
        broker.hold = False
        w.submit_intents(calls("wf-b", 0, 2, first=10))  # the second: acknowledged at once
        await asyncio.sleep(0.01)
        await w.checkpoint()
        seen = [len(broker.on(CHECKPOINTS))]
        for f in first:
            f.set_result([])
        await w.drain()
        await w.checkpoint()
        seen.append(len(broker.on(CHECKPOINTS)))
        return seen

    assert asyncio.run(scenario()) == [0, 1]
    keys = keys_of({"keys": [signer.public_jwk()]})
    last = verify_checkpoint(broker.on(CHECKPOINTS)[-1][2], keys)
    assert last.seq == max(unseal(e[2]).link.seq for e in broker.on(DECISIONS))
