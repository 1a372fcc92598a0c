"""What the harness reads from Kafka: topics, consumer-group progress, changelogs, revocations.

The worker is observed only from the outside: its progress is the committed offsets of its
consumer group, its state is its tables' changelog topics, its outputs are its topics.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from bench_events import probe_token
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from tether.adapters.kafka_config import admin_config, consumer_config
from tether.settings import Settings

_TIMEOUT = 10.0
PROBE_PREFIX = probe_token("")


def create_topics(bootstrap: str, prefix: str, partitions: int) -> None:
    """Create tether's topics under ``prefix`` with the CLI, as an operator would."""
    cmd = [sys.executable, "-m", "tether.cli", "topics", "create", "--bootstrap", bootstrap]
    cmd += ["--prefix", prefix, "--partitions", str(partitions)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603  # our CLI
    if done.returncode != 0:
        raise RuntimeError(f"tether topics create failed: {done.stderr.strip()}")


def admin_client(bootstrap: str) -> AdminClient:
    """An admin client for ``bootstrap``, logged in as the ``TETHER_KAFKA__*`` settings say."""
    config = admin_config(Settings(kafka_bootstrap=bootstrap), client_id="bench-admin")
    config["log_level"] = 3  # errors only
    return AdminClient(config)


def delete_run(bootstrap: str, prefix: str) -> list[str]:
    """Delete every topic and consumer group whose name starts with ``prefix``."""
    admin = admin_client(bootstrap)
    topics = [t for t in admin.list_topics(timeout=_TIMEOUT).topics if t.startswith(prefix)]
    if topics:
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            try:
                future.result()
            except Exception as exc:  # best effort: report and go on
                print(f"  could not delete a topic: {exc}", file=sys.stderr)
    deadline = time.monotonic() + 30  # a stopped member may take a few seconds to leave
    while True:
        try:
            listed = admin.list_consumer_groups(request_timeout=_TIMEOUT).result()
            groups = [g.group_id for g in listed.valid if g.group_id.startswith(prefix)]
            for future in (
                admin.delete_consumer_groups(groups, request_timeout=30).values() if groups else ()
            ):
                future.result()
            break
        except Exception as exc:  # best effort: retry, then report
            if time.monotonic() > deadline:
                print(f"  could not delete consumer groups: {exc}", file=sys.stderr)
                break
            time.sleep(2)
    return topics


def topics_like(bootstrap: str, prefix: str, suffix: str) -> list[str]:
    """Existing topics with this prefix and suffix (faust names changelogs itself)."""
    admin = admin_client(bootstrap)
    names = admin.list_topics(timeout=_TIMEOUT).topics
    return sorted(t for t in names if t.startswith(prefix) and t.endswith(suffix))


def _consumer(bootstrap: str, group: str | None = None) -> Consumer:
    return Consumer(
        consumer_config(
            Settings(kafka_bootstrap=bootstrap),
            group_id=group or f"bench-peek-{uuid.uuid4().hex[:10]}",
            client_id="bench-peek",
            overrides={
                "log_level": 3,  # errors only: no informational lines on the harness's stderr
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,
                "isolation.level": "read_uncommitted",
            },
        )
    )


class GroupProgress:
    """Records produced to some topics vs. records a consumer group has committed on them.

    Reading a group's committed offsets (an OffsetFetch) does not join the group.
    """

    def __init__(self, bootstrap: str, group: str, topics: Iterable[str], partitions: int) -> None:
        self._consumer = _consumer(bootstrap, group)
        self._tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]

    def sample(self) -> tuple[int, int]:
        """``(end, committed)``: records in the topics, and how many the group has acknowledged."""
        end = 0
        for tp in self._tps:
            _low, high = self._consumer.get_watermark_offsets(tp, timeout=_TIMEOUT, cached=False)
            end += high
        committed = sum(max(tp.offset, 0) for tp in self._consumer.committed(self._tps, _TIMEOUT))
        return end, committed

    def try_sample(self) -> tuple[int, int] | None:
        """:meth:`sample`, or None when the broker did not answer in time (a busy machine)."""
        try:
            return self.sample()
        except KafkaException as exc:
            print(f"    (lag sample skipped: {exc})", file=sys.stderr)
            return None

    def wait_caught_up(
        self, timeout: float, alive: Callable[[], bool] = lambda: True, every: float = 0.5
    ) -> float | None:
        """Block until the group has committed everything; seconds waited, or None (timeout)."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            got = self.try_sample()
            if got is not None and got[1] >= got[0]:
                return time.monotonic() - began
            if not alive():
                raise RuntimeError("the process under test exited")
            time.sleep(every)
        return None

    def close(self) -> None:
        self._consumer.close()


def live_keys(bootstrap: str, topic: str) -> tuple[int, int]:
    """``(keys, bytes)``: keys of a table changelog whose latest record is not a tombstone (the
    table's size), and the total size of their latest values (the state, serialized)."""
    c = _consumer(bootstrap)
    try:
        meta = c.list_topics(topic, timeout=_TIMEOUT).topics[topic]
        pending, assign = set(), []
        for p in meta.partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=_TIMEOUT)
            if high > low:
                pending.add(p)
                assign.append(TopicPartition(topic, p, low))
        c.assign(assign)
        live: dict[bytes, int] = {}
        while pending:
            for msg in c.consume(5000, 1.0):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                    continue
                value = msg.value()
                live[msg.key()] = -1 if value is None else len(value)
        kept = [size for size in live.values() if size >= 0]
        return len(kept), sum(kept)
    finally:
        c.close()


