"""The fault scenarios' shared runner: a pipeline, a tap on its outputs, the levers, the figures.

A scenario runs real ``tether worker`` processes (``tests/integration/pipeline.py``: fresh topic
prefix and consumer group per test) and a tap on its outputs (``tap.py``). The expected
revocations are ``tether replay``'s for the same input (the CLI, same grace).

Each scenario ends with :meth:`Scenario.report`: it prints its figures (events in, revocations
expected/seen, lost, duplicates, dead letters, and the fault's own) and writes them to
``tests/fault/out/<scenario>-<variant>.json``; the session's figures are printed again as a table
at the end of the run (``conftest.py``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from corpus import Feeder
from figures import OUT_DIR, RESULTS, Figures, format_figures, machine
from pipeline import GRACE, PARTITIONS, Pipeline
from tap import Identity, Tap, revocation_identity

from tether.adapters.kafka_admin import create_topics
from tether.settings import Settings

FAST, SOAK = "fast", "soak"
VARIANTS = [  # a scenario's two sizes; pytest-timeout's 300 s default is too short for either
    pytest.param(FAST, marks=[pytest.mark.timeout(900)]),
    pytest.param(SOAK, marks=[pytest.mark.soak, pytest.mark.timeout(7200)]),
]


# -- knobs -----------------------------------------------------------------------------------


def knob(variant: str, name: str, fast: float, soak: float) -> float:
    """A size or duration: ``TETHER_FAULT_<NAME>`` (fast variant) or ``TETHER_SOAK_<NAME>``
    (soak variant) from the environment, else the variant's default."""
    env = f"TETHER_{'SOAK' if variant == SOAK else 'FAULT'}_{name}"
    raw = os.environ.get(env)
    return float(raw) if raw else (soak if variant == SOAK else fast)


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    interval: float = 0.25,
    check: Callable[[], None] | None = None,
) -> float:
    """Poll ``condition`` until it holds; the seconds it took. ``check`` runs every round (e.g.
    "the worker is still alive") and may raise. Fails with ``what`` after ``timeout``."""
    start = time.monotonic()
    while True:
        if check is not None:
            check()
        if condition():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# -- the scenario ----------------------------------------------------------------------------


