"""A real `tether worker`'s /metrics, /healthz and /readyz, scraped while it processes input,
and its JSON log lines (docs/monitoring.md)."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from pipeline import Pipeline, collect_expected, identity, replay_records
from prometheus_client.parser import text_string_to_metric_families

from tether.demo.fleet import FleetConfig, iter_json_lines
from tether.demo.malformed import malformed_lines


@pytest.fixture
def pipe(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    yield p
    p.stop_all()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310  # our loopback endpoint
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = get(f"{base}/metrics")
    assert status == 200
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(v for (n, _), v in metrics.items() if n == name)


def by_label(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str
) -> dict[str, float]:
    return {labels[0][1]: v for (n, labels), v in metrics.items() if n == name and labels}


def not_ready_then_ready(pipe: Pipeline, base: str, worker: str = "w1") -> None:
    """/readyz: 503 from the first answer (before the worker has joined its group) until the
    tables have recovered and the rest holds, then 200."""
    # The endpoint answers before the worker has joined its group: not ready yet.
    first: tuple[int, bytes] | None = None
    deadline = time.monotonic() + 30
    while first is None and time.monotonic() < deadline:
        try:
            first = get(f"{base}/readyz")
        except OSError:
            time.sleep(0.05)
    assert first is not None, pipe.log(worker)
    assert first[0] == 503
    assert orjson.loads(first[1])["checks"]["tables_recovered"] is False
    assert get(f"{base}/healthz")[0] == 200

    pipe.wait_heartbeat(worker)
    deadline = time.monotonic() + 30
    while get(f"{base}/readyz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    status, body = get(f"{base}/readyz")
    assert status == 200, body
    assert all(orjson.loads(body)["checks"].values())
    status, body = get(f"{base}/healthz")
    assert status == 200
    assert orjson.loads(body)["last_beat_s"] < 5  # the event loop's timer beats


def test_worker_metrics_move_with_its_input_and_readyz_follows_recovery(pipe: Pipeline) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    pipe.start_worker(
        "w1", env={"TETHER_METRICS_ADDR": f"127.0.0.1:{port}", "TETHER_LOG_FORMAT": "json"}
    )
    not_ready_then_ready(pipe, base)
    before = samples(base)
    assert total(before, "tether_events_total") == 0
    assert before[("tether_ready", (("check", "tables_recovered"),))] == 1

    start = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    cfg = FleetConfig(seed=5, workflows=25, attack_rate=0.4, disorder=1.0, start=start)
    lines = list(iter_json_lines(cfg)) + malformed_lines(5, 7)
    expected = replay_records(lines)
    pipe.produce(lines)
    got = collect_expected(pipe, expected, extra_s=1.0)
    assert identity(got) == identity(expected)

    after = samples(base)
    dead = len(got["deadletter"])
    assert dead == len(expected["deadletter"]) >= 7
    assert total(after, "tether_events_total") == len(lines) - dead
    assert set(by_label(after, "tether_events_total")) == {
        "workflow.started",
        "tool_call.intent",
        "delegation.granted",
        "workflow.completed",
    }
    assert total(after, "tether_deadletters_total") == dead
    reasons: dict[str, int] = {}
    for d in got["deadletter"]:
        reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
    assert by_label(after, "tether_deadletters_total") == reasons
    codes: dict[str, int] = {}
    for f in got["findings"]:
        codes[f["code"]] = codes.get(f["code"], 0) + 1
    assert codes, "the corpus has attacks"
    assert by_label(after, "tether_findings_total") == codes
    assert total(after, "tether_revocations_total") >= len(got["revocations"]) > 0
    assert total(after, "tether_decision_latency_seconds_count") >= 1
    assert total(after, "tether_epoch_commit_seconds_count") > total(
        before, "tether_epoch_commit_seconds_count"
    )
    assert total(after, "tether_outputs_published_total") > total(
        before, "tether_outputs_published_total"
    )
    assert by_label(after, "tether_state_keys")["sessions"] > 0
    assert after[("tether_feed_staleness_seconds", ())] < 5

    pipe.stop_all()
    json_log_lines(pipe.workdir / "w1.log", worker="w1")


def json_log_lines(path: Path, *, worker: str) -> None:
    """Every line the worker logged (librdkafka's too) is one JSON object with the operator's
    fields."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    assert lines
    docs = [orjson.loads(ln) for ln in lines]
    assert all({"ts", "level", "logger", "message"} <= d.keys() for d in docs)
    assert all(d["worker"] == worker for d in docs)
    assert any(d["logger"].startswith("tether") for d in docs)


def test_readyz_is_not_ready_while_a_restarted_worker_recovers_its_tables(
    pipe: Pipeline,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"TETHER_METRICS_ADDR": f"127.0.0.1:{port}"}
    pipe.start_worker("w1", env=env)
    pipe.wait_heartbeat("w1")
    start = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    lines = list(iter_json_lines(FleetConfig(seed=9, workflows=30, attack_rate=0.0, start=start)))
    pipe.produce(lines)
    deadline = time.monotonic() + 30
    sessions = 0.0
    while time.monotonic() < deadline:
        now = samples(base)
        if total(now, "tether_events_total") == len(lines):
            sessions = by_label(now, "tether_state_keys").get("sessions", 0.0)
            if sessions > 0:
                break
        time.sleep(0.3)
    assert sessions > 0
    time.sleep(1.0)  # the last state epoch reaches the changelog
    pipe.kill("w1")

    pipe.start_worker("w1b", env=env)  # its partitions and their changelogs: recovered
    not_ready_then_ready(pipe, base, "w1b")
    after = samples(base)
    assert total(after, "tether_recovered_keys_total") > 0
    assert total(after, "tether_events_total") == 0  # a new process: counters start again
