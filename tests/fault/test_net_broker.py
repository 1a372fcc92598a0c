"""Network faults between the worker and the broker: added latency, a stalled connection, a cut
and a heal, through a real fault-injecting TCP proxy (Toxiproxy, ``net.py``). Issue 24.

A private Apache Kafka has a second listener advertised at the proxy's address; the worker is
bootstrapped through the proxy, so *every* connection it makes (faust's aiokafka clients, the
librdkafka input fetcher, publishers, the registry sync's consumer) goes through it, while the
test's feeder, tap and admin use the direct listener. The worker is fed at a steady rate and,
mid-stream, the fault is applied for a while and healed:

- ``latency``: 500 ms added to every byte in both directions, for ``NET_FAULT_S``;
- ``stall``: the connections stay open and every byte is dropped (no RST, no FIN), for
  ``NET_FAULT_S``: only the clients' own timeouts notice;
- ``cut``: the proxy disabled (connections closed, new ones refused) for ``NET_FAULT_S``.

The same worker process must carry on alone after the heal and publish every revocation
``tether replay`` expects; the figures say how long the heartbeats stopped and how long the
worker took to publish again after the heal. The registry sync's consumer is behind the proxy
too: after the heal, the (private, unproxied) Redis must hold every live revocation and be
trusted again (read as a gateway does; ``registry_caught_up_and_trusted_after_heal_s``).

Run with ``make faults-net`` (not part of ``make test``: a private broker per module and about a
minute per fault). Sizes: ``TETHER_FAULT_*``: ``NET_EVENTS`` (4,000), ``NET_RATE`` events/s
(200), ``NET_FAULT_S`` (10), ``NET_LATENCY_MS`` (500), ``SEED``, ``TIMEOUT`` seconds (300).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from corpus import fleet_lines
from net import NOBODY, STALENESS_S, ProxiedKafka, Proxy, Toxiproxy, held_targets, live_targets
from scenario import FAST, Scenario, knob, wait_until

from tether.adapters.redis_registry import RedisRegistry

pytestmark = [pytest.mark.faults_net, pytest.mark.timeout(900)]

FAULTS = ["latency", "stall", "cut"]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProxiedKafka, Proxy]]:
    """One private broker and its proxy for the module (each test has its own topics)."""
    workdir = tmp_path_factory.mktemp("net-broker")
    toxiproxy = Toxiproxy(workdir).start()
    kafka = ProxiedKafka(workdir)
    try:
        proxy = kafka.attach(toxiproxy)
        kafka.up()
        yield kafka, proxy
    finally:
        try:
            kafka.down()
        finally:
            toxiproxy.stop()


@pytest.fixture
def run(
    request: pytest.FixtureRequest, broker: tuple[ProxiedKafka, Proxy], tmp_path: Path
) -> Iterator[Scenario]:
    kafka, _ = broker
    fault = request.node.callspec.params["fault"]
    scenario = Scenario(f"net_broker_{fault}", FAST, kafka.bootstrap, kafka.redis_url, tmp_path)
    scenario.extra_env["TETHER_KAFKA_BOOTSTRAP"] = kafka.proxied_bootstrap  # the worker's path
    yield scenario
    scenario.close()


@pytest.mark.parametrize("fault", FAULTS)
def test_worker_rides_out_a_network_fault_to_the_broker(
    run: Scenario, broker: tuple[ProxiedKafka, Proxy], fault: str
) -> None:
    _, proxy = broker
    variant = FAST
    events, rate = (
        int(knob(variant, "NET_EVENTS", 4_000, 4_000)),
        knob(variant, "NET_RATE", 200, 200),
    )
    fault_s, timeout = knob(variant, "NET_FAULT_S", 10, 10), knob(variant, "TIMEOUT", 300, 300)
    latency_ms = int(knob(variant, "NET_LATENCY_MS", 500, 500))
    lines = fleet_lines(
        events, seed=int(knob(variant, "SEED", 41, 41)), end_before_now_s=30, short_s=300
    )
    expected = run.replay(lines)
    run.figures.events_in = len(lines)
    run.start()
    # The registry sync's consumer is on the proxy too: Redis (direct) must catch up after it.
    client = redis.Redis.from_url(run.redis_url, socket_timeout=5)
    client.flushall()
    client.close()
    gateway = RedisRegistry(
        run.redis_url, sync_topic=run.topic("revocations"), sync_staleness_s=STALENESS_S
    )
    run.launch("w1")
    run.wait_up("w1", timeout=180)
    pid = run.pid("w1")
    assert run.tap is not None
    feeder = run.feed(lines, rate=rate)

    wait_until(lambda: feeder.sent >= len(lines) // 3, timeout, "a third of the input produced")
    seen_before = len(run.tap.records("revocations"))
    began = time.time()
    with proxy.fault(fault, latency_ms):
        time.sleep(fault_s)
        seen_during = len(run.tap.records("revocations")) - seen_before
    healed = time.time()
    # The worker publishes again: a heartbeat emitted after the heal, read through the tap.
    back_s = run.wait_up("w1", timeout=timeout, since=healed)
    gap = run.tap.heartbeat_gap(began, healed + back_s)

    feeder.join(timeout)
    run.wait_for_revocations(expected, timeout)
    required = live_targets(expected.get("revocation", []), 15)
    wait_until(lambda: required <= held_targets(run.redis_url), timeout, "the registry caught up")
    wait_until(
        lambda: gateway.lookup_sync(*NOBODY) is False,  # type: ignore[arg-type]
        timeout,
        "Redis trusted again",
    )
    registry_s = time.time() - healed
    lost = run.count_revocations(expected)
    run.figures.extra.update(
        fault=fault,
        fault_s=round(healed - began, 1),
        latency_ms=latency_ms if fault == "latency" else 0,
        revocations_during_fault=seen_during,
        heartbeat_gap_s=round(gap, 1),
        heartbeat_back_after_heal_s=round(back_s, 1),
        produced=feeder.sent,
        registry_live_revocations=len(required),
        registry_caught_up_and_trusted_after_heal_s=round(registry_s, 1),
        same_pid=run.pid("w1") == pid,
        lag_at_end=run.lag(),
    )
    run.report()
    run.assert_alive("w1")
    assert run.pid("w1") == pid
    assert not lost, f"{len(lost)} revocations lost: {sorted(lost)[:5]}\n{run.log('w1')}"
    assert run.lag() == 0, "the group did not commit all input after the heal"
