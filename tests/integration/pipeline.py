"""Driving real `tether worker` processes against the real broker, for pipeline tests."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from tether.core import Context, DetectionConfig, Monitor
from tether.models.codec import decode_event
from tether.policy.bind import CedarCallPolicy
from tether.replay import Replayer
from tether.security import peek

GRACE = 2.0
PARTITIONS = 4
KINDS = ("findings", "revocations", "decisions", "deadletter")


@dataclass
class Pipeline:
    """One isolated pipeline: its own topic prefix and consumer group."""

    bootstrap: str
    redis_url: str
    workdir: Path
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}.")
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def env(self, worker_id: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "TETHER_KAFKA_BOOTSTRAP": self.bootstrap,
                "TETHER_REDIS_URL": self.redis_url,
                "TETHER_TOPIC_PREFIX": self.prefix,
                "TETHER_APP_ID": f"{self.prefix}monitor",
                "TETHER_PARTITIONS": str(PARTITIONS),
                "TETHER_GRACE_S": str(GRACE),
                "TETHER_WORKER_ID": worker_id,
                "TETHER_HEARTBEAT_S": "0.5",
            }
        )
        return env

    def start_worker(
        self, worker_id: str = "w1", env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{worker_id}.log", "ab")  # noqa: SIM115  # owned by the process
        proc = subprocess.Popen(  # our own CLI, fixed arguments
            [sys.executable, "-m", "tether.cli", "worker", "--loglevel", "info"],
            env={**self.env(worker_id), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers[worker_id] = proc
        return proc

    def wait_heartbeat(self, worker_id: str, timeout: float = 60.0) -> None:
        """Wait until ``worker_id`` publishes a heartbeat (it is up and its tables recovered)."""
        deadline = time.monotonic() + timeout
        with self.consumer([self.topic("revocations")], from_end=False) as c:
            while time.monotonic() < deadline:
                proc = self.workers.get(worker_id)
                if proc is not None and proc.poll() is not None:
                    raise AssertionError(f"worker {worker_id} exited: {self.log(worker_id)}")
                msg = c.poll(0.2)
                if msg is None or msg.error():
                    continue
                if msg.key() == f"heartbeat:{worker_id}".encode():
                    return
        raise AssertionError(f"no heartbeat from {worker_id} in {timeout}s: {self.log(worker_id)}")

    def log(self, worker_id: str) -> str:
        path = self.workdir / f"{worker_id}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"

    def kill(self, worker_id: str, sig: int = signal.SIGKILL) -> None:
        proc = self.workers.pop(worker_id)
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for worker_id in list(self.workers):
            proc = self.workers[worker_id]
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            del self.workers[worker_id]

    def produce(self, lines: Iterable[bytes]) -> int:
        """Produce JSON Lines to the intents topic as any Kafka client would (key: workflow_id)."""
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})
        n = 0
        for line in lines:
            if not line.strip():
                continue
            producer.produce(self.topic("intents"), value=line, key=workflow_key(line))
            n += 1
            if n % 5000 == 0:
                producer.poll(0)
        assert producer.flush(30) == 0
        return n

    @contextmanager
    def consumer(self, topics: list[str], *, from_end: bool = False) -> Iterator[Consumer]:
        c = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"peek-{uuid.uuid4().hex}",
                "auto.offset.reset": "latest" if from_end else "earliest",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        c.subscribe(topics)
        try:
            yield c
        finally:
            c.close()

    def collect(
        self, *, quiet_s: float = 4.0, timeout: float = 120.0, until: int | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """Read every output topic from the start until nothing new arrives for ``quiet_s``
        (heartbeats aside), or until ``until`` non-heartbeat records were read."""
        out: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
        names = {self.topic(k): k for k in KINDS}
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        with self.consumer(list(names)) as c:
            while time.monotonic() < deadline:
                msg = c.poll(0.2)
                if msg is not None and not msg.error() and not msg.value():
                    continue  # a tombstone (the ledger removes expired revocations)
                if msg is not None and not msg.error():
                    doc = read_output(msg.topic(), msg.value())
                    if doc.get("kind") != "heartbeat":
                        out[names[msg.topic()]].append(doc)
                        last_new = time.monotonic()
                        if until is not None and sum(map(len, out.values())) >= until:
                            break
                elif time.monotonic() - last_new > quiet_s:
                    break
        return out


def collect_expected(
    pipe: Pipeline,
    expected: dict[str, list[dict[str, Any]]],
    *,
    timeout: float = 120.0,
    extra_s: float = 3.0,
) -> dict[str, list[dict[str, Any]]]:
    """Read the outputs until every expected finding and revocation has arrived (or the timeout),
    then ``extra_s`` more for anything unexpected. Robust on a loaded machine, where a quiet
    period says little about whether the worker is done."""
    want = identity(expected)
    deadline = time.monotonic() + timeout
    got = pipe.collect(quiet_s=2.0, timeout=timeout)
    while time.monotonic() < deadline:
        have = identity(got)
        if want["findings"] <= have["findings"] and want["revocations"] <= have["revocations"]:
            break
        time.sleep(1.0)
        got = pipe.collect(quiet_s=2.0, timeout=max(1.0, deadline - time.monotonic()))
    time.sleep(extra_s)
    return pipe.collect(quiet_s=2.0, timeout=60.0)


def workflow_key(line: bytes) -> bytes | None:
    """The intents key a producer would use: the workflow id, when the line has one. Read as
    the pipeline reads it (``decode_event``), so that an event carrying unknown fields orjson
    cannot parse (a lone surrogate, a deep nesting) is keyed by its workflow like any other:
    an emitter knows its workflow id whatever else it sends."""
    decoded = decode_event(line)
    wf = decoded.workflow_id
    return wf.encode() if isinstance(wf, str) else None


def replay_records(lines: list[bytes]) -> dict[str, list[dict[str, Any]]]:
    """What `tether replay` gives for the same lines (same grace, default policy)."""
    buf = io.BytesIO()
    mon = Monitor(Context(DetectionConfig(grace_s=GRACE), CedarCallPolicy.from_dir(None)))
    Replayer(mon, buf.write, decisions=True).run(lines)
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    plural = {
        "finding": "findings",
        "revocation": "revocations",
        "decision": "decisions",
        "deadletter": "deadletter",
    }
    for raw in buf.getvalue().splitlines():
        doc = orjson.loads(raw)
        out[plural[doc["kind"]]].append(doc)
    return out


def read_output(topic: str, value: bytes) -> dict[str, Any]:
    """An output record as a dict; revocations and heartbeats are signed SETs (decoded without
    verification: the tests that verify use the Watcher)."""
    if topic.endswith("revocations"):
        return peek(value).model_dump(mode="json")
    doc: dict[str, Any] = orjson.loads(value)
    return doc


def identity(records: dict[str, list[dict[str, Any]]]) -> dict[str, frozenset[Any]]:
    """What must be equal between the pipeline and replay: ids and codes, not timestamps."""
    return {
        "findings": frozenset(
            (f["finding_id"], f["code"], f["workflow_id"]) for f in records["findings"]
        ),
        "revocations": frozenset(
            (r["revocation_id"], r["reason"], r["target"]["kind"], r["target"]["id"])
            for r in records["revocations"]
        ),
        # the last decision per intent, without its value: allow or deny is what a gateway
        # does at the moment of the decision (docs/contract.md, Decision), which is event
        # time in replay and the wall clock in the worker
        "decisions": frozenset(
            (d["event_id"], d["final"], tuple(d["findings"]))
            for d in {d["event_id"]: d for d in records["decisions"]}.values()
        ),
        "deadletter": frozenset(d["reason"] for d in records["deadletter"]),
    }


def tp_lag(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """Total uncommitted records of ``group`` on ``topic``."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        committed = c.committed(tps, timeout=10)
        lag = 0
        for tp in committed:
            _, high = c.get_watermark_offsets(tp, timeout=10)
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        c.close()
