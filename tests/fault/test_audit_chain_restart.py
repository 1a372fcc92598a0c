"""The decisions' hash chain across crashes and rebalances (docs/audit.md): a worker killed
with SIGKILL mid-stream and restarted, then a second worker joining (partitions move), leave a
log that `tether audit verify` finds intact: the decisions of input read again after the crash
are new links after the last one that reached Kafka, never a break; a partition's new owner
continues its chain from the tail. Over 20 s: marked ``soak`` (`make soak`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from pipeline import Pipeline, replay_records

from tether.cli import main
from tether.demo.fleet import FleetConfig, iter_json_lines


@pytest.fixture
def pipe(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    yield p
    p.stop_all()


def verify(pipe: Pipeline, jwks: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(
        main,
        [
            "audit",
            "verify",
            "--json",
            "--jwks",
            jwks,
            "--bootstrap",
            pipe.bootstrap,
            "--prefix",
            pipe.prefix,
        ],
        catch_exceptions=False,
    )
    return result.exit_code, orjson.loads(result.stdout)


def settle(pipe: Pipeline, jwks: str, at_least: int, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    report: dict[str, Any] = {}
    while time.monotonic() < deadline:
        _, report = verify(pipe, jwks)
        covered = all(p["after_checkpoint"] == 0 for p in report["partitions"])
        if report["records"] >= at_least and covered:
            return report
        time.sleep(1.0)
    raise AssertionError(f"the log never settled: {report}")


@pytest.mark.soak
def test_chain_survives_sigkill_and_rebalance(pipe: Pipeline, tmp_path: Path) -> None:
    start = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    lines = list(iter_json_lines(FleetConfig(seed=11, workflows=60, attack_rate=0.3, start=start)))
    third = len(lines) // 3
    home = tmp_path / "home"
    jwks = str(home / "keys" / "jwks.json")
    env = {"TETHER_HOME": str(home), "TETHER_AUDIT_CHECKPOINT_S": "0.5"}
    pipe.start_worker("w1", env=env)
    pipe.wait_heartbeat("w1")
    pipe.produce(lines[:third])
    time.sleep(1.0)
    pipe.kill("w1")  # SIGKILL: some decisions are on the topic, their input not committed
    pipe.start_worker("w1", env=env)
    pipe.wait_heartbeat("w1")
    pipe.produce(lines[third : 2 * third])
    pipe.start_worker("w2", env=env)  # a rebalance: partitions move to a new owner
    pipe.wait_heartbeat("w2")
    pipe.produce(lines[2 * third :])
    expected = len(replay_records(lines)["decisions"])
    report = settle(pipe, jwks, expected)
    assert report["ok"], report["issues"]
    assert report["records"] >= expected  # at-least-once: duplicates are new links