class Follower:
    """Reads one topic from its current end, on the caller's thread (e.g. decisions, P6)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._c = _consumer(bootstrap)
        meta = self._c.list_topics(topic, timeout=_TIMEOUT).topics[topic]
        self._c.assign([TopicPartition(topic, p, OFFSET_END) for p in meta.partitions])

    def poll(self, timeout: float) -> list[tuple[float, bytes, bytes]]:
        """``(arrival time, key, value)`` of the records that arrived within ``timeout``."""
        out = []
        for msg in self._c.consume(500, timeout):
            if not msg.error() and msg.value():
                out.append((time.time(), msg.key() or b"", msg.value()))
        return out

    def close(self) -> None:
        self._c.close()


def wait_heartbeat(
    bootstrap: str, topic: str, source: str, timeout: float, alive: Callable[[], bool]
) -> float:
    """Seconds until a heartbeat from ``source`` appears on the revocations topic."""
    began = time.monotonic()
    c = _consumer(bootstrap)  # assigned, never subscribed: no consumer group is created
    key = f"heartbeat:{source}".encode()
    try:
        while time.monotonic() - began < timeout:
            if not alive():
                raise RuntimeError(f"{source} exited before its first heartbeat (see its log)")
            meta = c.list_topics(topic, timeout=_TIMEOUT).topics.get(topic)
            if meta is not None and meta.partitions:
                c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
                break
            time.sleep(0.5)
        while time.monotonic() - began < timeout:
            if not alive():
                raise RuntimeError(f"{source} exited before its first heartbeat (see its log)")
            msg = c.poll(0.2)
            if msg is not None and not msg.error() and msg.key() == key:
                return time.monotonic() - began
    finally:
        c.close()
    raise TimeoutError(f"no heartbeat from {source} within {timeout:.0f} s")


def _json(value: bytes) -> object:
    return orjson.loads(value)


def _reader() -> Callable[[bytes], object]:
    """``tether.security.sets.peek`` once it exists (it reads JSON and signed JWS), else JSON."""
    try:
        from tether.security.sets import peek  # type: ignore[import-not-found]  # noqa: PLC0415
    except ImportError:
        return _json
    return peek  # type: ignore[no-any-return]


_read_record = _reader()


def decode_revocation(value: bytes) -> tuple[str, str] | None:
    """``(kind, id)`` of a revocation record on the topic, or None for anything else.

    The one place that knows the record format: plain JSON, or a signed JWS read (NOT verified)
    by ``tether.security.sets.peek`` when that is importable (it reads both).
    """
    try:
        record = _read_record(value)
    except ValueError:
        return None
    target = record.get("target") if isinstance(record, dict) else getattr(record, "target", None)
    if isinstance(target, dict):
        return str(target.get("kind")), str(target.get("id"))
    if target is None:
        return None  # a heartbeat
    return str(target.kind), str(target.id)


@dataclass
class ProbeClock:
    """When each awaited probe's revocation reached the gateway side (epoch seconds)."""

    sent: dict[str, float]
    seen: dict[str, float]

    @classmethod
    def new(cls) -> ProbeClock:
        return cls({}, {})

    def expect(self, probes: Iterable[tuple[str, float]]) -> None:
        for token, sent_at in probes:
            self.sent[token] = sent_at

    def note(self, token: str) -> None:
        if token not in self.seen:
            self.seen[token] = time.time()

    def latencies_ms(self, tokens: Iterable[str]) -> list[float]:
        """Latency of each probe in ``tokens``; ``inf`` for one not seen (lost or late)."""
        out = []
        for t in tokens:
            seen = self.seen.get(t)
            out.append(math.inf if seen is None else (seen - self.sent[t]) * 1000)
        return out

    def wait(self, tokens: Iterable[str], timeout: float) -> int:
        """Wait until every probe in ``tokens`` was seen; returns how many were not."""
        wanted = list(tokens)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            missing = sum(1 for t in wanted if t not in self.seen)
            if not missing:
                return 0
            time.sleep(0.1)
        return sum(1 for t in wanted if t not in self.seen)


