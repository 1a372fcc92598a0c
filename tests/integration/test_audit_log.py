"""The tamper-evident decision log on the real broker (docs/audit.md): a `tether worker` writes
chained decisions and signed checkpoints; `tether audit verify` passes on the untouched topic
and names each tampering of a copy of it (one decision changed, one removed, two swapped, one
inserted, the tail truncated); `tether audit export` writes a bundle that verifies offline."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from pipeline import PARTITIONS, Pipeline, replay_records

from tether.adapters.kafka_admin import create_topics
from tether.audit.kafka import Stored, read_topic
from tether.cli import main
from tether.demo.fleet import FleetConfig, iter_json_lines
from tether.settings import Settings


@pytest.fixture
def pipe(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    yield p
    p.stop_all()


def audit(pipe: Pipeline, *args: str) -> tuple[int, dict[str, Any]]:
    """Run `tether audit ...` with --json; (exit code, report)."""
    result = CliRunner().invoke(
        main,
        ["audit", *args, "--json", "--bootstrap", pipe.bootstrap, "--prefix", pipe.prefix],
        catch_exceptions=False,
    )
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, orjson.loads(result.stdout)


def wait_covered(
    pipe: Pipeline, jwks: str, decisions: int, timeout: float = 60.0, quiet_s: float = 3.0
) -> dict[str, Any]:
    """Until at least ``decisions`` decisions are on the topic, each partition's last link is
    checkpointed, and nothing new was written for ``quiet_s`` (a pending decision's final one and
    late updates follow a grace period later: a snapshot taken earlier would miss links that a
    later checkpoint covers)."""
    deadline = time.monotonic() + timeout
    report: dict[str, Any] = {}
    seen, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        _, report = audit(pipe, "verify", "--jwks", jwks)
        parts = report["partitions"]
        if report["records"] != seen:
            seen, since = report["records"], time.monotonic()
        covered = all(p["after_checkpoint"] == 0 for p in parts)
        if seen >= decisions and covered and time.monotonic() - since >= quiet_s:
            return report
        time.sleep(0.5)
    raise AssertionError(f"decisions never all checkpointed: {report}")


def copy_topic(pipe: Pipeline, name: str, records: list[Stored]) -> None:
    admin = AdminClient({"bootstrap.servers": pipe.bootstrap})
    topic = pipe.topic(name)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": pipe.bootstrap, "enable.idempotence": True})
    for r in records:
        producer.produce(topic, value=r.value, key=r.key, partition=r.partition)
    assert producer.flush(30) == 0


def by_partition(records: list[Stored], partition: int) -> list[Stored]:
    return [r for r in records if r.partition == partition]


def change(records: list[Stored]) -> list[Stored]:
    r = records[2]
    value = r.value.replace(b'"decision":"deny"', b'"decision":"allow"')
    if value == r.value:
        value = r.value.replace(b'"decision":"allow"', b'"decision":"deny"')
    return [*records[:2], Stored(r.partition, r.offset, r.key, value), *records[3:]]


def remove(records: list[Stored]) -> list[Stored]:
    return [*records[:2], *records[3:]]


def swap(records: list[Stored]) -> list[Stored]:
    return [*records[:2], records[3], records[2], *records[4:]]


def insert(records: list[Stored]) -> list[Stored]:
    r = records[2]
    forged = orjson.loads(r.value)
    del forged["chain"]
    forged["event_id"] = "forged-1"
    return [*records[:3], Stored(r.partition, 0, r.key, orjson.dumps(forged)), *records[3:]]


def truncate(records: list[Stored]) -> list[Stored]:
    return records[:-2]


TAMPERINGS: dict[str, tuple[Callable[[list[Stored]], list[Stored]], str]] = {
    "changed": (change, "changed"),
    "removed": (remove, "removed"),
    "swapped": (swap, "reordered"),
    "inserted": (insert, "inserted"),
    "truncated": (truncate, "truncated"),
}


def test_audit_verify_passes_untouched_detects_each_tampering_and_exports(
    pipe: Pipeline, tmp_path: Path
) -> None:
    start = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    lines = list(iter_json_lines(FleetConfig(seed=7, workflows=12, attack_rate=0.3, start=start)))
    # the final decision of every intent (pending ones and late updates come on top)
    expected = len({d["event_id"] for d in replay_records(lines)["decisions"] if d["final"]})
    home = tmp_path / "home"
    jwks = str(home / "keys" / "jwks.json")
    pipe.start_worker("w1", env={"TETHER_HOME": str(home), "TETHER_AUDIT_CHECKPOINT_S": "0.3"})
    pipe.wait_heartbeat("w1")
    pipe.produce(lines)

    report = wait_covered(pipe, jwks, expected)
    assert report["ok"], report["issues"]
    assert report["records"] >= expected

    settings = Settings(kafka_bootstrap=pipe.bootstrap, topic_prefix=pipe.prefix)
    stored = read_topic(settings, pipe.topic("decisions")).records
    busiest = max(range(PARTITIONS), key=lambda p: len(by_partition(stored, p)))
    assert len(by_partition(stored, busiest)) >= 6
    checkpoints = pipe.topic("audit-checkpoints")

    code, report = audit(pipe, "verify", "--jwks", jwks, "--topic", pipe.topic("decisions"))
    assert code == 0
    copy_topic(pipe, "copy-untouched", stored)
    code, report = audit(
        pipe,
        "verify",
        "--jwks",
        jwks,
        "--topic",
        pipe.topic("copy-untouched"),
        "--checkpoints-topic",
        checkpoints,
    )
    assert code == 0, report["issues"]

    for name, (tamper, kind) in TAMPERINGS.items():
        records = [r for r in stored if r.partition != busiest]
        records += tamper(by_partition(stored, busiest))
        copy_topic(pipe, f"copy-{name}", records)
        code, report = audit(
            pipe,
            "verify",
            "--jwks",
            jwks,
            "--topic",
            pipe.topic(f"copy-{name}"),
            "--checkpoints-topic",
            checkpoints,
        )
        assert code == 1, name
        assert [(i["kind"], i["partition"]) for i in report["issues"]] == [(kind, busiest)], (
            name,
            report["issues"],
        )

    workflow = orjson.loads(by_partition(stored, busiest)[0].value)["workflow_id"]
    bundle = tmp_path / "wf.bundle.json"
    result = CliRunner().invoke(
        main,
        [
            "audit",
            "export",
            workflow,
            "--out",
            str(bundle),
            "--jwks",
            jwks,
            "--bootstrap",
            pipe.bootstrap,
            "--prefix",
            pipe.prefix,
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    doc = orjson.loads(bundle.read_bytes())
    assert doc["events"]
    assert doc["checkpoints"]
    code, report = audit(pipe, "verify", "--bundle", str(bundle))
    assert code == 0, report["issues"]
    # an auditor's copy with one of the workflow's decisions altered fails offline
    segment = doc["decisions"][str(busiest)]
    mine = next(i for i in segment if "value" in i)
    mine["value"] = (
        mine["value"]
        .replace(workflow, workflow + "x", 1)
        .replace(workflow + "x", workflow, 1)
        .replace('"tool":"', '"tool":"x', 1)
    )
    bundle.write_bytes(orjson.dumps(doc))
    code, report = audit(pipe, "verify", "--bundle", str(bundle))
    assert code == 1
    assert [i["kind"] for i in report["issues"]] == ["changed"]


def test_decisions_retention_is_a_setting_applied_to_new_and_existing_topics(
    kafka_bootstrap: str, fresh_topic_prefix: str
) -> None:
    def retention(settings: Settings, name: str) -> str:
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        resource = ConfigResource(ConfigResource.Type.TOPIC, settings.topic(name))
        configs = admin.describe_configs([resource])[resource].result(30)
        return str(configs["retention.ms"].value)

    base = {"kafka_bootstrap": kafka_bootstrap, "topic_prefix": fresh_topic_prefix}
    first = Settings.model_validate({**base, "decisions_retention_ms": 86_400_000})
    create_topics(first)
    assert retention(first, "decisions") == "86400000"
    assert retention(first, "audit-checkpoints") == "86400000"
    forever = Settings.model_validate({**base, "decisions_retention_ms": -1})
    create_topics(forever)  # the topics exist: the changed setting is applied to them

    def applied(name: str) -> str:  # a broker serves an altered config once its metadata has it
        deadline = time.monotonic() + 15.0
        value = retention(forever, name)
        while value != "-1" and time.monotonic() < deadline:
            time.sleep(0.2)
            value = retention(forever, name)
        return value

    assert applied("decisions") == "-1"
    assert applied("audit-checkpoints") == "-1"
    assert retention(forever, "intents") == "604800000"  # other topics keep their own
