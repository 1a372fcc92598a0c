"""``tether demo --write FILE``: the demo fleet's telemetry as a JSON Lines file to try tether on.

The quick start needs an ``events.jsonl`` that a new user does not have. This writes the same
seeded fleet ``tether demo`` plays (benign workflows, injected attacks, a few malformed lines),
in arrival order, one input event per line: ready for ``tether replay`` and ``tether emit``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO

import orjson

from tether.demo.fleet import FleetConfig, generate, ground_truth, malformed_lines


@dataclass(frozen=True, slots=True)
class SampleStats:
    """What a sample file holds."""

    events: int
    workflows: int
    attacked: int
    malformed: int


_REFERENCE_START = datetime(2026, 1, 1, tzinfo=UTC)
_MARGIN = timedelta(minutes=1)


def ending_before(
    now: datetime, *, workflows: int = 400, seed: int = 7, attack_rate: float = 0.08
) -> datetime:
    """The start at which the fleet's last delivery falls a minute before ``now``.

    So a sample written now reads like telemetry that just happened: a streaming worker accepts
    every event (it dead-letters events dated ahead of its clock), and the revocations of the
    last workflows are still in force when a gateway reads them. (The fleet's shape does not
    depend on its start, so one cheap pass at any start gives its span.)
    """
    config = FleetConfig(
        seed=seed, workflows=workflows, attack_rate=attack_rate, start=_REFERENCE_START
    )
    last = int(_REFERENCE_START.timestamp() * 1000)
    for delivery in generate(config):
        last = delivery.arrival
    span = timedelta(milliseconds=last) - timedelta(seconds=_REFERENCE_START.timestamp())
    return (now - span - _MARGIN).replace(microsecond=0)


def write_sample(
    out: IO[bytes],
    *,
    start: datetime,
    workflows: int = 400,
    seed: int = 7,
    attack_rate: float = 0.08,
    malformed: int = 3,
) -> SampleStats:
    """Write the fleet's deliveries to ``out`` as JSON Lines; return what was written.

    Args:
        out: a binary stream; one compact JSON object and a newline per delivery.
        start: event time of the first workflow (timezone-aware); :func:`ending_before`
            gives one that ends the fleet just before a given time.
        workflows: workflow slots (a stolen-token attack adds its victim's workflow).
        seed: seeds the fleet: the same seed and start give the same bytes.
        attack_rate: fraction of workflows carrying one injected attack.
        malformed: lines that are not valid events (dead-letter material), at seeded places.

    Returns:
        The counts written.
    """
    config = FleetConfig(seed=seed, workflows=workflows, attack_rate=attack_rate, start=start)
    truth = ground_truth(config)
    bad = malformed_lines(seed, malformed)
    rng = random.Random(f"tether-demo-sample:{seed}")
    events = 0
    for delivery in generate(config):
        if bad and rng.random() < 0.002:  # about one per 500 lines
            out.write(bad.pop() + b"\n")
        out.write(orjson.dumps(delivery.event) + b"\n")
        events += 1
    for line in bad:  # whatever the draw left for the end
        out.write(line + b"\n")
    return SampleStats(
        events=events,
        workflows=len(truth),
        attacked=sum(1 for codes in truth.values() if codes),
        malformed=malformed,
    )
