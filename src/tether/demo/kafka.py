"""`tether demo --kafka`: the demo fleet through the real pipeline (Kafka, a worker, Redis)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from tether.adapters.kafka_admin import create_topics, wait_for_broker
from tether.adapters.kafka_config import consumer_config
from tether.demo.board import workload_name
from tether.demo.fleet import FleetConfig, generate, ground_truth
from tether.demo.scorecard import score
from tether.sdk.emitter import Emitter
from tether.security import peek
from tether.settings import Settings
from tether.topics import FINDINGS, REVOCATIONS


def run_kafka_demo(
    settings: Settings,
    *,
    workflows: int,
    seed: int,
    attack_rate: float,
    rate: float,
    start_worker: bool,
    out: IO[str] | None = None,
) -> int:
    """Emit the fleet to Kafka, follow findings and revocations, print a scorecard.

    Returns 0 when every injected attack was caught and no benign workflow raised anything.
    """
    out = out or sys.stdout
    wait_for_broker(settings, timeout=30)
    create_topics(settings)
    worker = _start_worker(settings, out) if start_worker else None
    try:
        return _run(settings, workflows, seed, attack_rate, rate, out)
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()


def _start_worker(settings: Settings, out: IO[str]) -> subprocess.Popen[bytes]:
    worker_id = f"demo-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ)
    env.update(
        {
            "TETHER_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "TETHER_TOPIC_PREFIX": settings.topic_prefix,
            "TETHER_PARTITIONS": str(settings.partitions),
            "TETHER_APP_ID": settings.group_id,
            "TETHER_REDIS_URL": settings.redis_url.get_secret_value(),
            "TETHER_WORKER_ID": worker_id,
        }
    )
    log = open(os.devnull, "ab")  # noqa: SIM115  # handed to the child process
    proc = subprocess.Popen(  # our own CLI with fixed arguments
        [sys.executable, "-m", "tether.cli", "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    print(f"started worker {worker_id} (pid {proc.pid}); waiting for its first heartbeat", file=out)
    consumer = _consumer(settings, [settings.topic(REVOCATIONS)], from_end=False)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("the worker exited; run `tether worker` to see why")
            msg = consumer.poll(0.2)
            if (
                msg is not None
                and not msg.error()
                and msg.key() == f"heartbeat:{worker_id}".encode()
            ):
                return proc
    finally:
        consumer.close()
    proc.terminate()
    raise RuntimeError("the worker sent no heartbeat within 90 s")


def _read(topic: str, value: bytes, revocations_topic: str) -> dict[str, Any]:
    """An output record as a dict: revocations are signed SETs (shown, not enforced, here)."""
    if topic == revocations_topic:
        return peek(value).model_dump(mode="json")
    doc: dict[str, Any] = orjson.loads(value)
    return doc


def _consumer(settings: Settings, topics: list[str], *, from_end: bool) -> Consumer:
    c = Consumer(
        consumer_config(
            settings,
            group_id=f"tether-demo-{uuid.uuid4().hex}",
            client_id="tether-demo",
            overrides={"fetch.wait.max.ms": 10, "isolation.level": "read_uncommitted"},
        )
    )
    if from_end:  # start after what is there now, whatever ran before
        tps = []
        for topic in topics:
            meta = c.list_topics(topic, timeout=10).topics[topic]
            for p in meta.partitions:
                _, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                tps.append(TopicPartition(topic, p, high))
        c.assign(tps)
    else:
        c.subscribe(topics)
    return c


def _run(
    settings: Settings, workflows: int, seed: int, attack_rate: float, rate: float, out: IO[str]
) -> int:
    start = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    cfg = FleetConfig(seed=seed, workflows=workflows, attack_rate=attack_rate, start=start)
    truth = ground_truth(cfg)
    follow = _consumer(
        settings, [settings.topic(FINDINGS), settings.topic(REVOCATIONS)], from_end=True
    )
    found: dict[str, set[str]] = defaultdict(set)
    revocations_topic = settings.topic(REVOCATIONS)  # signed SETs
    revocations = 0
    sent = 0
    began = time.monotonic()

    def drain(timeout: float) -> int:
        nonlocal revocations
        got = 0
        msg = follow.poll(timeout)
        while msg is not None:
            value = msg.value()
            if not msg.error() and value:
                doc = _read(msg.topic() or "", value, revocations_topic)
                got += 1
                if doc.get("kind") == "finding":
                    found[doc["workflow_id"]].add(doc["code"])
                    print(
                        f"{doc['severity'].upper():<8} {doc['code']:<36} {doc['workflow_id']:<22}"
                        f" {workload_name(doc['workload_id'])}",
                        file=out,
                    )
                elif doc.get("kind") == "revocation":
                    revocations += 1
                else:
                    got -= 1  # heartbeats do not count as progress
            msg = follow.poll(0)
        return got

    with Emitter(settings, client_id="tether-demo") as emitter:
        for item in generate(cfg):
            event = item.event
            emitter.emit_raw(orjson.dumps(event), event["workflow_id"].encode())
            sent += 1
            if rate > 0:
                lag = sent / rate - (time.monotonic() - began)
                if lag > 0.05:
                    drain(lag)
            if sent % 500 == 0:
                drain(0)
        emitter.flush()
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < settings.grace_s + 5:
        if drain(0.5):
            quiet_since = time.monotonic()
    follow.close()
    card = score(truth, found)
    elapsed = time.monotonic() - began
    print(
        f"\n{sent:,} events through Kafka in {elapsed:.0f} s; {sum(map(len, found.values())):,}"
        f" findings, {revocations:,} revocations",
        file=out,
    )
    for k in card.kinds:
        print(f"  {k.kind:<27}{k.injected:>4} injected{k.caught:>4} caught   {k.codes}", file=out)
    print(f"  benign workflows with findings: {len(card.benign)}", file=out)
    verdict = "PASS" if card.passed else "FAIL"
    print(f"{verdict}: {card.caught} of {card.injected} injected attacks caught", file=out)
    return 0 if card.passed else 1
