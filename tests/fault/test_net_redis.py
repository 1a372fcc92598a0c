"""Network faults between the registry sync and Redis: added latency, a stalled connection, a
cut and a heal, through a real fault-injecting TCP proxy (Toxiproxy, ``net.py``). Issue 24.

A private ``redis-server`` sits behind the proxy; the worker (and so its registry sync) is given
the proxy's address as ``TETHER_REDIS_URL``, while the test, like a gateway, reads Redis
directly (:class:`RedisRegistry` with the scenario's revocations topic as ``sync_topic``: the
gateways' trust rule of issue 18, item 7). The worker is fed at a steady rate on the shared
broker; mid-stream the fault is applied for ``NET_REDIS_FAULT_S`` and healed:

- ``latency``: 500 ms added to every byte in both directions (the Redis client's own timeout is
  1 s, so every call still succeeds, slowly);
- ``stall``: the connections stay open and every byte is dropped: the client's 1 s socket
  timeout notices, and every reconnection stalls too;
- ``cut``: the proxy disabled (connections closed, new ones refused).

What must hold, and the figures:

- the revocations feed is not held by Redis (``revocations_during_fault``), and none is lost;
- **trust**: while the sync cannot write, Redis must stop being trusted: a lookup of a target
  nobody revoked must not answer "not revoked" (False) once the sync's last freshness heartbeat
  is older than ``TETHER_REGISTRY_STALENESS_S`` (10 s) plus a margin (``trusted_while_cut`` must
  be 0 for a stall or a cut; for latency the sync still writes, and the share of trusted answers
  is reported);
- **after the heal**: every live revocation is in Redis and answers True, Redis is trusted again
  (the absent target answers False), and the figures say how long each took.

Run with ``make faults-net``. Sizes: ``TETHER_FAULT_*``: ``NET_REDIS_EVENTS`` (3,000),
``NET_RATE`` events/s (200), ``NET_REDIS_FAULT_S`` (16), ``NET_LATENCY_MS`` (500), ``SEED``,
``TIMEOUT`` seconds (300).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from corpus import fleet_lines
from net import NOBODY, STALENESS_S, Proxy, Toxiproxy, epoch, held_targets, live_targets
from private_services import PrivateRedis
from scenario import FAST, Scenario, knob, wait_until

from tether.adapters.redis_registry import RedisRegistry

pytestmark = [pytest.mark.faults_net, pytest.mark.timeout(900)]

FAULTS = ["latency", "stall", "cut"]


@pytest.fixture(scope="module")
def redis_behind_proxy(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[PrivateRedis, Proxy]]:
    workdir = tmp_path_factory.mktemp("net-redis")
    toxiproxy = Toxiproxy(workdir).start()
    server = PrivateRedis(workdir)
    try:
        server.start()
        yield server, toxiproxy.proxy("redis", f"127.0.0.1:{server.port}")
    finally:
        try:
            server.stop()
        finally:
            toxiproxy.stop()


@pytest.fixture
def run(
    request: pytest.FixtureRequest,
    kafka_bootstrap: str,
    redis_behind_proxy: tuple[PrivateRedis, Proxy],
    tmp_path: Path,
) -> Iterator[Scenario]:
    server, proxy = redis_behind_proxy
    fault = request.node.callspec.params["fault"]
    # Every fault starts from an empty Redis: the corpus (same seed) revokes the same targets,
    # and keys an earlier fault's sync wrote would pass for this one's.
    client = redis.Redis.from_url(server.url, socket_timeout=5)
    client.flushall()
    client.close()
    scenario = Scenario(f"net_redis_{fault}", FAST, kafka_bootstrap, server.url, tmp_path)
    scenario.extra_env["TETHER_REDIS_URL"] = f"redis://{proxy.address}/0"  # the sync's path
    yield scenario
    scenario.close()


@pytest.mark.parametrize("fault", FAULTS)
def test_registry_sync_rides_out_a_network_fault_to_redis(  # noqa: PLR0915  # one story
    run: Scenario, redis_behind_proxy: tuple[PrivateRedis, Proxy], fault: str
) -> None:
    server, proxy = redis_behind_proxy
    variant = FAST
    events, rate = (
        int(knob(variant, "NET_REDIS_EVENTS", 3_000, 3_000)),
        knob(variant, "NET_RATE", 200, 200),
    )
    fault_s, timeout = (
        knob(variant, "NET_REDIS_FAULT_S", 16, 16),
        knob(variant, "TIMEOUT", 300, 300),
    )
    latency_ms = int(knob(variant, "NET_LATENCY_MS", 500, 500))
    lines = fleet_lines(
        events, seed=int(knob(variant, "SEED", 43, 43)), end_before_now_s=30, short_s=300
    )
    expected = run.replay(lines)
    revocations = expected.get("revocation", [])
    run.figures.events_in = len(lines)
    run.start()
    assert run.tap is not None
    # What a gateway asks: Redis directly, trusted only while the sync vouches for it.
    gateway = RedisRegistry(
        server.url, sync_topic=run.topic("revocations"), sync_staleness_s=STALENESS_S
    )
    run.launch("w1")
    run.wait_up("w1", timeout=180)
    pid = run.pid("w1")
    trusted_s = wait_until(
        lambda: gateway.lookup_sync(*NOBODY) is False,  # type: ignore[arg-type]
        120,
        "the sync to vouch for Redis",
        check=run.assert_alive,
    )
    feeder = run.feed(lines, rate=rate)
    wait_until(lambda: feeder.sent >= len(lines) // 3, timeout, "a third of the input produced")

    seen_before = len(run.tap.records("revocations"))
    answers: list[tuple[float, bool | None]] = []  # (seconds into the fault, the answer)
    began = time.monotonic()
    with proxy.fault(fault, latency_ms):
        while (t := time.monotonic() - began) < fault_s:
            answers.append((t, gateway.lookup_sync(*NOBODY)))  # type: ignore[arg-type]
            run.assert_alive()
            time.sleep(0.25)
        seen_during = len(run.tap.records("revocations")) - seen_before
        # Before the heal: what the sync wrote through the fault. Every live revocation the tap
        # read 6 s before now (a few round trips of the sync's loop at 1 s each) must be there
        # unless the fault stops writes (a stall, a cut).
        cutoff = time.time() - 6.0
        due = {
            (s.doc["target"]["kind"], s.doc["target"]["id"])
            for s in run.tap.records("revocations")
            if s.read_at < cutoff and epoch(s.doc["not_after"]) > time.time() + 15
        }
        missing_in_fault = len(due - held_targets(server.url))
    healed = time.monotonic()
    # Past the staleness bound (plus the heartbeat interval and a batch's lag), the sync has
    # written nothing since the fault began: a "not revoked" then is Redis trusted unvouched.
    late = [a for t, a in answers if t > STALENESS_S + 3.0]
    trusted_while_cut = sum(1 for a in late if a is False)
    untrusted_from = next((t for t, a in answers if a is not False), None)

    feeder.join(timeout)
    run.wait_for_revocations(expected, timeout)
    required = live_targets(revocations, 15)
    wait_until(
        lambda: required <= held_targets(server.url), timeout, "every live revocation in Redis"
    )
    all_in_redis_s = time.monotonic() - healed
    wait_until(
        lambda: gateway.lookup_sync(*NOBODY) is False,  # type: ignore[arg-type]
        timeout,
        "Redis trusted again after the heal",
    )
    trusted_again_s = time.monotonic() - healed
    wrong = [t for t in required if gateway.lookup_sync(*t) is not True]  # type: ignore[arg-type]
    absent_answer = gateway.lookup_sync(*NOBODY)  # type: ignore[arg-type]
    lost = run.count_revocations(expected)
    run.figures.extra.update(
        fault=fault,
        fault_s=round(healed - began, 1),
        latency_ms=latency_ms if fault == "latency" else 0,
        revocations_during_fault=seen_during,
        trusted_before_s=round(trusted_s, 1),
        gateway_samples_during_fault=len(answers),
        trusted_share_during_fault=round(
            sum(1 for _, a in answers if a is False) / max(1, len(answers)), 2
        ),
        untrusted_from_s=None if untrusted_from is None else round(untrusted_from, 1),
        trusted_while_cut=trusted_while_cut if fault != "latency" else None,
        redis_live_revocations=len(required),
        redis_missing_at_fault_end=missing_in_fault,
        redis_due_at_fault_end=len(due),
        redis_wrong_answers_after_heal=len(wrong),
        redis_all_live_after_heal_s=round(all_in_redis_s, 1),
        redis_trusted_after_heal_s=round(trusted_again_s, 1),
        absent_target_after_heal=absent_answer,
        same_pid=run.pid("w1") == pid,
        lag_at_end=run.lag(),
    )
    run.report()
    run.assert_alive("w1")
    assert run.pid("w1") == pid
    assert not lost, f"{len(lost)} revocations lost: {sorted(lost)[:5]}"
    assert not wrong, f"Redis does not answer revoked after the heal: {wrong[:5]}"
    assert absent_answer is False, "Redis was not trusted again after the heal"
    if fault == "latency":  # slow, but written: the sync rides out latency it can afford
        assert missing_in_fault == 0, (
            f"{missing_in_fault} of {len(due)} live revocations not in Redis after {fault_s:.0f} s "
            f"of {latency_ms} ms latency: the registry sync stopped writing"
        )
    else:
        assert late, "the fault was shorter than the staleness bound: nothing to check"
        assert trusted_while_cut == 0, (
            f"Redis answered 'not revoked' {trusted_while_cut} times while the sync could not "
            f"write: {answers}"
        )
