"""The tap: reads a scenario's output topics from their start, in the background, from before the
first worker runs. The revocations topic is compacted, so the figures count what was published
while it was published, not what compaction left."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from feed import Unreadable, decode_feed
from pipeline import PARTITIONS

Identity = tuple[str, str, str, str]  # revocation_id, reason, target kind, target id


def revocation_identity(doc: dict[str, Any]) -> Identity:
    """What must match between the pipeline and replay (``pipeline.identity``'s tuple)."""
    target = doc["target"]
    return (doc["revocation_id"], doc["reason"], target["kind"], target["id"])


@dataclass
class Seen:
    """One output record as the tap read it."""

    partition: int
    offset: int
    key: bytes | None
    doc: dict[str, Any]
    read_at: float  # time.time() when the tap read it


class Tap:
    """Reads output topics from their start in a background thread (assigned, no group)."""

    def __init__(self, bootstrap: str, topics: dict[str, str]) -> None:
        self.bootstrap = bootstrap
        self.kinds = topics  # topic name -> "revocations" | "findings" | "deadletter"
        self.seen: dict[str, list[Seen]] = {kind: [] for kind in topics.values()}
        self.heartbeats: list[tuple[str, float, float]] = []  # source, emitted_at, read_at
        self.unreadable: list[str] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-tap", daemon=True)

    def start(self) -> Tap:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"fault-tap-{os.getpid()}-{id(self)}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
                "error_cb": lambda err: self.errors.append(err.str()),
            }
        )
        consumer.assign(
            [
                TopicPartition(topic, p, OFFSET_BEGINNING)
                for topic in self.kinds
                for p in range(PARTITIONS)
            ]
        )
        try:
            while not self._stop.is_set():
                for msg in consumer.consume(500, 0.2):
                    if msg.error() is None:
                        self._take(msg)
        finally:
            consumer.close()

    def _take(self, msg: Any) -> None:
        kind = self.kinds[msg.topic()]
        now = time.time()
        if not msg.value():
            return  # a tombstone (compaction, or an unwritable-topic probe)
        try:
            doc = decode_feed(msg.value()) if kind == "revocations" else orjson.loads(msg.value())
        except (Unreadable, orjson.JSONDecodeError) as exc:
            with self._lock:
                self.unreadable.append(f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: {exc}")
            return
        if doc is None:
            return  # a tombstone
        with self._lock:
            if doc.get("kind") == "heartbeat":
                emitted = datetime.fromisoformat(doc["emitted_at"]).timestamp()
                self.heartbeats.append((doc["source"], emitted, now))
                return
            self.seen[kind].append(Seen(msg.partition(), msg.offset(), msg.key(), doc, now))

    # -- snapshots (thread-safe) ---------------------------------------------------------

    def records(self, kind: str) -> list[Seen]:
        with self._lock:
            return list(self.seen[kind])

    def revocations(self) -> Counter[Identity]:
        """Every revocation read so far, by identity, with how often it was read."""
        return Counter(revocation_identity(s.doc) for s in self.records("revocations"))

    def heartbeat_since(self, source: str, since: float) -> bool:
        with self._lock:
            return any(src == source and emitted >= since for src, emitted, _ in self.heartbeats)

    def heartbeat_gap(self, since: float, until: float) -> float:
        """The longest time without a heartbeat read between two wall-clock moments."""
        with self._lock:
            reads = sorted(read for _, _, read in self.heartbeats if since <= read <= until)
        marks = [since, *reads, until]
        return max(b - a for a, b in itertools.pairwise(marks))

    def last_heartbeat(self) -> float | None:
        with self._lock:
            return max((read for _, _, read in self.heartbeats), default=None)
