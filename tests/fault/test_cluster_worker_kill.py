"""Three workers on the cluster, one of them kill -9'd at random again and again.

On the three-broker cluster (``make cluster``; skipped without it), three ``tether worker``
processes share the scenario's group and partitions (replication factor 3,
``min.insync.replicas`` 2). While they are fed at a steady rate, a worker drawn at random is
SIGKILLed, and either restarted at once (a static member: it takes its own partitions straight
back) or left down past the session timeout, so that the group rebalances its partitions and
their table state (recovered from the changelogs) to the survivors, and back again once it
returns. A gateway's ``Watcher`` follows the feed throughout.

The figures compare what the tap and the gateway read with ``tether replay``'s revocations:
none may be lost; duplicates are allowed (ids derive from causes).

Sizes (``TETHER_FAULT_*``): ``CLUSTER_KILL_EVENTS`` (6,000), ``CLUSTER_KILL_RATE`` events/s
(150), ``CLUSTER_WORKERS`` (3), ``CLUSTER_KILLS`` at least (5), ``CLUSTER_KILL_AFTER_MIN`` and
``CLUSTER_KILL_AFTER_MAX`` seconds between kills (2-6), ``CLUSTER_LONG_DOWN`` share of kills left
down past the session timeout (0.5), ``SEED``, ``TIMEOUT`` seconds (900).
"""

from __future__ import annotations

import random
import re
import time
from contextlib import suppress

import pytest
from cluster import Cluster, cluster, cluster_run
from corpus import fleet_lines
from scenario import FAST, Scenario, knob, wait_until
from watching import Gateway

from tether.settings import Settings

SCENARIO = "cluster_worker_kill"
RECOVERED = re.compile(rb"recovered (\d+) keys from (\d+) changelog records")

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]
__all__ = ["cluster", "cluster_run"]


def test_worker_kill_loop_with_rebalances_loses_no_revocation(  # noqa: PLR0915  # one story
    cluster_run: Scenario, cluster: Cluster
) -> None:
    run = cluster_run

    def k(name: str, default: float) -> float:
        return knob(FAST, name, default, default)

    events, rate = int(k("CLUSTER_KILL_EVENTS", 6_000)), k("CLUSTER_KILL_RATE", 150)
    workers = [f"w{i + 1}" for i in range(int(k("CLUSTER_WORKERS", 3)))]
    min_kills = int(k("CLUSTER_KILLS", 5))
    after = (k("CLUSTER_KILL_AFTER_MIN", 2.0), k("CLUSTER_KILL_AFTER_MAX", 6.0))
    long_down, timeout = k("CLUSTER_LONG_DOWN", 0.5), k("TIMEOUT", 900)
    rng = random.Random(int(k("SEED", 53)))
    session_s = Settings().session_timeout_s
    assert cluster.brokers() == [1, 2, 3], "the cluster is not whole before the test"

    lines = fleet_lines(events, seed=int(k("SEED", 53)), end_before_now_s=900)
    expected = run.replay(lines)
    run.figures.events_in = len(lines)
    run.start()
    gateway = Gateway(run.bootstrap, run.prefix, run.home).start()
    kills, left_down, restart_s = 0, 0, []
    try:
        for w in workers:
            run.launch(w)
        for w in workers:
            run.wait_up(w, timeout=240)
        changelogs = [t for t in cluster.topics(run.prefix) if t.endswith("-changelog")]
        assert changelogs, "faust created no changelog"
        assert not cluster.shortfalls(run.prefix), cluster.shortfalls(run.prefix)
        feeder = run.feed(lines, rate=rate)
        while kills < min_kills or not (feeder.done.is_set() and run.lag() == 0):
            time.sleep(rng.uniform(*after))
            victim = rng.choice(workers)
            run.sigkill(victim)
            kills += 1
            if rng.random() < long_down:
                left_down += 1  # its partitions and their state move to the others
                time.sleep(session_s + 4)
            run.launch(victim)
            restart_s.append(run.wait_up(victim, timeout=240))
            if kills >= 4 * min_kills and feeder.done.is_set():
                break  # enough: the rest is up to the workers alone
        feeder.join(timeout)
        run.wait_for_revocations(expected, timeout, worker=workers[0])
        with suppress(AssertionError):  # the figures say what is missing
            wait_until(lambda: not gateway.missing(expected), 60, "the gateway to catch up")
    finally:
        gateway.stop()

    lost = run.count_revocations(expected)
    gateway_missing = gateway.missing(expected)
    recoveries = [
        (int(m.group(1)), int(m.group(2)))
        for w in workers
        for m in RECOVERED.finditer(run.log_text(w).encode())
    ]
    run.figures.extra.update(
        workers=len(workers),
        changelogs_rf3_min_isr2=len(changelogs),
        kills=kills,
        kills_left_down_past_session=left_down,
        restart_to_heartbeat_s_max=round(max(restart_s, default=0.0), 1),
        recoveries_with_state=sum(1 for keys, _ in recoveries if keys > 0),
        keys_recovered=sum(keys for keys, _ in recoveries),
        gateway_seen=len(gateway.identities()),
        gateway_missing=len(gateway_missing),
        gateway_duplicates=sum(gateway.seen.values()) - len(gateway.seen),
        produced=feeder.sent,
        lag_at_end=run.lag(),
    )
    run.report()
    for w in workers:
        run.assert_alive(w)
    assert feeder.sent == len(lines)
    assert not lost, f"{len(lost)} revocations lost, e.g. {sorted(lost)[:5]}"
    assert not gateway_missing, f"the gateway missed {len(gateway_missing)}"
    assert run.figures.revocations_expected > 0
