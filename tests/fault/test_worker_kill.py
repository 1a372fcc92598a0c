"""kill -9 the worker again and again while it works through a stream: no revocation is lost.

The worker runs with a stable ``TETHER_WORKER_ID`` (a static group member), is SIGKILLed at a
random moment after it came up (now and then before: during recovery) and restarted at once.
The figures compare the revocations read from the topic with ``tether replay``'s for the same
input; duplicates are allowed (ids derive from causes), a missing one fails the test.

Sizes: ``TETHER_FAULT_*`` (fast) / ``TETHER_SOAK_*`` (soak): ``KILL_EVENTS`` (10k / 100k),
``KILL_RATE`` events/s produced (1500 / 2500), ``KILLS`` at least (2 / 12), ``KILL_AFTER_MIN`` and
``KILL_AFTER_MAX`` seconds after a restart (1-4 / 2-6), ``KILL_EARLY`` share of kills during
start-up (0 / 0.2), ``SEED``, ``TIMEOUT`` seconds to wait for the outputs (240 / 900).
"""

from __future__ import annotations

import random
import time

from corpus import fleet_lines
from scenario import Scenario, knob

SCENARIO = "worker_kill"


def test_sigkill_loop_loses_no_revocation(run: Scenario, variant: str) -> None:
    def k(name: str, fast: float, soak: float) -> float:
        return knob(variant, name, fast, soak)

    events, rate = int(k("KILL_EVENTS", 10_000, 100_000)), k("KILL_RATE", 1500, 2500)
    min_kills = int(k("KILLS", 2, 12))
    after = (k("KILL_AFTER_MIN", 1.0, 2.0), k("KILL_AFTER_MAX", 4.0, 6.0))
    early, timeout = k("KILL_EARLY", 0.0, 0.2), k("TIMEOUT", 240, 900)
    rng = random.Random(int(k("SEED", 11, 11)))

    lines = fleet_lines(events, seed=int(k("SEED", 11, 11)), end_before_now_s=600)
    expected = run.replay(lines)
    run.figures.events_in = len(lines)
    run.start()
    run.launch("w1")
    run.wait_up("w1")
    feeder = run.feed(lines, rate=rate)

    kills, during_startup, restart_s = 0, 0, []
    while kills < min_kills or not (feeder.done.is_set() and run.lag() == 0):
        if rng.random() < early:
            time.sleep(rng.uniform(0.3, 2.0))  # kill it while it recovers its tables
            during_startup += 1
        else:
            restart_s.append(run.wait_up("w1"))
            time.sleep(rng.uniform(*after))
        run.sigkill("w1")
        kills += 1
        run.launch("w1")
        if kills >= 10 * max(min_kills, 1) and feeder.done.is_set():
            break  # enough: the rest is up to the worker alone
    run.wait_up("w1")
    feeder.join(timeout)
    run.wait_for_revocations(expected, timeout)

    lost = run.count_revocations(expected)
    run.figures.extra.update(
        kills=kills,
        kills_during_startup=during_startup,
        restart_to_heartbeat_s_max=round(max(restart_s, default=0.0), 1),
        lag_at_end=run.lag(),
        produced=feeder.sent,
    )
    run.report()
    assert feeder.sent == len(lines)
    assert not lost, f"{len(lost)} revocations lost, e.g. {sorted(lost)[:5]}\n{run.log('w1')}"
    assert run.figures.revocations_expected > 0
