"""End to end through real components: an agent's Emitter, a `tether worker`, a gateway's
Watcher, and the Redis registry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from pipeline import Pipeline

from tether.sdk.emitter import Emitter
from tether.sdk.watcher import Watcher
from tether.settings import Settings

ORG = "spiffe://acme.example/agent/"


@pytest.fixture
def pipe(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    yield p
    p.stop_all()


def test_broken_handoff_is_revoked_at_the_gateway_and_in_redis(pipe: Pipeline) -> None:
    settings = Settings(
        kafka_bootstrap=pipe.bootstrap, topic_prefix=pipe.prefix, partitions=4, staleness_s=5.0
    )
    pipe.start_worker("w1")
    pipe.wait_heartbeat("w1")
    watcher = Watcher(settings, client_id="gateway-test").start()
    try:
        assert watcher.wait_ready(30)
        now = datetime.now(UTC)
        token = f"jti-sub-{pipe.prefix}"

        def cred(holder: str, jti: str) -> dict[str, object]:
            return {
                "token_id": jti,
                "issuer": "https://sts.acme.example",
                "subject": ORG + holder,
                "scopes": ["crm:read"],
                "issued_at": now - timedelta(seconds=30),
                "expires_at": now + timedelta(minutes=10),
            }

        with Emitter(settings, client_id="agent-test") as emitter:
            emitter.workflow_started(
                workflow_id="wf-e2e",
                agent=ORG + "planner",
                credential=cred("planner", "jti-p"),
                grant={
                    "task_type": "triage",
                    "purpose": "answer a ticket",
                    "scopes": ["crm:read"],
                    "tools": ["crm.search"],
                    "max_sensitivity": "internal",
                    "destinations": [],
                    "not_after": now + timedelta(hours=1),
                    "autonomy": "low",
                },
                occurred_at=now,
                wait=True,
            )
            # the summarizer acts although nobody delegated to it: a broken handoff
            emitter.tool_call_intent(
                workflow_id="wf-e2e",
                agent=ORG + "summarizer",
                credential=cred("summarizer", token),
                action={
                    "tool": "crm.search",
                    "operation": "read",
                    "resource": "crm://a/1",
                    "destination": "crm.internal",
                    "data_sensitivity": "internal",
                },
                occurred_at=now + timedelta(seconds=1),
                wait=True,
            )
        assert not watcher.is_revoked(token_id=token, tier="default")

        deadline = time.monotonic() + 30  # grace (2 s in tests) + processing-time backstop
        while time.monotonic() < deadline and not watcher.is_revoked(token_id=token):
            time.sleep(0.1)
        assert watcher.is_revoked(token_id=token), pipe.log("w1")
        assert watcher.is_revoked(workflow_id="wf-e2e")
        assert not watcher.is_revoked(token_id="jti-p")

        r = redis.Redis.from_url(pipe.redis_url)
        deadline = time.monotonic() + 10
        key = f"tether:revoked:token:{token}"
        while time.monotonic() < deadline and not r.exists(key):
            time.sleep(0.1)
        assert r.exists(key)
        assert 0 < r.pttl(key) <= 16 * 60 * 1000  # expires at not_after (token expiry + margin)
        assert r.exists("tether:revoked:workflow:wf-e2e")
    finally:
        watcher.stop()