class Scenario(Pipeline):
    """One fault scenario: an isolated pipeline (topics, group, workers), its tap and figures."""

    def __init__(
        self, name: str, variant: str, bootstrap: str, redis_url: str, workdir: Path
    ) -> None:
        super().__init__(bootstrap, redis_url, workdir)
        self.name, self.variant = name, variant
        self.figures = Figures(name, variant)
        self.home = workdir / "home"
        self.extra_env: dict[str, str] = {}
        self.tap: Tap | None = None
        self.spawned_at: dict[str, float] = {}
        self.started = time.monotonic()
        self._offsets: Consumer | None = None
        self._admin: AdminClient | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Scenario:
        """Create the topics (as ``tether worker`` would) and start the tap on the outputs."""
        settings = Settings(
            kafka_bootstrap=self.bootstrap, topic_prefix=self.prefix, partitions=PARTITIONS
        )
        create_topics(settings, timeout=60.0)
        self.tap = Tap(
            self.bootstrap,
            {self.topic(k): k for k in ("revocations", "findings", "deadletter")},
        ).start()
        return self

    def close(self) -> None:
        """Stop every worker this scenario started, the tap and the helper clients."""
        try:
            self.stop_all()
        finally:
            if self.tap is not None:
                self.tap.stop()
            if self._offsets is not None:
                with suppress(KafkaException, RuntimeError):
                    self._offsets.close()

    def launch(self, worker_id: str = "w1") -> subprocess.Popen[bytes]:
        """Start ``tether worker`` with a stable id (a static group member: restarted, it takes its
        partitions straight back), its working directory and ``TETHER_HOME`` in the test's."""
        env = self.env(worker_id)
        env["TETHER_HOME"] = str(self.home)
        env.update(self.extra_env)
        log = open(self.workdir / f"{worker_id}.log", "ab")  # noqa: SIM115  # owned by the process
        log.write(f"\n=== launched at {datetime.now(UTC).isoformat()} ===\n".encode())
        log.flush()
        self.spawned_at[worker_id] = time.time()
        proc = subprocess.Popen(  # our own CLI, fixed arguments
            [sys.executable, "-m", "tether.cli", "worker", "--loglevel", "info"],
            env=env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers[worker_id] = proc
        return proc

    def wait_up(
        self, worker_id: str = "w1", timeout: float = 120.0, *, since: float | None = None
    ) -> float:
        """Wait for a heartbeat ``worker_id`` emitted after its latest launch, or after ``since``
        (epoch seconds): it is up and its tables recovered. The seconds it took."""
        assert self.tap is not None
        since = self.spawned_at[worker_id] if since is None else since
        return wait_until(
            lambda: self.tap is not None and self.tap.heartbeat_since(worker_id, since),
            timeout,
            f"a heartbeat from {worker_id}",
            interval=0.1,
            check=lambda: self.assert_alive(worker_id),
        )

    def assert_alive(self, worker_id: str = "w1") -> None:
        proc = self.workers.get(worker_id)
        if proc is None or proc.poll() is not None:
            code = None if proc is None else proc.returncode
            raise AssertionError(f"worker {worker_id} exited ({code}): {self.log(worker_id)}")

    def log_text(self, worker_id: str = "w1") -> str:
        """The whole log of ``worker_id`` (every launch)."""
        path = self.workdir / f"{worker_id}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def sigkill(self, worker_id: str = "w1") -> None:
        self.kill(worker_id, signal.SIGKILL)

    def pid(self, worker_id: str = "w1") -> int:
        return self.workers[worker_id].pid

    # -- input -----------------------------------------------------------------------------

    def produce_records(
        self, records: Sequence[tuple[bytes | None, bytes | None]], *, partition: int | None = None
    ) -> list[tuple[int, int]]:
        """Produce ``(key, value)`` records to the intents topic as raw bytes (no validation, as
        a hostile or broken client would); their ``(partition, offset)`` in order."""
        producer = Producer(
            {"bootstrap.servers": self.bootstrap, "linger.ms": 5, "message.max.bytes": 2_000_000}
        )
        positions: list[tuple[int, int] | None] = [None] * len(records)
        errors: list[str] = []

        def report(i: int) -> Callable[[Any, Any], None]:
            def on_delivery(err: Any, msg: Any) -> None:
                if err is not None:
                    errors.append(str(err))
                else:
                    positions[i] = (msg.partition(), msg.offset())

            return on_delivery

        topic = self.topic("intents")
        for i, (key, value) in enumerate(records):
            kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": report(i)}
            if partition is not None:
                kwargs["partition"] = partition
            while True:
                try:
                    producer.produce(topic, **kwargs)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        assert producer.flush(120) == 0, "records still unacknowledged after 120 s"
        assert not errors, errors[:5]
        return [p for p in positions if p is not None]

    def feed(self, lines: Sequence[bytes], *, rate: float) -> Feeder:
        """Produce ``lines`` (keyed by workflow) at ``rate`` lines/s in the background."""
        return Feeder(self.bootstrap, self.topic("intents"), lines, rate).start()

    # -- expectations ----------------------------------------------------------------------

    def replay(
        self, lines: Sequence[bytes], name: str = "input"
    ) -> dict[str, list[dict[str, Any]]]:
        """What ``tether replay --grace GRACE`` gives for ``lines`` (the CLI, the workers' env);
        the input stays in ``<workdir>/<name>.jsonl`` for a rerun by hand."""
        path = self.workdir / f"{name}.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        done = subprocess.run(  # our own CLI, fixed arguments
            [sys.executable, "-m", "tether.cli", "replay", "--grace", str(GRACE), "-q", str(path)],
            env=self.env("replay"),
            cwd=self.workdir,
            capture_output=True,
            check=False,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
        out: dict[str, list[dict[str, Any]]] = {}
        for raw in done.stdout.splitlines():
            doc = orjson.loads(raw)
            out.setdefault(doc["kind"], []).append(doc)
        return out

    # -- offsets ---------------------------------------------------------------------------

    @property
    def group(self) -> str:
        return f"{self.prefix}monitor"  # TETHER_APP_ID of Pipeline.env

    def committed(self, name: str = "intents") -> dict[int, int]:
        """The worker group's committed offsets on a topic (-1001: none yet)."""
        if self._offsets is None:
            self._offsets = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": self.group,
                    "enable.auto.commit": False,
                }
            )
        tps = [TopicPartition(self.topic(name), p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in self._offsets.committed(tps, timeout=20)}

    def ends(self, name: str = "intents") -> dict[int, int]:
        """High-water marks of a topic."""
        c = self._offsets or Consumer({"bootstrap.servers": self.bootstrap, "group.id": "x"})
        self._offsets = c
        return {
            p: c.get_watermark_offsets(TopicPartition(self.topic(name), p), timeout=20)[1]
            for p in range(PARTITIONS)
        }

    def watch_commits(
        self, seconds: float, *, check: Callable[[], None] | None = None
    ) -> list[dict[int, int]]:
        """The group's committed intents offsets, sampled every 0.25 s for ``seconds``."""
        samples: list[dict[int, int]] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if check is not None:
                check()
            samples.append(self.committed())
            time.sleep(0.25)
        return samples

    def lag(self, name: str = "intents") -> int:
        """Records of ``name`` the worker group has not committed yet."""
        committed, ends = self.committed(name), self.ends(name)
        return sum(ends[p] - max(committed.get(p, 0), 0) for p in ends)

    # -- levers ----------------------------------------------------------------------------

    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap})
        return self._admin

    def set_topic_config(self, name: str, key: str, value: str | None) -> None:
        """Set (or with None, remove) a dynamic config of one of the scenario's topics."""
        op = AlterConfigOpType.SET if value is not None else AlterConfigOpType.DELETE
        resource = ConfigResource(
            ResourceType.TOPIC,
            self.topic(name),
            incremental_configs=[ConfigEntry(key, value or "", incremental_operation=op)],
        )
        self.admin().incremental_alter_configs([resource])[resource].result(timeout=30)

    @contextmanager
    def unwritable(self, name: str) -> Iterator[None]:
        """Every produce to the topic fails while inside (``max.message.bytes=1``: any batch is
        too large, ``MSG_SIZE_TOO_LARGE``); the topic's own setting is restored on the way out.

        ``min.insync.replicas=2`` on the single-replica topic would be the natural lever, but
        Kafka 4.4 caps the effective minimum ISR at the replication factor: a producer with
        ``acks=all`` was still acknowledged (checked against this broker)."""
        self.set_topic_config(name, "max.message.bytes", "1")
        try:
            self._wait_refused(name)
            yield
        finally:
            self.set_topic_config(name, "max.message.bytes", None)

    def _wait_refused(self, name: str, timeout: float = 60.0) -> None:
        """Until the broker applies the change: a config altered is not yet a config in force,
        and a step that slipped through before would prove nothing. The probes are tombstones
        under a key of their own (harmless wherever one gets through: a tombstone revokes and
        lifts nothing, and deletes no session)."""
        producer = Producer({"bootstrap.servers": self.bootstrap, "message.timeout.ms": 10_000})
        deadline = time.monotonic() + timeout
        while True:
            errors: list[Any] = []
            for p in range(PARTITIONS):
                producer.produce(
                    self.topic(name),
                    key=b"fault-probe",
                    value=None,
                    partition=p,
                    on_delivery=lambda err, _msg, out=errors: out.append(err),
                )
            producer.flush(15)
            if len(errors) == PARTITIONS and all(
                e is not None and e.code() == KafkaError.MSG_SIZE_TOO_LARGE for e in errors
            ):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.topic(name)} still accepts writes: {errors}")
            time.sleep(0.05)

    # -- figures ---------------------------------------------------------------------------

    def count_revocations(self, expected: dict[str, list[dict[str, Any]]]) -> set[Identity]:
        """Fill the revocation figures from the tap against ``expected``; the lost ones."""
        assert self.tap is not None
        want = {revocation_identity(d) for d in expected.get("revocation", [])}
        got = self.tap.revocations()
        fig = self.figures
        fig.revocations_expected = len(want)
        fig.revocations_seen = len(got)
        lost = want - set(got)
        fig.lost = len(lost)
        fig.duplicates = sum(got.values()) - len(got)
        fig.extra["unexpected_revocations"] = len(set(got) - want)
        findings = {f["finding_id"] for f in expected.get("finding", [])}
        seen = {s.doc["finding_id"] for s in self.tap.records("findings")}
        fig.extra["findings_expected"] = len(findings)
        fig.extra["findings_lost"] = len(findings - seen)
        fig.dead_letters = len(self.tap.records("deadletter"))
        fig.extra["unreadable_feed_records"] = len(self.tap.unreadable)
        return lost

    def wait_for_revocations(
        self, expected: dict[str, list[dict[str, Any]]], timeout: float, *, worker: str = "w1"
    ) -> None:
        """Until every expected revocation was read (or the timeout: the figures say what is
        missing), then until the worker group has committed all of its input."""
        assert self.tap is not None
        want = {revocation_identity(d) for d in expected.get("revocation", [])}
        deadline = time.monotonic() + timeout
        with suppress(AssertionError):
            wait_until(
                lambda: want <= set(self.tap.revocations()) if self.tap else False,
                timeout,
                "every expected revocation",
                interval=0.5,
                check=lambda: self.assert_alive(worker),
            )
        with suppress(AssertionError):
            wait_until(
                lambda: self.lag() == 0,
                max(5.0, deadline - time.monotonic()),
                "the group to commit all input",
                interval=0.5,
            )

    def report(self) -> Figures:
        """Print the figures and write them to ``tests/fault/out/<scenario>-<variant>.json``."""
        fig = self.figures
        doc = asdict(fig)
        doc["seconds"] = round(time.monotonic() - self.started, 1)
        doc["ran_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        doc["machine"] = machine()
        doc["topic_prefix"] = self.prefix
        doc["workdir"] = str(self.workdir)
        OUT_DIR.mkdir(exist_ok=True)
        (OUT_DIR / f"{fig.scenario}-{fig.variant}.json").write_bytes(
            orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        )
        RESULTS.append(doc)
        print(format_figures(doc), flush=True)
        return fig
