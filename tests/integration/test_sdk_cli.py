"""`tether topics create`, `tether emit` and `tether watch` against the real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from sdk_helpers import heartbeat, read_back, revocation
from tether.adapters.kafka_config import producer_config
from tether.cli_stream import emit, topics, watch
from tether.security import signer_from_settings
from tether.settings import Settings
from tether.topics import topic_specs


@pytest.fixture
def env(kafka_bootstrap, fresh_topic_prefix, kafka_admin):
    """TETHER_* variables pointing the commands at this test's own topics."""
    prefix = f"{fresh_topic_prefix}."
    yield {"TETHER_KAFKA_BOOTSTRAP": kafka_bootstrap, "TETHER_TOPIC_PREFIX": prefix}
    names = [n for n in kafka_admin.list_topics(timeout=10).topics if n.startswith(prefix)]
    if names:
        for future in kafka_admin.delete_topics(names, operation_timeout=30).values():
            future.result(30)


@pytest.fixture
def runner():
    return CliRunner()


def settings_of(env: dict[str, str]) -> Settings:
    return Settings(
        kafka_bootstrap=env["TETHER_KAFKA_BOOTSTRAP"], topic_prefix=env["TETHER_TOPIC_PREFIX"]
    )


def test_topics_create_reports_created_then_exists(runner, env):
    first = runner.invoke(topics, ["create", "--partitions", "2"], env=env)
    assert first.exit_code == 0, first.output
    names = [spec.name for spec in topic_specs(env["TETHER_TOPIC_PREFIX"])]
    lines = first.output.splitlines()
    assert [line.split()[:2] for line in lines] == [["created", name] for name in names]
    assert "cleanup.policy=compact" in lines[3]

    again = runner.invoke(topics, ["create", "--partitions", "2"], env=env)
    assert again.exit_code == 0, again.output
    assert [line.split()[0] for line in again.output.splitlines()] == ["exists"] * len(names)

    mismatch = runner.invoke(topics, ["create", "--partitions", "3"], env=env)
    assert mismatch.exit_code == 1
    assert f"topic {env['TETHER_TOPIC_PREFIX']}intents exists with 2 partitions" in mismatch.output


def test_emit_produces_every_non_blank_line_as_is(runner, env, tmp_path: Path):
    assert runner.invoke(topics, ["create", "--partitions", "2"], env=env).exit_code == 0
    lines = [
        b'{"schema_version":1,"event_type":"workflow.completed","event_id":"e1",'
        b'"occurred_at":"2026-11-28T14:00:00Z","workflow_id":"wf-1",'
        b'"agent":{"workload_id":"spiffe://acme.example/agent/a"},"outcome":"success"}',
        b"",
        b"not json at all",
        b'{"workflow_id": "wf-2", "schema_version": "1"}',
        b"   ",
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = runner.invoke(emit, [str(path)], env=env)
    assert result.exit_code == 0, result.output
    topic = f"{env['TETHER_TOPIC_PREFIX']}intents"
    assert f"emitted 3 records to {topic} (2 blank lines skipped): 3 acknowledged" in result.output

    messages = read_back(env["TETHER_KAFKA_BOOTSTRAP"], topic, 3)
    got = {m.value(): m.key() for m in messages}
    assert got == {lines[0]: b"wf-1", lines[2]: None, lines[3]: b"wf-2"}


def test_emit_reads_stdin(runner, env):
    assert runner.invoke(topics, ["create", "--partitions", "1"], env=env).exit_code == 0
    result = runner.invoke(emit, ["-", "-q"], input=b'{"workflow_id":"wf-9"}\n', env=env)
    assert result.exit_code == 0, result.output
    assert "emitted 1 records" in result.output


def test_emit_exits_1_when_delivery_fails(runner, env, tmp_path: Path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"{}\n")
    result = runner.invoke(
        emit, [str(path), "--topic", "nowhere-at-all", "--timeout", "1"], env=env
    )
    assert result.exit_code == 1
    assert "not delivered" in result.output


def test_watch_check_answers_with_its_exit_status(runner, env):
    assert runner.invoke(topics, ["create", "--partitions", "2"], env=env).exit_code == 0
    settings = settings_of(env)
    producer = Producer(producer_config(settings, client_id="test"))
    topic = settings.topic("revocations")
    rev = revocation("token", "jti-bad", start=datetime.now(UTC))
    producer.produce(
        topic, key=b"token:jti-bad", value=signer_from_settings(settings).revocation(rev)
    )
    producer.flush(10)

    stale = runner.invoke(watch, ["--check", "token:jti-ok"], env=env)
    assert stale.exit_code == 3, stale.output
    assert "no heartbeat" in stale.output

    producer.produce(
        topic,
        key=b"heartbeat:w1",
        value=signer_from_settings(settings).heartbeat(heartbeat(datetime.now(UTC))),
    )
    producer.flush(10)
    ok = runner.invoke(watch, ["--check", "token:jti-ok", "--check", "workflow:wf-1"], env=env)
    assert ok.exit_code == 0, ok.output
    assert "not revoked  token:jti-ok" in ok.output

    revoked = runner.invoke(watch, ["--check", "token:jti-bad", "--check", "token:jti-ok"], env=env)
    assert revoked.exit_code == 1, revoked.output
    assert "revoked      token:jti-bad  until " in revoked.output

    bad = runner.invoke(watch, ["--check", "jti-bad"], env=env)
    assert bad.exit_code == 2
    assert "expected KIND:ID" in bad.output


def test_watch_check_gives_up_when_the_topic_is_missing(runner, env):
    result = runner.invoke(watch, ["--check", "token:x", "--timeout", "1"], env=env)
    assert result.exit_code == 3
    assert "was not read within 1 s" in result.output


def test_watch_follows_and_prints_each_revocation(runner, env):
    assert runner.invoke(topics, ["create", "--partitions", "2"], env=env).exit_code == 0
    settings = settings_of(env)
    producer = Producer(producer_config(settings, client_id="test"))
    topic = settings.topic("revocations")
    signer = signer_from_settings(settings)  # the dev key the watcher also finds
    producer.produce(
        topic,
        key=b"token:before",
        value=signer.revocation(revocation("token", "before", start=datetime.now(UTC))),
    )
    producer.flush(10)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from tether.cli_stream import watch; watch()"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        first = proc.stdout.readline()
        assert b'"id":"before"' in first
        notes = [proc.stderr.readline()]
        while not notes[-1].startswith(b"# following") and len(notes) < 5:
            notes.append(proc.stderr.readline())  # the dev-key warning may come first
        assert notes[-1].startswith(b"# following"), notes
        producer.produce(
            topic,
            key=b"workflow:wf-7",
            value=signer.revocation(
                revocation("workflow", "wf-7", rid="rv-2", start=datetime.now(UTC))
            ),
        )
        producer.flush(10)
        second = proc.stdout.readline()
        assert b'"id":"wf-7"' in second
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert b"2 records: 2 revocations" in err
