"""A gateway's ``Watcher`` stopped and started again while revocations are being published.

A publisher writes signed revocations (as the worker does: SETs, keyed by target) at a steady
rate; meanwhile the gateway's watcher is restarted again and again, each restart a stop, a pause
while revocations keep coming, and a start. Three ways a gateway restarts:

* ``same``: the same ``Watcher`` object stopped and started (a reconnect, a config reload);
* ``same-tail``: the same, built with ``from_beginning=False`` (a gateway that only wants what
  is issued from now on: "now" is when it was first started, not each restart);
* ``fresh``: a new ``Watcher`` replaces the stopped one (a gateway process restarted).

Afterwards the watcher in service must answer ``is_revoked`` True for every revocation the
broker acknowledged: lost must be 0. Duplicates count revocations applied more than once
(harmless: applying is idempotent).

Sizes (``TETHER_FAULT_*`` / ``TETHER_SOAK_*``): ``WATCH_REVOCATIONS`` (1,500 / 30,000),
``WATCH_RATE`` per second (500 / 1,000), ``WATCH_RESTARTS`` (4 / 20), ``WATCH_DOWN_S`` seconds
each restart leaves it stopped (0.4 / 1.0).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from scenario import Scenario, knob, wait_until

from sdk_helpers import heartbeat, revocation
from tether.adapters.kafka_admin import create_topics
from tether.adapters.kafka_config import producer_config
from tether.models.outputs import Heartbeat, Revocation
from tether.sdk.watcher import Watcher
from tether.security import SetSigner, generate_key
from tether.security.keys import write_jwks
from tether.settings import Settings

SCENARIO = "watcher_restart"
ISSUER = "urn:tether:monitor"
PARTITIONS = 4
MODES = ("same", "same-tail", "fresh")


class Publisher:
    """Publishes signed revocations at a steady rate, and a heartbeat now and then."""

    def __init__(self, settings: Settings, signer: SetSigner, count: int, rate: float) -> None:
        self.topic = settings.topic("revocations")
        self.signer, self.count, self.rate = signer, count, rate
        self.producer = Producer(producer_config(settings, client_id="fault-publisher"))
        self.acked: list[str] = []  # token ids the broker acknowledged
        self.errors: list[str] = []
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-publisher", daemon=True)

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert self.done.is_set(), f"the publisher is stuck at {len(self.acked)}/{self.count}"
        assert not self.errors, self.errors[:5]

    def _run(self) -> None:
        def acked(jti: str) -> Any:
            def on_delivery(err: Any, _msg: Any) -> None:
                if err is None:
                    self.acked.append(jti)
                else:
                    self.errors.append(str(err))

            return on_delivery

        try:
            start = time.monotonic()
            for i in range(self.count):
                ahead = i / self.rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
                jti = f"jti-{i}"
                rev = revocation("token", jti, rid=f"rv-{i}", lasts=3600, start=datetime.now(UTC))
                self.producer.produce(
                    self.topic,
                    key=rev.target.key.encode(),
                    value=self.signer.revocation(rev),
                    on_delivery=acked(jti),
                )
                if i % 100 == 0:
                    hb = heartbeat(datetime.now(UTC), "w1").model_copy(update={"sequence": i})
                    self.producer.produce(
                        self.topic, key=b"heartbeat:w1", value=self.signer.heartbeat(hb)
                    )
                self.producer.poll(0)
            if self.producer.flush(60) != 0:
                self.errors.append("revocations unacknowledged after 60 s")
        finally:
            self.done.set()


class Gateway:
    """The watcher in service, and every revocation any of its incarnations applied."""

    def __init__(self, settings: Settings, mode: str) -> None:
        self.settings, self.mode = settings, mode
        self.applied: Counter[str] = Counter()
        self.restarts = 0
        self.watcher = self._new()

    def _new(self) -> Watcher:
        return Watcher(
            self.settings,
            client_id="fault-gateway",
            from_beginning=self.mode != "same-tail",
            on_record=self._on_record,
            # no tier fails closed: an answer in doubt (a stale feed) would say "revoked" for
            # anything, and hide a revocation the watcher never read
            fail_closed_tiers=(),
        )

    def _on_record(self, record: Revocation | Heartbeat) -> None:
        if isinstance(record, Revocation):
            self.applied[record.target.id] += 1

    def start(self) -> None:
        self.watcher.start()
        assert self.watcher.wait_ready(60), f"not ready: {self.watcher.last_error}"

    def restart(self, down_s: float) -> None:
        self.watcher.stop()
        time.sleep(down_s)  # revocations keep coming meanwhile
        if self.mode == "fresh":
            self.watcher = self._new()
        self.restarts += 1
        self.start()

    def revoked(self, jti: str) -> bool:
        return bool(self.watcher.is_revoked(token_id=jti, tier="high"))


@pytest.fixture
def run(variant: str, kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Scenario]:
    scenario = Scenario(SCENARIO, variant, kafka_bootstrap, redis_url, tmp_path)
    yield scenario
    scenario.close()


@pytest.mark.parametrize("mode", MODES)
def test_watcher_restarted_while_revocations_are_published_misses_none(
    run: Scenario, variant: str, mode: str, tmp_path: Path
) -> None:
    count = int(knob(variant, "WATCH_REVOCATIONS", 1_500, 30_000))
    rate = knob(variant, "WATCH_RATE", 500, 1_000)
    restarts = int(knob(variant, "WATCH_RESTARTS", 4, 20))
    down_s = knob(variant, "WATCH_DOWN_S", 0.4, 1.0)
    run.figures.scenario = f"{SCENARIO}_{mode.replace('-', '_')}"

    signer = SetSigner(generate_key("RS256"), issuer=ISSUER)
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, [signer.public_jwk()])
    settings = Settings(
        kafka_bootstrap=run.bootstrap,
        topic_prefix=run.prefix,
        partitions=PARTITIONS,
        jwks=str(jwks),
        issuer=ISSUER,
        home=tmp_path / "home",
    )
    create_topics(settings, timeout=60.0)
    gateway = Gateway(settings, mode)
    gateway.start()
    publisher = Publisher(settings, signer, count, rate).start()
    try:
        stream_s = count / rate
        for i in range(restarts):
            # spread the restarts over the stream
            wait_until(
                lambda n=i: len(publisher.acked) >= count * (n + 1) // (restarts + 1),
                120,
                "the publisher to get on",
            )
            gateway.restart(down_s)
        publisher.join(120)
        acked = list(publisher.acked)
        with suppress(AssertionError):  # the figures say what is missing
            wait_until(
                lambda: all(gateway.revoked(j) for j in acked),
                max(15.0, stream_s),
                "the watcher to revoke every acknowledged revocation",
            )
    finally:
        gateway.watcher.stop()

    missing = sorted(j for j in acked if not gateway.revoked(j))
    fig = run.figures
    fig.events_in = count
    fig.revocations_expected = len(acked)
    fig.revocations_seen = len(acked) - len(missing)
    fig.lost = len(missing)
    fig.duplicates = sum(gateway.applied.values()) - len(gateway.applied)
    fig.extra.update(mode=mode, restarts=gateway.restarts, down_s_each=down_s, rate_per_s=rate)
    run.report()
    assert not missing, f"{len(missing)} acknowledged revocations never revoked: {missing[:5]}"
