"""The streaming worker's decisions are judged against its revocation view: what it published
itself and what its revocation ledger read of other workers' (``RevocationFloor``)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

import builders
from builders import call, started
from tether.models.outputs import Decision
from tether.security import SetSigner, generate_key
from worker_doubles import make_worker, records


class Sink:
    """Acknowledges every record and keeps what was published."""

    def __init__(self) -> None:
        self.entries: list[Any] = []

    async def publish_many(self, entries: list[Any]) -> list[Any]:
        self.entries.extend(entries)
        return []

    def decisions(self) -> list[Decision]:
        return [
            Decision.model_validate_json(e[2]) for e in self.entries if e[0].endswith("decisions")
        ]


@pytest.fixture(autouse=True)
def _recent(monkeypatch: pytest.MonkeyPatch) -> None:
    # the worker's view is judged on the wall clock: date the scenario now
    monkeypatch.setattr(builders, "T0", datetime.fromtimestamp(int(time.time()) - 30, UTC))


def _run(events: list[dict[str, Any]], before: Any = None) -> list[Decision]:
    sink = Sink()
    worker = make_worker(
        SetSigner(generate_key("ES256"), issuer="https://t"), publish_many=sink.publish_many
    )
    if before is not None:
        before(worker)

    async def go() -> None:
        worker.assign({0})
        await worker.on_intents(records(*events))
        await worker.drain()

    asyncio.run(go())
    return sink.decisions()


def test_a_call_with_a_token_the_worker_revoked_is_denied() -> None:
    log = _run(
        [
            started("wf-1", "planner", "jti-p", t=0),
            call("wf-1", "planner", "jti-p", tool="shell.exec", t=1),
            call("wf-1", "planner", "jti-p", t=2, eid="probe"),
        ]
    )
    probe = [d for d in log if d.event_id == "probe"][-1]
    assert (probe.decision, probe.reason, probe.revoked_targets) == (
        "deny",
        "revoked",
        ["token:jti-p"],
    )


def test_a_call_with_a_token_another_worker_revoked_is_denied() -> None:
    # what the ledger read of another worker's revocation reaches the view (the port)
    def other_worker(worker: Any) -> None:
        worker.floor.note("token:jti-z", time.time() + 600)

    log = _run(
        [started("wf-1", "planner", "jti-z", t=0), call("wf-1", "planner", "jti-z", t=1)],
        other_worker,
    )
    assert [(d.decision, d.revoked_targets) for d in log] == [("deny", ["token:jti-z"])]


def test_a_call_nothing_revoked_is_allowed_by_the_worker() -> None:
    log = _run([started("wf-1", "planner", "jti-a", t=0), call("wf-1", "planner", "jti-a", t=1)])
    assert [(d.decision, d.reason) for d in log] == [("allow", None)]
    assert orjson.loads(Decision.model_dump_json(log[0]))["final"] is True
