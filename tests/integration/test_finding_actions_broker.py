"""`tether finding ack|resolve|suppress` on the real broker: the signed record on
<prefix>finding-actions, the suppression in the tuning file (scoped from the finding tether
published), and a worker-signed action refused."""

from __future__ import annotations

import time
from pathlib import Path

from click.testing import CliRunner
from confluent_kafka import Consumer, Producer, TopicPartition

from builders import call, started
from scenarios import run
from tether.adapters.kafka_admin import create_topics
from tether.adapters.kafka_config import consumer_config, producer_config
from tether.cli import main
from tether.finding_actions import verify_action
from tether.models.codec import encode
from tether.security import generate_key
from tether.security.keys import write_private_key
from tether.security.sets import SetSigner, StaticKeys
from tether.settings import Settings
from tether.tuning import load_tuning

OP = "urn:tether:operator"


def _records(settings: Settings, topic: str, expect: int, timeout: float = 10.0) -> list[bytes]:
    c = Consumer(consumer_config(settings, group_id=f"{topic}.t", client_id="t"))
    c.assign([TopicPartition(topic, 0, 0)])
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(out) < expect:
        for m in c.consume(10, 0.5):
            if m.error() is None and m.value():
                out.append(m.value())
    time.sleep(0.5)
    out += [m.value() for m in c.consume(10, 0.5) if m.error() is None]
    c.close()
    return out


def test_suppress_ack_and_a_worker_key_refused(
    kafka_bootstrap: str, fresh_topic_prefix: str, tmp_path: Path
) -> None:
    prefix = f"{fresh_topic_prefix}."
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, partitions=1)
    create_topics(settings)
    events = [
        started("wf-7", "exporter", "tok-e"),
        call("wf-7", "exporter", "tok-e", tool="crm.export", t=2),
    ]
    (finding,) = run(events).out.findings
    p = Producer(producer_config(settings, client_id="t"))
    p.produce(settings.topic("findings"), key=b"wf-7", value=encode(finding))
    assert p.flush(10) == 0

    op_key = tmp_path / "op.jwk.json"
    op = generate_key("ES256", issuer=OP)
    write_private_key(op_key, op)
    worker_key = tmp_path / "worker.jwk.json"
    write_private_key(worker_key, generate_key("ES256", issuer="urn:tether:monitor"))
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text("# reviewed\ncodes:\n  unknown_workflow:\n    enabled: false\n")
    tuning.chmod(0o644)
    env = {"TETHER_KAFKA_BOOTSTRAP": kafka_bootstrap, "TETHER_TOPIC_PREFIX": prefix}
    cli = CliRunner()

    res = cli.invoke(
        main,
        [
            "finding",
            "suppress",
            finding.finding_id,
            "--reason",
            "approved export CHG-42",
            "--by",
            "alice",
            "--until",
            "7d",
            "--key",
            str(op_key),
            "--tuning",
            str(tuning),
        ],
        env=env,
    )
    assert res.exit_code == 0, res.output
    text = tuning.read_text()
    assert text.startswith("# reviewed\n")
    cfg = load_tuning(tuning, Settings().detection(tuning=False))
    (exc,) = cfg.exceptions
    assert exc.workload == finding.workload_id
    assert exc.codes == {finding.code}
    assert exc.workflow == "wf-7"
    assert exc.tool == "crm.export"
    assert not cfg.enabled("unknown_workflow"), "the rest of the file is kept"

    res = cli.invoke(
        main,
        [
            "finding",
            "ack",
            finding.finding_id,
            "--reason",
            "triaging",
        ],
        env={**env, "TETHER_OPERATOR_KEY": str(op_key), "TETHER_OPERATOR_NAME": "bob"},
    )
    assert res.exit_code == 0, res.output
    res = cli.invoke(
        main,
        ["finding", "resolve", finding.finding_id, "--reason", "x", "--key", str(worker_key)],
        env=env,
    )
    assert res.exit_code != 0
    assert "operator" in res.output

    op_pub = SetSigner(op, issuer=OP).public_jwk()
    got = _records(settings, settings.topic("finding-actions"), 2)
    assert len(got) == 2, "the worker-keyed action was never published"
    actions = [verify_action(v, StaticKeys([op_pub])) for v in got]
    assert [(a.action, a.by) for a in actions] == [("suppress", "alice"), ("ack", "bob")]
    sup = actions[0]
    assert sup.exception == exc.id
    assert sup.tuning_revision == cfg.tuning_revision
    assert sup.workload_id == finding.workload_id
    assert sup.until is not None

    # the same pattern replayed with the file: reported with the exception, nothing revoked
    again = run(
        [
            started("wf-7", "exporter", "tok-f", t=10),
            call("wf-7", "exporter", "tok-f", tool="crm.export", t=12),
        ],
        cfg,
    )
    tng = [f for f in again.out.findings if f.code == finding.code]
    assert tng
    assert all(f.exception == exc.id for f in tng)
    assert not [r for r in again.out.revocations if r.reason == finding.code]


def test_suppress_of_an_unknown_finding_changes_nothing(
    kafka_bootstrap: str, fresh_topic_prefix: str, tmp_path: Path
) -> None:
    prefix = f"{fresh_topic_prefix}."
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, partitions=1)
    create_topics(settings)
    op_key = tmp_path / "op.jwk.json"
    write_private_key(op_key, generate_key("ES256", issuer=OP))
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text("codes: {}\n")
    res = CliRunner().invoke(
        main,
        [
            "finding",
            "suppress",
            "f-nope",
            "--reason",
            "r",
            "--key",
            str(op_key),
            "--tuning",
            str(tuning),
            "--by",
            "a",
        ],
        env={"TETHER_KAFKA_BOOTSTRAP": kafka_bootstrap, "TETHER_TOPIC_PREFIX": prefix},
    )
    assert res.exit_code == 1
    assert "not found" in res.output
    assert tuning.read_text() == "codes: {}\n"
    assert _records(settings, settings.topic("finding-actions"), 1, timeout=2) == []
