"""`tether alerts` against local HTTP receivers written for the test, on the real broker.

The receivers are aiohttp servers on loopback: a generic webhook that refuses (503) for a while,
a Slack-compatible endpoint and a Splunk HEC endpoint that checks its token. What is checked:
nothing lost (every finding at or above a sink's severity reaches it, through the outage),
nothing duplicated beyond at-least-once (a finding emitted twice arrives once; a restart does not
repeat what was committed), per-sink severity filters, and a storm summarised past the limit.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from confluent_kafka import Producer

from tether.adapters.kafka_admin import create_topics
from tether.adapters.kafka_config import producer_config
from tether.models.codec import encode
from tether.models.outputs import Finding
from tether.settings import Settings
from tether.soc.alert_config import AlertsConfig
from tether.soc.alerts import AlertSink, run_alerts

T0 = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)
SEVERITIES = ["low", "medium", "high", "critical"]


class Receivers:
    """Three HTTP receivers in a thread of their own; they record what they accept."""

    def __init__(self, fail_for_s: float) -> None:
        self.fail_until = 0.0
        self.fail_for_s = fail_for_s
        self.webhook: list[tuple[dict[str, Any], str | None]] = []
        self.slack: list[dict[str, Any]] = []
        self.hec: list[dict[str, Any]] = []
        self.refused = 0
        self.hec_bad_auth = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def start_outage(self) -> None:
        self.fail_until = time.monotonic() + self.fail_for_s

    async def _webhook(self, request: web.Request) -> web.Response:
        if time.monotonic() < self.fail_until:
            self.refused += 1
            return web.Response(status=503)
        self.webhook.append((await request.json(), request.headers.get("Idempotency-Key")))
        return web.json_response({"ok": True})

    async def _slack(self, request: web.Request) -> web.Response:
        self.slack.append(await request.json())
        return web.Response(text="ok")

    async def _hec(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Splunk hec-secret":
            self.hec_bad_auth += 1
            return web.json_response({"text": "Invalid token", "code": 4}, status=403)
        self.hec.append(await request.json())
        return web.json_response({"text": "Success", "code": 0})

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hook", self._webhook)
        app.router.add_post("/slack", self._slack)
        app.router.add_post("/hec", self._hec)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture
def receivers() -> Iterator[Receivers]:
    r = Receivers(fail_for_s=4.0)
    try:
        yield r
    finally:
        r.close()


def finding(i: int, severity: str = "high") -> Finding:
    return Finding(
        finding_id=f"f-{i:05d}",
        code="destination_not_granted",
        severity=severity,  # type: ignore[arg-type]
        workflow_id=f"wf-{i % 7}",
        workload_id="spiffe://acme.example/agent/x",
        summary=f"finding {i}",
        evidence=[f"e{i}"],
        event_time=T0,
        detected_at=T0,
        response=["revoke_token"],
        owasp=["ASI02"],
        tool="crm.search",
        destination="paste.example",
    )


def publish(settings: Settings, findings: list[Finding]) -> None:
    p = Producer(producer_config(settings, client_id="test-alerts"))
    for f in findings:
        p.produce(settings.topic("findings"), encode(f), f.workflow_id.encode())
    assert p.flush(30) == 0


def run_until(
    settings: Settings, config: AlertsConfig, done: Any, timeout: float = 60.0
) -> list[AlertSink]:
    stop = threading.Event()
    result: list[list[AlertSink]] = []
    t = threading.Thread(target=lambda: result.append(run_alerts(settings, config, stop)))
    t.start()
    deadline = time.monotonic() + timeout
    try:
        while not done() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)  # let the last commit land (a commit follows each delivery)
    finally:
        stop.set()
        t.join(30)
    assert result, "run_alerts did not return"
    return result[0]


def test_sinks_deliver_everything_through_an_outage_once_each(
    kafka_bootstrap: str, fresh_topic_prefix: str, receivers: Receivers, monkeypatch: Any
) -> None:
    monkeypatch.setenv("TEST_HEC_TOKEN", "hec-secret")
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.", partitions=3
    )
    create_topics(settings)
    base = f"http://127.0.0.1:{receivers.port}"
    config = AlertsConfig.model_validate(
        {
            "sinks": [
                {
                    "name": "hook",
                    "type": "webhook",
                    "url": f"{base}/hook",
                    "min_severity": "low",
                    "rate": {"per_minute": 100000, "burst": 1000},
                    "max_backoff_s": 0.5,
                },
                {
                    "name": "slack",
                    "type": "slack",
                    "url": f"{base}/slack",
                    "min_severity": "high",
                    "rate": {"per_minute": 100000, "burst": 1000},
                },
                {
                    "name": "splunk",
                    "type": "splunk_hec",
                    "url": f"{base}/hec",
                    "token_env": "TEST_HEC_TOKEN",
                    "format": "ocsf",
                    "rate": {"per_minute": 100000, "burst": 1000},
                },
            ]
        }
    )
    first = [finding(i, SEVERITIES[i % 4]) for i in range(40)]
    receivers.start_outage()  # the webhook refuses everything for the first seconds
    publish(settings, [*first, first[3], first[17]])  # two findings emitted twice
    high = {f.finding_id for f in first if f.severity in ("high", "critical")}

    sinks = run_until(
        settings,
        config,
        lambda: len(receivers.webhook) >= 40 and len(receivers.hec) >= 40,
    )
    assert receivers.refused > 0, "the outage should have refused deliveries"
    hook_ids = [body["finding_id"] for body, _ in receivers.webhook]
    assert sorted(hook_ids) == sorted(f.finding_id for f in first)  # none lost, none twice
    assert all(body["finding_id"] == key for body, key in receivers.webhook)
    slack_ids = {
        line.split("finding `")[1].split("`")[0]
        for m in receivers.slack
        for line in m["text"].splitlines()
        if line.startswith("finding `")
    }
    assert slack_ids == high  # the severity filter
    assert len(receivers.slack) == len(high)
    hec_ids = [e["event"]["finding_info"]["uid"] for e in receivers.hec]
    assert sorted(hec_ids) == sorted(f.finding_id for f in first)
    assert all(e["sourcetype"] == "ocsf:detection_finding" for e in receivers.hec)
    assert receivers.hec_bad_auth == 0
    by_name = {s.sink.name: s for s in sinks}
    assert by_name["hook"].duplicates == 2

    # a restart resumes from the committed position: nothing of the first run is repeated
    second = [finding(100 + i) for i in range(5)]
    publish(settings, second)
    run_until(settings, config, lambda: len(receivers.webhook) >= 45)
    hook_ids = [body["finding_id"] for body, _ in receivers.webhook]
    assert sorted(hook_ids) == sorted(f.finding_id for f in [*first, *second])


def test_a_stop_during_an_outage_commits_nothing_undelivered(
    kafka_bootstrap: str, fresh_topic_prefix: str, receivers: Receivers
) -> None:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.", partitions=2
    )
    create_topics(settings)
    receivers.fail_for_s = 3600.0
    receivers.start_outage()
    config = AlertsConfig.model_validate(
        {
            "sinks": [
                {
                    "name": "hook",
                    "type": "webhook",
                    "url": f"http://127.0.0.1:{receivers.port}/hook",
                    "max_backoff_s": 0.2,
                }
            ]
        }
    )
    findings = [finding(i) for i in range(10)]
    publish(settings, findings)
    run_until(settings, config, lambda: receivers.refused >= 5, timeout=30)
    assert receivers.webhook == []
    receivers.fail_until = 0.0  # the receiver comes back; the sink restarts
    run_until(settings, config, lambda: len(receivers.webhook) >= 10)
    assert sorted(b["finding_id"] for b, _ in receivers.webhook) == [f.finding_id for f in findings]


def test_a_storm_is_summarised_not_flooded(
    kafka_bootstrap: str, fresh_topic_prefix: str, receivers: Receivers
) -> None:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.", partitions=2
    )
    create_topics(settings)
    config = AlertsConfig.model_validate(
        {
            "sinks": [
                {
                    "name": "slack",
                    "type": "webhook",
                    "url": f"http://127.0.0.1:{receivers.port}/hook",
                    "rate": {"per_minute": 6, "burst": 5, "summary_s": 1.0},
                }
            ]
        }
    )
    storm = [finding(i) for i in range(300)]
    publish(settings, storm)

    def summarised() -> int:
        singles = sum(1 for b, _ in receivers.webhook if b.get("kind") == "finding")
        held = sum(b["count"] for b, _ in receivers.webhook if b.get("kind") == "finding_summary")
        return singles + held

    run_until(settings, config, lambda: summarised() >= 300)
    singles = [b for b, _ in receivers.webhook if b.get("kind") == "finding"]
    summaries = [b for b, _ in receivers.webhook if b.get("kind") == "finding_summary"]
    assert len(singles) <= 10  # the burst, and what the bucket refilled meanwhile
    assert 1 <= len(summaries) <= 10
    assert len(singles) + sum(s["count"] for s in summaries) == 300  # every finding accounted for
    assert all(s["by_code"] == {"destination_not_granted": s["count"]} for s in summaries)
