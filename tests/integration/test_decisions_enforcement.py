"""Through a real `tether worker` on the real broker: the decision log says what a gateway's
``Watcher`` fed the same revocations topic does, for a token revoked by the worker itself and
for one revoked by another worker (a signed record on the topic the worker never issued; the
worker's ledger is off, so only its revocation view, streams/revocation_view.py, can know it).

Takes ~15-40 s (a worker starts): not in `make test`; run it with `make decisions-e2e`
(TETHER_DECISIONS_E2E=1)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from pipeline import Pipeline

import builders
from builders import call, started
from tether.models.outputs import Revocation, Target
from tether.sdk.watcher import Watcher
from tether.security.keys import signer_from_settings
from tether.settings import Settings

pytestmark = pytest.mark.skipif(
    os.environ.get("TETHER_DECISIONS_E2E") != "1",
    reason="starts a worker (~15-40 s): run with `make decisions-e2e`",
)


@pytest.fixture
def pipe(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    yield p
    p.stop_all()


def _decisions(pipe: Pipeline, want: set[str], timeout: float = 30.0) -> dict[str, Any]:
    """The last decision of each intent in ``want`` (once each has a final one)."""
    last: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    with pipe.consumer([pipe.topic("decisions")]) as c:
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is None or msg.error() or not msg.value():
                if want <= {k for k, d in last.items() if d["final"]}:
                    return last
                continue
            d = orjson.loads(msg.value())
            last[d["event_id"]] = d
    raise AssertionError(f"no final decision for {want - set(last)}: {pipe.log('w1')}")


def test_worker_decisions_match_a_watcher(pipe: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    monkeypatch.setattr(builders, "T0", now - timedelta(seconds=20))
    settings = Settings(
        kafka_bootstrap=pipe.bootstrap, topic_prefix=pipe.prefix, partitions=4, staleness_s=5.0
    )
    pipe.start_worker("w1", env={"TETHER_LEDGER": "false"})
    pipe.wait_heartbeat("w1")
    # another worker's revocation of jti-o, signed as workers sign, straight onto the topic
    other = Revocation(
        revocation_id="r-other",
        target=Target(kind="token", id="jti-o"),
        reason="credential_reuse",
        severity="critical",
        workflow_id="wf-elsewhere",
        issued_at=now,
        not_after=now + timedelta(minutes=10),
        evidence=["x"],
    )
    pipe_producer = Producer({"bootstrap.servers": pipe.bootstrap})
    pipe_producer.produce(
        pipe.topic("revocations"),
        key=other.target.key.encode(),
        value=signer_from_settings(settings).revocation(other),
    )
    assert pipe_producer.flush(10) == 0
    watcher = Watcher(settings, client_id="gateway-test").start()
    try:
        assert watcher.wait_ready(30)
        first = [
            started("wf-a", "planner", "jti-p", t=0),
            call("wf-a", "planner", "jti-p", tool="shell.exec", t=1, eid="bad"),  # revokes jti-p
            started("wf-b", "planner", "jti-q", t=0),
            call("wf-b", "planner", "jti-q", t=1, eid="fine"),
        ]
        pipe.produce(orjson.dumps(e) for e in first)
        _decisions(pipe, {"bad", "fine"})
        time.sleep(1.0)  # the view's watcher has read jti-o by now (it was there first)
        probes = [
            call("wf-b", "planner", "jti-p", t=2, eid="probe-own"),  # the worker's revocation
            call("wf-b", "planner", "jti-o", t=3, eid="probe-other"),  # another worker's
        ]
        pipe.produce(orjson.dumps(e) for e in probes)
        got = _decisions(pipe, {"bad", "fine", "probe-own", "probe-other"})
        deadline = time.monotonic() + 10
        while watcher.revocations.revoked_until("token", "jti-p") is None:
            assert time.monotonic() < deadline, "the gateway never learned of jti-p"
            time.sleep(0.1)
        for eid, token in [("bad", "jti-p"), ("probe-own", "jti-p"), ("probe-other", "jti-o")]:
            d = got[eid]
            assert (d["decision"], d["reason"]) == ("deny", "revoked"), d
            assert f"token:{token}" in d["revoked_targets"]
            assert watcher.is_revoked(token_id=token, workflow_id=d["workflow_id"])
        assert got["fine"]["decision"] == "allow"
        assert not watcher.is_revoked(token_id="jti-q", workflow_id="wf-b")
    finally:
        watcher.stop()
