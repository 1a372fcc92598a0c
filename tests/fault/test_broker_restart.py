"""The Kafka broker restarted mid-stream: the pipeline resumes by itself, nothing is lost.

A private Apache Kafka (``scripts/services.sh up`` on free ports, in the test's directory) runs
the pipeline; the worker is fed at a steady rate, and while the stream is flowing the broker is
stopped and started again on the same log directory (the fast variant with a controlled
shutdown, the soak variant alternating it with SIGKILL). The same worker process must carry on
alone (no restart by the test) and publish every revocation ``tether replay`` expects.

Sizes: ``TETHER_FAULT_*`` (fast) / ``TETHER_SOAK_*`` (soak): ``BROKER_EVENTS`` (6,000 / 60,000),
``BROKER_RATE`` events/s (600 / 1,000), ``BROKER_RESTARTS`` (1 / 4), ``BROKER_DOWN_S`` seconds
between stop and start (2 / 10), ``BROKER_SIGKILL`` 1 to make every second stop a SIGKILL
(0 / 1), ``SEED``, ``TIMEOUT`` seconds (300 / 1,200).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from corpus import fleet_lines
from private_services import PrivateKafka
from scenario import Scenario, knob, wait_until

SCENARIO = "broker_restart"


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[PrivateKafka]:
    broker = PrivateKafka(tmp_path)
    try:
        broker.up()
        yield broker
    finally:
        broker.down()


@pytest.fixture
def run(variant: str, kafka: PrivateKafka, tmp_path: Path) -> Iterator[Scenario]:
    scenario = Scenario(SCENARIO, variant, kafka.bootstrap, kafka.redis_url, tmp_path)
    yield scenario
    scenario.close()


def test_pipeline_resumes_by_itself_after_broker_restarts(
    run: Scenario, kafka: PrivateKafka, variant: str
) -> None:
    events, rate = (
        int(knob(variant, "BROKER_EVENTS", 6_000, 60_000)),
        knob(variant, "BROKER_RATE", 600, 1_000),
    )
    restarts, down_s = (
        int(knob(variant, "BROKER_RESTARTS", 1, 4)),
        knob(variant, "BROKER_DOWN_S", 2, 10),
    )
    timeout = knob(variant, "TIMEOUT", 300, 1_200)
    alternate = bool(knob(variant, "BROKER_SIGKILL", 0, 1))
    lines = fleet_lines(events, seed=int(knob(variant, "SEED", 29, 29)), end_before_now_s=900)
    expected = run.replay(lines)
    run.figures.events_in = len(lines)
    run.start()
    run.launch("w1")
    run.wait_up("w1")
    pid = run.pid("w1")
    feeder = run.feed(lines, rate=rate)

    outages: list[float] = []
    recoveries: list[float] = []
    for i in range(restarts):
        mark = len(lines) * (i + 1) // (restarts + 1)
        wait_until(lambda m=mark: feeder.sent >= m, timeout, f"{mark} events produced")
        crash = alternate and i % 2 == 1  # a crash instead of a controlled shutdown
        stopped = time.time()
        kafka.stop_broker(signal.SIGKILL if crash else signal.SIGTERM)
        time.sleep(down_s)  # the outage itself
        kafka.start_broker()
        back = time.time()
        outages.append(back - stopped)
        recoveries.append(run.wait_up("w1", timeout=timeout, since=back))

    feeder.join(timeout)
    run.wait_for_revocations(expected, timeout)
    lost = run.count_revocations(expected)
    run.figures.extra.update(
        broker_restarts=restarts,
        broker_outage_s_max=round(max(outages), 1),
        heartbeat_back_s_max=round(max(recoveries), 1),
        produced=feeder.sent,
        same_pid=run.pid("w1") == pid,
        worker_alive=run.workers["w1"].poll() is None,
        lag_at_end=run.lag(),
    )
    run.report()
    run.assert_alive("w1")
    assert run.pid("w1") == pid
    assert not lost, f"{len(lost)} revocations lost: {sorted(lost)[:5]}\n{run.log('w1')}"
    assert run.lag() == 0, "the group did not commit all input after the restarts"
