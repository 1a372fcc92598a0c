"""kill -9 the broker that leads every partition of the pipeline's topics, mid-stream.

On the three-broker cluster (``make cluster``; the test is skipped without it), the scenario's
topics are created replicated as production runs them (replication factor 3,
``min.insync.replicas`` 2) with one node first in every partition's replica list, so that node
leads every partition of the intents, the revocations, every other output and both tables'
changelogs (created ahead of faust with the same assignment). While the worker is fed at a
steady rate, that node is killed with SIGKILL (no controlled shutdown: leadership is not handed
over, the controller has to notice), left down, then started again on its log directory and
waited for until every replica is back in sync.

The same worker process must carry on alone; the figures compare what the tap and a gateway's
``Watcher`` read with ``tether replay``'s revocations: none acknowledged may be lost.

Sizes (``TETHER_FAULT_*``): ``CLUSTER_EVENTS`` (6,000), ``CLUSTER_RATE`` events/s (200),
``CLUSTER_LEADER`` the node to kill (2), ``CLUSTER_DOWN_S`` seconds it stays down (10),
``SEED``, ``TIMEOUT`` seconds (600).
"""

from __future__ import annotations

import time
from contextlib import suppress

import pytest
from cluster import MIN_ISR, Cluster, cluster, cluster_run
from corpus import fleet_lines
from pipeline import PARTITIONS
from scenario import FAST, Scenario, knob, wait_until
from watching import Gateway

from tether.topics import TopicSpec, topic_specs

SCENARIO = "cluster_leader_kill"
TABLES = ("sessions", "tokens")  # streams/app.py: the worker's tables, each with a changelog

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1800)]
__all__ = ["cluster", "cluster_run"]


def test_leader_broker_killed_mid_stream_loses_no_revocation(  # one story
    cluster_run: Scenario, cluster: Cluster
) -> None:
    run = cluster_run

    def k(name: str, default: float) -> float:
        return knob(FAST, name, default, default)

    events, rate = int(k("CLUSTER_EVENTS", 6_000)), k("CLUSTER_RATE", 200)
    leader, down_s, timeout = (
        int(k("CLUSTER_LEADER", 2)),
        k("CLUSTER_DOWN_S", 10),
        k("TIMEOUT", 600),
    )
    assert cluster.brokers() == [1, 2, 3], "the cluster is not whole before the test"

    lines = fleet_lines(events, seed=int(k("SEED", 41)), end_before_now_s=900)
    expected = run.replay(lines)
    run.figures.events_in = len(lines)
    specs = topic_specs(run.prefix, PARTITIONS, min_insync_replicas=MIN_ISR)
    changelogs = [
        TopicSpec(
            f"{run.group}-{table}-changelog",
            "table key",
            PARTITIONS,
            {"cleanup.policy": "compact", "min.insync.replicas": str(MIN_ISR)},
        )
        for table in TABLES
    ]
    cluster.create_led_by(leader, [*specs, *changelogs])
    run.start()  # verifies the topics: partitions, replicas, configs
    gateway = Gateway(run.bootstrap, run.prefix, run.home).start()
    try:
        run.launch("w1")
        run.wait_up("w1", timeout=180)
        pid = run.pid("w1")
        topics = cluster.topics(run.prefix)
        assert set(topics) >= {s.name for s in [*specs, *changelogs]}, topics
        assert not cluster.shortfalls(run.prefix), cluster.shortfalls(run.prefix)
        states = cluster.partitions(topics)
        led = sum(1 for s in states.values() if s.leader == leader)

        feeder = run.feed(lines, rate=rate)
        wait_until(lambda: feeder.sent >= len(lines) // 2, timeout, "half the events produced")
        killed_at = time.monotonic()
        cluster.kill(leader)
        failover_s = cluster.wait_leaders_other_than(leader, topics, timeout)
        time.sleep(max(0.0, down_s - (time.monotonic() - killed_at)))
        sent_while_down = feeder.sent
        cluster.start(leader)
        down_for = time.monotonic() - killed_at
        in_sync_s = cluster.wait_in_sync(topics, timeout)

        feeder.join(timeout)
        run.wait_for_revocations(expected, timeout)
        with suppress(AssertionError):  # the figures say what is missing
            wait_until(lambda: not gateway.missing(expected), 60, "the gateway to catch up")
    finally:
        gateway.stop()

    lost = run.count_revocations(expected)
    gateway_missing = gateway.missing(expected)
    run.figures.extra.update(
        leader_killed=leader,
        partitions_led_by_killed=led,
        topics=len(topics),
        new_leaders_s=round(failover_s, 1),
        broker_down_s=round(down_for, 1),
        back_in_sync_s=round(in_sync_s, 1),
        produced_before_restart=sent_while_down,
        produced=feeder.sent,
        gateway_seen=len(gateway.identities()),
        gateway_missing=len(gateway_missing),
        gateway_duplicates=sum(gateway.seen.values()) - len(gateway.seen),
        same_pid=run.pid("w1") == pid,
        lag_at_end=run.lag(),
    )
    run.report()
    run.assert_alive("w1")
    assert run.pid("w1") == pid
    assert feeder.sent == len(lines)
    assert led == len(states), "the killed node did not lead every partition"
    assert not lost, f"{len(lost)} revocations lost: {sorted(lost)[:5]}\n{run.log('w1')}"
    assert not gateway_missing, (
        f"the gateway missed {len(gateway_missing)}: {sorted(gateway_missing)[:5]}"
    )
    assert run.figures.revocations_expected > 0
