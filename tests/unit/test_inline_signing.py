"""The revocations a step's findings raise, when there are few, are signed on the event loop and
queued with the step's records before it returns; task-completion revocations, bursts of
findings and revocations whose signing fails here go through the signing pool. Either way every
revocation is published, signed exactly as the signer signs it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from builders import call, completed, started
from streams.outputs import Batch, Publisher
from streams.worker import Worker
from tether.security import SetSigner, SetVerifier, StaticKeys, generate_key
from tether.settings import Settings
from worker_doubles import make_worker, records

ISSUER = "https://tether.test"
REVOCATIONS = "tether.revocations"


class SyncBroker:
    """Queues records when ``publish_many`` is called (as librdkafka's produce does) and
    acknowledges them through a future, like ``KafkaPublisher.publish_many``."""

    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[list[Any]] = []
        self.fail_first = fail_first  # calls that raise before queuing anything

    def publish_many(self, entries: list[Any]) -> asyncio.Future[list[Any]]:
        if self.fail_first:
            self.fail_first -= 1
            raise BufferError("local queue full")
        self.calls.append(list(entries))
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        done.set_result([])
        return done

    def values(self, topic: str) -> list[bytes]:
        return [e[2] for call in self.calls for e in call if e[0] == topic]


@pytest.fixture(scope="module")
def signer() -> SetSigner:
    return SetSigner(generate_key("RS256"), issuer=ISSUER, token_issuer="sts")


def _worker(signer: SetSigner, broker: SyncBroker, inline_max: int) -> Worker:
    settings = Settings(
        grace_s=2.0, state_epoch_ms=0, signing_processes=0, signing_inline_max=inline_max
    )
    return make_worker(signer, settings=settings, publish_many=broker.publish_many)  # type: ignore[arg-type]


def _workflow(workflows: int) -> list[Any]:
    """``workflows`` workflows that complete and then call a tool: each raises one routine
    revocation (task_completed) and one for a finding (activity_after_completion)."""
    events: list[Any] = []
    for i in range(workflows):
        wf, tok = f"wf-{i}", f"tok-{i}"
        events += [started(wf, "planner", tok, t=0), completed(wf, "planner", tok, t=5)]
        events.append(call(wf, "planner", tok, t=6))
    return records(*events)


def _revoked(signer: SetSigner, tokens: list[bytes]) -> list[tuple[str, str]]:
    """(reason, token) of each SET, verified."""
    verifier = SetVerifier(StaticKeys([signer.public_jwk()]), issuer=ISSUER)
    out = []
    for token in tokens:
        rev = verifier.verify(token)
        assert rev is not None
        out.append((rev.reason, rev.target.id))  # type: ignore[union-attr]
    return sorted(out)


def _expected(workflows: int, reason: str | None = None) -> list[tuple[str, str]]:
    reasons = [reason] if reason else ["activity_after_completion", "task_completed"]
    return sorted((r, f"tok-{i}") for i in range(workflows) for r in reasons)


@pytest.mark.parametrize(
    ("workflows", "inline_max", "signed_here"),
    [
        (1, 16, 1),
        (3, 3, 3),  # at the limit: all here
        (4, 3, 3),  # a burst over it: the first three here, the fourth through the pool
        (1, 0, 0),  # 0: always the pool
    ],
)
def test_a_findings_revocations_are_signed_here_up_to_the_limit(
    signer: SetSigner, workflows: int, inline_max: int, signed_here: int
) -> None:
    async def scenario() -> tuple[list[bytes], list[bytes], int]:
        broker = SyncBroker()
        w = _worker(signer, broker, inline_max)
        durable = w.submit_intents(_workflow(workflows))
        queued = broker.values(REVOCATIONS)  # before the event loop has run anything
        await asyncio.wait_for(durable, 10)
        return queued, broker.values(REVOCATIONS), w.signing.inline

    queued, published, inline = asyncio.run(scenario())
    assert _revoked(signer, published) == _expected(workflows)  # every one, signed
    # the findings' revocations within the limit were queued before the step returned, and
    # only they: the task-completion ones (and the rest of a burst) follow from the pool
    assert _revoked(signer, queued) == sorted(
        ("activity_after_completion", f"tok-{i}") for i in range(signed_here)
    )
    assert inline == signed_here


def test_a_findings_revocation_leaves_before_the_rest_of_the_batch_is_applied(
    signer: SetSigner,
) -> None:
    """The violation is the batch's third record of 3 + 40: its finding and revocation are
    queued in a send of their own, before any record after it is applied (the batch's
    decisions, including the violation's own, follow in one send at the end)."""
    wf, tok = "wf-0", "tok-0"
    events = [started(wf, "planner", tok, t=0), completed(wf, "planner", tok, t=5)]
    events.append(call(wf, "planner", tok, t=6))
    for i in range(1, 21):
        events += [
            started(f"wf-{i}", "planner", f"tok-{i}", t=7),
            call(f"wf-{i}", "planner", f"tok-{i}", t=8),
        ]

    async def scenario() -> list[list[Any]]:
        broker = SyncBroker()
        w = _worker(signer, broker, 16)
        await asyncio.wait_for(w.submit_intents(records(*events)), 10)
        return broker.calls

    calls = asyncio.run(scenario())
    alarm = calls[0]
    assert sorted(e[0] for e in alarm) == ["tether.findings", REVOCATIONS]
    assert _revoked(signer, [e[2] for e in alarm if e[0] == REVOCATIONS]) == [
        ("activity_after_completion", tok)
    ]
    decisions = [e for c in calls[1:] for e in c if e[0] == "tether.decisions"]
    assert len(decisions) == 21  # every call of the batch was decided, after the alarm left
    assert not [e for c in calls[1:] for e in c if e[0] == "tether.findings"]  # sent once


def test_a_signing_error_here_hands_the_revocations_to_the_pool(
    signer: SetSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = SyncBroker()
    calls = {"n": 0}
    real = SetSigner.sign_payload

    def flaky(self: SetSigner, payload: bytes) -> bytes:
        calls["n"] += 1
        if calls["n"] <= 3:  # each finding's as it is raised, then the first at the step's end
            raise RuntimeError("HSM hiccup")
        return real(self, payload)

    monkeypatch.setattr(SetSigner, "sign_payload", flaky)

    async def scenario() -> Worker:
        w = _worker(signer, broker, 16)
        await asyncio.wait_for(w.submit_intents(_workflow(2)), 10)
        return w

    w = asyncio.run(scenario())
    assert _revoked(signer, broker.values(REVOCATIONS)) == _expected(2)  # nothing lost
    assert w.signing.inline == 0  # nothing was signed here: the pool signed them all


def test_send_now_queues_before_returning_and_retries_a_refused_attempt() -> None:
    async def scenario() -> tuple[int, SyncBroker, Publisher]:
        broker = SyncBroker(fail_first=1)  # the synchronous attempt raises
        publisher = Publisher(broker.publish_many)  # type: ignore[arg-type]
        batch = Batch()
        batch.add("tether.decisions", b"wf-1", b"{}")
        done = publisher.send_now(batch)
        queued_at_return = len(broker.calls)
        await asyncio.wait_for(done, 5)
        return queued_at_return, broker, publisher

    queued_at_return, broker, publisher = asyncio.run(scenario())
    assert queued_at_return == 0  # refused at once ...
    assert broker.values("tether.decisions") == [b"{}"]  # ... and retried until acknowledged
    assert publisher.retries == 1
    assert publisher.published == 1


def test_send_now_with_an_accepting_broker_queues_at_once() -> None:
    async def scenario() -> int:
        broker = SyncBroker()
        publisher = Publisher(broker.publish_many)  # type: ignore[arg-type]
        batch = Batch()
        batch.add("tether.decisions", b"wf-1", b"{}")
        done = publisher.send_now(batch)
        queued = len(broker.calls)
        await done
        return queued

    assert asyncio.run(scenario()) == 1
