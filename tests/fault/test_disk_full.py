"""The broker's log directory runs out of space mid-stream; then the space comes back. Issue 24.

A private Apache Kafka runs with its log directory on a tmpfs of its own (``net.TmpfsKafka``:
the test mounts it, as root). The worker is fed at a steady rate; mid-stream a filler file takes
all but 64 KiB of the volume, so the broker's next appends fail with ``No space left on
device``. Apache Kafka then takes the log directory offline, and with its only directory (which
also holds the KRaft metadata log) gone the broker stops. The volume stays full for
``DISK_FULL_S``; then the filler is removed (the space freed, as an operator would) and the
broker is started again on the same directory (a stopped broker does not bring an offline
directory back by itself; one still running is stopped first).

What must hold, and the figures:

- **nothing acknowledged is lost**: every revocation the tap read before the disk filled (the
  tap reads up to the high watermark: acknowledged records) is read again from the restarted
  broker, and the intents topic holds at least every record the feeder had acknowledged;
- the same worker process resumes by itself and publishes every revocation ``tether replay``
  expects (lost 0), and commits all of its input.

Run with ``make faults-net`` (root; not part of ``make test``). Sizes: ``TETHER_FAULT_*``:
``DISK_EVENTS`` (4,000), ``DISK_RATE`` events/s (200), ``DISK_FULL_S`` (10), ``DISK_MB`` (256),
``SEED``, ``TIMEOUT`` seconds (300).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from corpus import fleet_lines
from feed import decode_feed
from net import TmpfsKafka
from pipeline import PARTITIONS
from private_services import _gone
from scenario import FAST, Scenario, knob, wait_until
from tap import Identity, revocation_identity

pytestmark = [pytest.mark.faults_net, pytest.mark.timeout(900)]

SCENARIO = "disk_full"


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[TmpfsKafka]:
    if os.geteuid() != 0:
        pytest.skip("mounting the broker's tmpfs needs root")
    broker = TmpfsKafka(tmp_path, size_mb=int(knob(FAST, "DISK_MB", 256, 256)))
    try:
        broker.up()
        yield broker
    finally:
        broker.down()


@pytest.fixture
def run(kafka: TmpfsKafka, tmp_path: Path) -> Iterator[Scenario]:
    scenario = Scenario(SCENARIO, FAST, kafka.bootstrap, kafka.redis_url, tmp_path)
    yield scenario
    scenario.close()


def _read_topic(bootstrap: str, topic: str, timeout: float = 60.0) -> list[tuple[int, bytes]]:
    """Every record of ``topic`` from its start to its end now: (partition, value)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"disk-full-{os.getpid()}",
            "enable.auto.commit": False,
        }
    )
    try:
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in range(PARTITIONS)
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        out: list[tuple[int, bytes]] = []
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + timeout
        while len(done) < PARTITIONS and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is not None:
                    continue
                p = msg.partition()
                out.append((p, msg.value() or b""))
                if msg.offset() + 1 >= ends[p]:
                    done.add(p)
        assert len(done) == PARTITIONS, f"{topic} not read to its end: {ends}"
        return out
    finally:
        consumer.close()


def _revocations(records: list[tuple[int, bytes]]) -> set[Identity]:
    out: set[Identity] = set()
    for _, value in records:
        doc = decode_feed(value) if value else None
        if doc is not None and doc.get("kind") != "heartbeat":
            out.add(revocation_identity(doc))
    return out


def test_a_full_broker_disk_loses_nothing_acknowledged_and_the_pipeline_resumes(
    run: Scenario, kafka: TmpfsKafka
) -> None:
    variant = FAST
    events, rate = (
        int(knob(variant, "DISK_EVENTS", 4_000, 4_000)),
        knob(variant, "DISK_RATE", 200, 200),
    )
    full_s, timeout = knob(variant, "DISK_FULL_S", 10, 10), knob(variant, "TIMEOUT", 300, 300)
    lines = fleet_lines(events, seed=int(knob(variant, "SEED", 47, 47)), end_before_now_s=900)
    expected = run.replay(lines)
    run.figures.events_in = len(lines)
    run.start()
    assert run.tap is not None
    run.launch("w1")
    run.wait_up("w1", timeout=180)
    pid = run.pid("w1")
    feeder = run.feed(lines, rate=rate)
    wait_until(lambda: feeder.sent >= len(lines) // 3, timeout, "a third of the input produced")

    used_before = kafka.used_bytes()
    acked_before_fill = feeder.sent
    acknowledged = set(run.tap.revocations())  # read up to the high watermark: acknowledged
    filled_at = time.time()
    filler = kafka.fill(leave_bytes=64 * 1024)
    broker_pid = kafka.pid
    # The broker meets the full disk on its next appends (the input keeps coming).
    stopped_s: float | None = None
    try:
        stopped_s = wait_until(
            lambda: broker_pid is None or _gone(broker_pid),
            full_s,
            "the broker to stop on the full disk",
            interval=0.2,
        )
    except AssertionError:
        stopped_s = None  # still running (its directory offline, or nothing appended yet)
    time.sleep(max(0.0, full_s - (time.time() - filled_at)))
    acknowledged |= {i for i, n in run.tap.revocations().items() if n}  # the tap went on reading
    log_tail = kafka.tail()
    no_space = "No space left on device" in log_tail or "No space left" in (
        (kafka.kafka_dir / "kafka.log").read_text(errors="replace")
    )

    kafka.release()  # the operator frees space
    kafka.stop_broker(signal.SIGTERM)  # a no-op if it stopped by itself
    kafka.start_broker()
    restarted = time.time()
    back_s = run.wait_up("w1", timeout=timeout, since=restarted)

    feeder.join(timeout)
    run.wait_for_revocations(expected, timeout)
    lost = run.count_revocations(expected)
    reread = _revocations(_read_topic(run.bootstrap, run.topic("revocations")))
    acknowledged_lost = acknowledged - reread
    intents_on_log = sum(run.ends("intents").values())
    run.figures.extra.update(
        disk_mb=kafka.size_mb,
        disk_used_before_fill_kib=used_before // 1024,
        filler_mib=round(filler / (1 << 20), 1),
        disk_full_s=round(restarted - filled_at, 1),
        broker_stopped_by_itself_s=None if stopped_s is None else round(stopped_s, 1),
        broker_logged_no_space=no_space,
        revocations_acknowledged_before_restart=len(acknowledged),
        acknowledged_revocations_lost=len(acknowledged_lost),
        input_acked_before_fill=acked_before_fill,
        input_acked=feeder.sent,
        input_on_log_after_restart=intents_on_log,
        heartbeat_back_after_restart_s=round(back_s, 1),
        same_pid=run.pid("w1") == pid,
        lag_at_end=run.lag(),
    )
    run.report()
    run.assert_alive("w1")
    assert no_space, f"the broker never met the full disk: {log_tail}"
    assert not acknowledged_lost, f"acknowledged revocations lost: {sorted(acknowledged_lost)[:5]}"
    assert intents_on_log >= feeder.sent, "acknowledged input records lost"
    assert run.pid("w1") == pid
    assert not lost, f"{len(lost)} revocations lost: {sorted(lost)[:5]}\n{run.log('w1')}"
    assert run.lag() == 0, "the group did not commit all input after the restart"
