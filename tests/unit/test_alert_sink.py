"""An alert sink's decisions without a network: filters, de-dup, refusals, storm summaries."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import orjson

from tether.models.codec import encode
from tether.models.outputs import Finding
from tether.soc.alert_config import SinkConfig
from tether.soc.alerts import AlertSink, PermanentError, RetryAfter, TokenBucket
from tether.soc.relay import Record

T0 = datetime(2026, 12, 6, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Poster:
    """Records bodies; fails as told."""

    def __init__(self, fail: list[Exception] | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail = fail or []

    def post(self, body: dict[str, Any], key: str | None) -> None:
        if self.fail:
            raise self.fail.pop(0)
        self.bodies.append(body)


def rec(i: int, severity: str = "high") -> Record:
    f = Finding(
        finding_id=f"f-{i}",
        code="tool_not_granted",
        severity=severity,  # type: ignore[arg-type]
        workflow_id="wf",
        workload_id="w",
        summary="s",
        evidence=[],
        event_time=T0,
        detected_at=T0,
        response=["revoke_token"],
        owasp=[],
    )
    return Record("t", 0, i, None, encode(f))


def sink(poster: Poster, clock: Clock, **kw: Any) -> AlertSink:
    cfg = SinkConfig.model_validate(
        {"name": "s", "type": "webhook", "url": "http://127.0.0.1:9/", "max_backoff_s": 0.01, **kw}
    )
    return AlertSink(cfg, threading.Event(), poster=poster, clock=clock)  # type: ignore[arg-type]


def test_filters_dedups_and_survives_unreadable_records() -> None:
    p, c = Poster(), Clock()
    s = sink(p, c, min_severity="high")
    junk = Record("t", 0, 99, None, b"{not json")
    assert s.deliver([rec(1), rec(2, "low"), rec(1), junk, rec(3, "critical")])
    assert [b["finding_id"] for b in p.bodies] == ["f-1", "f-3"]
    assert (s.filtered, s.duplicates, s.unreadable) == (1, 1, 1)


def test_retryable_failures_are_retried_and_permanent_ones_passed_over() -> None:
    p = Poster([OSError("refused"), RetryAfter(503, 0.0), RetryAfter(429, None)])
    s = sink(p, Clock())
    assert s.deliver([rec(1)])
    assert [b["finding_id"] for b in p.bodies] == ["f-1"]
    p.fail = [PermanentError("HTTP 400")] * 3
    assert s.deliver([rec(2), rec(3)])
    assert s.rejected == 1
    assert [b["finding_id"] for b in p.bodies] == ["f-1", "f-3"]


def test_a_stop_during_retries_reports_an_unfinished_delivery() -> None:
    p = Poster([OSError("down")] * 1000)
    s = sink(p, Clock())
    s.stop.set()
    assert not s.deliver([rec(1)])


def test_a_storm_becomes_one_summary_per_window() -> None:
    p, c = Poster(), Clock()
    s = sink(p, c, rate={"per_minute": 60, "burst": 3, "summary_s": 10})
    assert s.deliver([rec(i) for i in range(50)])
    assert len(p.bodies) == 3
    assert not s.idle()  # a summary is owed: the relay must not commit yet
    c.t = 10.0
    assert s.idle()
    summary = p.bodies[-1]
    assert summary["kind"] == "finding_summary"
    assert summary["count"] == 47
    assert orjson.dumps(summary)


def test_token_bucket_refills() -> None:
    c = Clock()
    b = TokenBucket(per_minute=60, burst=2, clock=c)
    assert [b.take() for _ in range(3)] == [True, True, False]
    c.t = 1.0
    assert b.take()
    assert not b.take()


def test_agent_chosen_text_cannot_ping_or_link_in_slack() -> None:
    p, c = Poster(), Clock()
    s = sink(p, c, type="slack")
    f = Finding.model_validate(
        {
            **orjson.loads(rec(1).value),
            "workload_id": "<!channel>",
            "summary": "see <https://evil.example|the docs> & <@U123>",
            "destination": "`<!here>`",
            "delegation_chain": ["<!everyone>", "x"],
        }
    )
    assert s.deliver([Record("t", 0, 1, None, encode(f))])
    text = p.bodies[0]["text"]
    for raw in ("<!channel>", "<!here>", "<!everyone>", "<https://", "<@U123>"):
        assert raw not in text
    assert "&lt;!channel&gt;" in text


def test_a_bad_config_is_a_clear_error_before_anything_starts(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from tether.cli import main

    cases = {
        "sinks: []\n": "sinks",
        "sinks:\n  - {name: a, type: pager, url: 'http://x'}\n": "type",
        "sinks:\n  - {name: a, type: webhook, url: 'not a url'}\n": "url",
        "sinks:\n  - {name: a, type: webhook, url: 'http://x'}\n"
        "  - {name: a, type: slack, url: 'http://y'}\n": "unique",
        "sinks:\n  - {name: s, type: splunk_hec, url: 'http://x', token_env: NO_SUCH_VAR_H9}\n": (
            "NO_SUCH_VAR_H9"
        ),
    }
    for i, (text, word) in enumerate(cases.items()):
        path = tmp_path / f"c{i}.yaml"
        path.write_text(text)
        result = CliRunner().invoke(main, ["alerts", "--config", str(path)])
        assert result.exit_code == 1, (text, result.output)
        assert "Traceback" not in result.output
        assert word in result.output, (text, result.output)