class Gateway:
    """Follows a revocations topic and notes when each probe's revocation is held.

    ``mode="watcher"`` runs the SDK's :class:`~tether.sdk.watcher.Watcher` (the timestamp is
    taken in its ``on_record`` callback, i.e. once the local set holds the revocation). If the
    watcher applies none of the pipeline's heartbeats (say it requires signed records and the
    pipeline does not sign them), or with ``mode="raw"``, a plain confluent-kafka consumer
    decoding with :func:`decode_revocation` takes its place; ``self.mode`` and ``self.note`` say
    which one timed the probes, and why.
    """

    def __init__(
        self, bootstrap: str, prefix: str, clock: ProbeClock, mode: str = "watcher"
    ) -> None:
        self.clock = clock
        self.mode = mode
        self.note = ""
        self._bootstrap = bootstrap
        self._settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix)
        self.topic = self._settings.topic("revocations")
        self._stop = threading.Event()
        self.watcher: Any = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> None:
        if self.mode == "watcher":
            from tether.sdk.watcher import Watcher  # noqa: PLC0415

            watcher = Watcher(
                self._settings,
                staleness_s=math.inf,
                on_record=self._on_record,
                client_id="tether-bench-gateway",
            )
            watcher.start()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not watcher.stats.heartbeats:
                time.sleep(0.1)
            if watcher.ready.is_set() and watcher.stats.heartbeats:
                self.watcher = watcher
                return
            rejected = getattr(watcher.stats, "rejected", None) or getattr(
                watcher.stats, "bad_records", 0
            )
            watcher.stop()
            self.mode = "raw"
            self.note = (
                f"the SDK Watcher applied no heartbeat of the pipeline within {timeout:.0f}s "
                f"(rejected: {rejected}; last error: {watcher.last_error}); probes timed by a raw consumer"
            )
            print(f"  note: {self.note}", file=sys.stderr)
        self._thread = threading.Thread(target=self._raw, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.watcher is not None:
            self.watcher.stop()
        if self._thread is not None:
            self._thread.join(10)

    def _on_record(self, record: object) -> None:
        target = getattr(record, "target", None)
        if target is not None and target.kind == "token" and target.id.startswith(PROBE_PREFIX):
            self.clock.note(target.id)

    def _raw(self) -> None:
        c = _consumer(self._bootstrap)
        meta = c.list_topics(self.topic, timeout=_TIMEOUT).topics[self.topic]
        c.assign([TopicPartition(self.topic, p, OFFSET_END) for p in meta.partitions])
        try:
            while not self._stop.is_set():
                msg = c.poll(0.05)
                if msg is None or msg.error() or not msg.value():
                    continue
                target = decode_revocation(msg.value())
                if (
                    target is not None
                    and target[0] == "token"
                    and target[1].startswith(PROBE_PREFIX)
                ):
                    self.clock.note(target[1])
        finally:
            c.close()
