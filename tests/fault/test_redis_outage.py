"""Redis stopped and restarted mid-stream: gateways keep denying, the registry catches up.

A private ``redis-server`` (no persistence) backs the worker's registry. Half the stream is
processed and synced to it; then Redis is stopped (SIGTERM, after ``CLIENT PAUSE WRITE`` so the
keys it holds can be listed exactly) and the other half is produced. Throughout the outage a
gateway ``Watcher`` must deny every revoked target read from the feed so far (asked with a tier
that does not fail closed, so the answer is its local set's, not staleness). Redis then comes back
empty on the same port, and every live revocation must reach it again: those it did not hold when
it stopped (the registry sync held its offsets and retries) and those it held and lost with its
memory (no persistence; the sync finds its marks gone and reads the topic again from the start).
``registry_lost_with_redis_memory`` counts live revocations the old Redis held that the new one
still lacks at the end: it must be 0.

Sizes: ``TETHER_FAULT_*`` (fast) / ``TETHER_SOAK_*`` (soak): ``REDIS_EVENTS`` (3,000 / 30,000),
``REDIS_OUTAGE_S`` at least (6 / 60), ``SEED``, ``TIMEOUT`` seconds (180 / 900).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from corpus import fleet_lines, workflow_key
from feed import watcher_options
from private_services import PrivateRedis
from scenario import Scenario, knob, wait_until

from tether.sdk.watcher import Watcher
from tether.settings import Settings

SCENARIO = "redis_outage"
PREFIX = "tether:revoked:"
PROBE_TIER = "fault-probe"  # in no fail-closed tier: a True answer comes from the local set


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def run(
    variant: str, kafka_bootstrap: str, private_redis: PrivateRedis, tmp_path: Path
) -> Iterator[Scenario]:
    scenario = Scenario(SCENARIO, variant, kafka_bootstrap, private_redis.url, tmp_path)
    yield scenario
    scenario.close()


def _live_keys(revocations: list[dict[str, Any]], margin_s: float) -> set[str]:
    """Registry keys of the revocations still in force ``margin_s`` from now."""
    horizon = time.time() + margin_s
    until: dict[str, float] = {}
    for r in revocations:
        key = f"{PREFIX}{r['target']['kind']}:{r['target']['id']}"
        t = _epoch(r["not_after"])
        until[key] = max(until.get(key, 0.0), t)
    return {k for k, t in until.items() if t > horizon}


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


class Gateway:
    """A gateway's ``Watcher`` on the scenario's feed, probed against what the tap has read."""

    def __init__(self, run: Scenario) -> None:
        settings = Settings(
            kafka_bootstrap=run.bootstrap,
            topic_prefix=run.prefix,
            partitions=4,
            home=run.home,
            staleness_s=5.0,
        )
        self.run = run
        self.watcher = Watcher(
            settings, client_id="fault-gateway", **watcher_options(Watcher, run.home)
        )
        self.checks = 0
        self.missed: list[dict[str, Any]] = []

    def __enter__(self) -> Gateway:
        self.watcher.start()
        assert self.watcher.wait_ready(60), (
            f"the gateway never caught up: {self.watcher.last_error}"
        )
        return self

    def __exit__(self, *_: object) -> None:
        self.watcher.stop()

    def probe(self) -> None:
        """Every live revocation the tap read (a second ago or more) must be denied."""
        self.run.assert_alive()
        assert self.run.tap is not None
        now = time.time()
        for s in self.run.tap.records("revocations"):
            if _epoch(s.doc["not_after"]) <= now + 5 or s.read_at > now - 1.0:
                continue  # expired (or nearly), or too fresh for the gateway to have it yet
            self.checks += 1
            kind, ident = s.doc["target"]["kind"], s.doc["target"]["id"]
            if not self.watcher.is_revoked(**{f"{kind}_id": ident}, tier=PROBE_TIER):
                self.missed.append(s.doc)


class Registry:
    """The keys of the private Redis (reconnecting after a restart)."""

    def __init__(self, server: PrivateRedis) -> None:
        self.server = server

    def keys(self) -> set[str]:
        client = redis.Redis.from_url(self.server.url, socket_timeout=5)
        try:
            return {k.decode() for k in client.scan_iter(match=f"{PREFIX}*", count=1000)}
        finally:
            client.close()

    def freeze_and_list(self) -> set[str]:
        """Pause writes (so nothing lands unseen), list the keys; then stop it."""
        client = redis.Redis.from_url(self.server.url, socket_timeout=5)
        try:
            client.execute_command("CLIENT", "PAUSE", "30000", "WRITE")
            return {k.decode() for k in client.scan_iter(match=f"{PREFIX}*", count=1000)}
        finally:
            client.close()


def test_registry_catches_up_and_gateways_keep_denying(
    run: Scenario, private_redis: PrivateRedis, variant: str
) -> None:
    events = int(knob(variant, "REDIS_EVENTS", 3_000, 30_000))
    outage_s, timeout = knob(variant, "REDIS_OUTAGE_S", 6, 60), knob(variant, "TIMEOUT", 180, 900)
    seed = int(knob(variant, "SEED", 23, 23))
    lines = fleet_lines(events, seed=seed, end_before_now_s=30, short_s=300)
    half = len(lines) // 2
    expected = run.replay(lines)
    revocations = expected.get("revocation", [])
    expected_head = run.replay(lines[:half], "head")
    run.figures.events_in = len(lines)
    run.start()
    run.launch("w1")
    run.wait_up("w1")
    pid = run.pid("w1")
    registry = Registry(private_redis)

    with Gateway(run) as gateway:
        run.produce_records([(workflow_key(line), line) for line in lines[:half]])
        run.wait_for_revocations(expected_head, timeout)
        wait_until(
            lambda: _live_keys(expected_head.get("revocation", []), 10) <= registry.keys(),
            timeout,
            "the registry to hold the first half's live revocations",
        )
        gateway.probe()

        before = registry.freeze_and_list()
        private_redis.stop()
        down_at = time.time()
        run.produce_records([(workflow_key(line), line) for line in lines[half:]])
        want = {r["revocation_id"] for r in revocations}

        def all_on_feed() -> bool:
            gateway.probe()
            seen = {s.doc["revocation_id"] for s in run.tap.records("revocations")}
            return want <= seen and time.time() - down_at >= outage_s

        wait_until(all_on_feed, timeout, "every revocation on the feed during the outage")
        on_feed_during = sum(1 for s in run.tap.records("revocations") if s.read_at > down_at)
        private_redis.start()
        up_at = time.time()
        required = _live_keys(revocations, 10)  # those the old Redis held included
        catch_up_s = wait_until(
            lambda: required <= registry.keys(),
            timeout,
            "the registry to catch up after the outage",
            check=gateway.probe,
        )
        run.wait_for_revocations(expected, timeout)
        gateway.probe()
        present, live = registry.keys(), _live_keys(revocations, 10)

    lost = run.count_revocations(expected)
    run.figures.extra.update(
        outage_s=round(up_at - down_at, 1),
        revocations_on_feed_during_outage=on_feed_during,
        registry_live_keys=len(live),
        registry_keys_before_outage=len(before),
        registry_required_after_restart=len(required),
        registry_required_not_held_before=len(required - before),
        registry_missing_after_catch_up=len(required - present),
        registry_lost_with_redis_memory=len((live & before) - present),
        registry_catch_up_s=round(catch_up_s, 1),
        gateway_checks=gateway.checks,
        gateway_misses=len(gateway.missed),
        same_pid=run.pid("w1") == pid,
        lag_at_end=run.lag(),
    )
    run.report()
    assert not lost, f"{len(lost)} revocations lost: {sorted(lost)[:5]}"
    assert not gateway.missed, f"the gateway allowed revoked targets: {gateway.missed[:3]}"
    assert gateway.checks > 0
    assert not required - present, f"not re-synced: {sorted(required - present)[:5]}"
    assert not (live & before) - present, "revocations lost with Redis's memory were not rebuilt"
    assert run.pid("w1") == pid
