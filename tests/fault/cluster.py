"""The three-broker cluster of ``scripts/services.sh up-cluster``, as the cluster scenarios drive it.

The cluster runs outside the tests (``make cluster`` starts it and exports
``TETHER_CLUSTER_BOOTSTRAP``); a test that needs it is marked ``cluster`` and skipped without it.
The levers are the script's own (``cluster-node kill|start N``), so the broker is relaunched by
exactly the command line that started it. Topics are created replicated as production runs
them: replication factor 3, ``min.insync.replicas`` 2 (``TETHER_KAFKA__*``), and, where a
scenario needs one broker to lead everything it will kill, with that broker first in every
partition's replica list (its preferred leader).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType
from private_services import PROBE, SERVICES_SCRIPT
from scenario import FAST, Scenario

from tether.topics import TopicSpec

ENV = "TETHER_CLUSTER_BOOTSTRAP"
REPLICAS, MIN_ISR = 3, 2
# What production sets and the cluster scenarios run with (workers, topics, the Watcher).
REPLICATION_ENV = {
    "TETHER_KAFKA__REPLICATION_FACTOR": str(REPLICAS),
    "TETHER_KAFKA__MIN_INSYNC_REPLICAS": str(MIN_ISR),
}


def cluster_bootstrap() -> str | None:
    """The cluster's bootstrap servers, when ``make cluster`` (or the environment) names them."""
    return os.environ.get(ENV) or None


@dataclass(frozen=True)
class PartitionState:
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


class Cluster:
    """The running three-node cluster: metadata, and one node killed or started at a time."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.kills = 0

    # -- metadata --------------------------------------------------------------------------

    def brokers(self) -> list[int]:
        return sorted(self.admin.list_topics(timeout=20).brokers)

    def partitions(self, topics: Iterable[str]) -> dict[tuple[str, int], PartitionState]:
        """Leader, replicas and in-sync replicas of every partition of ``topics``."""
        meta = self.admin.list_topics(timeout=20).topics
        out: dict[tuple[str, int], PartitionState] = {}
        for name in topics:
            topic = meta.get(name)
            if topic is None or topic.error is not None:
                raise AssertionError(f"topic {name} is not in the cluster's metadata")
            for p, part in topic.partitions.items():
                out[(name, p)] = PartitionState(part.leader, tuple(part.replicas), tuple(part.isrs))
        return out

    def topics(self, prefix: str) -> list[str]:
        return sorted(t for t in self.admin.list_topics(timeout=20).topics if t.startswith(prefix))

    def min_insync(self, topic: str) -> int:
        resource = ConfigResource(ResourceType.TOPIC, topic)
        configs = self.admin.describe_configs([resource])[resource].result(timeout=20)
        return int(configs["min.insync.replicas"].value)

    def shortfalls(self, prefix: str) -> list[str]:
        """Topics of ``prefix`` (tether's and faust's changelogs) replicated less than production
        asks: fewer than 3 replicas, or ``min.insync.replicas`` below 2."""
        topics = self.topics(prefix)
        states = self.partitions(topics)
        out = sorted(
            {
                f"{t}: {len(s.replicas)} replicas"
                for (t, _), s in states.items()
                if len(s.replicas) < REPLICAS
            }
        )
        out += [
            f"{t}: min.insync.replicas {n}" for t in topics if (n := self.min_insync(t)) < MIN_ISR
        ]
        return out

    def wait_leaders_other_than(self, node: int, topics: Sequence[str], timeout: float) -> float:
        """Until no partition of ``topics`` names ``node`` (down) or nobody as its leader."""
        return _wait(
            lambda: all(s.leader not in (node, -1) for s in self.partitions(topics).values()),
            timeout,
            f"new leaders for the partitions node {node} led",
        )

    def wait_in_sync(self, topics: Sequence[str], timeout: float) -> float:
        """Until every replica of every partition of ``topics`` is in sync again."""
        return _wait(
            lambda: all(len(s.isr) == REPLICAS for s in self.partitions(topics).values()),
            timeout,
            "every replica back in sync",
        )

    # -- topics ----------------------------------------------------------------------------

    def create_led_by(self, leader: int, specs: Sequence[TopicSpec]) -> None:
        """Create ``specs`` with ``leader`` first in every partition's replica list (the preferred
        leader, so it leads them all), the other two nodes following in turn."""
        others = [b for b in (1, 2, 3) if b != leader]
        topics = [
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,  # librdkafka wants both
                replica_assignment=[
                    [leader, *(others if p % 2 == 0 else others[::-1])]
                    for p in range(spec.partitions)
                ],
                config=dict(spec.config),
            )
            for spec in specs
        ]
        for name, future in self.admin.create_topics(topics, operation_timeout=30).items():
            future.result(timeout=60)
            del name
        names = [spec.name for spec in specs]
        _wait(
            lambda: all(s.leader == leader for s in self.partitions(names).values()),
            60,
            f"node {leader} to lead every partition",
        )

    # -- levers ----------------------------------------------------------------------------

    def kill(self, node: int) -> None:
        """kill -9 one node (a crash: no controlled shutdown, no leadership handed over)."""
        self._script("kill", node)
        self.kills += 1

    def start(self, node: int) -> None:
        """Start the node again on its log directory; returns once it answers."""
        self._script("start", node)
        port = int(self.bootstrap.split(",")[node - 1].rsplit(":", 1)[1])
        probe = subprocess.run(  # our own probe, fixed arguments
            [sys.executable, str(PROBE), "kafka", f"127.0.0.1:{port}", "--wait", "180"],
            capture_output=True,
            timeout=240,
            check=False,
        )
        assert probe.returncode == 0, f"cluster node {node} did not come back: {probe.stderr!r}"

    def _script(self, action: str, node: int) -> None:
        out = subprocess.run(  # our own script, fixed arguments
            [
                shutil.which("bash") or "/bin/bash",
                str(SERVICES_SCRIPT),
                "cluster-node",
                action,
                str(node),
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, f"cluster-node {action} {node}: {out.stderr.decode()[-2000:]}"


@pytest.fixture
def cluster() -> Cluster:
    """The running cluster; the test is skipped without one (``make cluster``)."""
    bootstrap = cluster_bootstrap()
    if bootstrap is None:
        pytest.skip("needs the three-broker cluster: `make cluster`")
    return Cluster(bootstrap)


@pytest.fixture
def cluster_run(
    request: pytest.FixtureRequest,
    cluster: Cluster,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Scenario]:
    """The module's ``SCENARIO`` on the cluster, replicated as production: the workers, the
    topics and the gateway all read ``TETHER_KAFKA__REPLICATION_FACTOR=3`` and
    ``TETHER_KAFKA__MIN_INSYNC_REPLICAS=2``."""
    for name, value in REPLICATION_ENV.items():
        monkeypatch.setenv(name, value)
    scenario = Scenario(request.module.SCENARIO, FAST, cluster.bootstrap, redis_url, tmp_path)
    yield scenario
    scenario.close()


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while True:
        with suppress(Exception):  # metadata while a broker is down: ask again
            if condition():
                return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)
