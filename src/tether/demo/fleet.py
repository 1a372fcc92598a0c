"""A deterministic synthetic agent fleet: its telemetry in arrival order, and its ground truth."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from tether.demo.attacks import stage
from tether.demo.catalog import TASKS, Task
from tether.demo.encoding import IdMint
from tether.demo.kinds import CODES, AttackKind, fits, fits_victim
from tether.demo.malformed import malformed_lines
from tether.demo.script import Roster, Script, Timed
from tether.demo.staging import Stage
from tether.demo.workflow import benign

__all__ = [
    "CODES",
    "GRACE_SECONDS",
    "AttackKind",
    "FleetConfig",
    "FleetEvent",
    "generate",
    "ground_truth",
    "iter_json_lines",
    "malformed_lines",
]

#: The contract's default grace period; delivery disorder must stay strictly below it.
GRACE_SECONDS = 5.0
_DEFAULT_START = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)
_LANE_STAGGER_MS = 60_000
_LANE_GAP_MS = (200, 15_000)


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """What fleet to simulate. Equal configs generate byte-identical telemetry.

    Attributes:
        seed: Seeds every random draw.
        start: Event time of the first workflow slot (timezone-aware).
        workflows: Number of workflow slots. A stolen-token attack also spawns its victim's
            workflow, so `ground_truth` can hold a few more ids than this.
        concurrency: Workflows running interleaved at any one time.
        attack_rate: Fraction of slots that carry one injected attack.
        disorder: Largest delay, in seconds of event time, between an event occurring and its
            delivery; an event is never delivered after one that occurred more than this later.
        duplicate_rate: Fraction of events delivered twice (same `event_id`, same payload).
        attack_kinds: The attacks to draw from, round-robin in a seeded order.
        extra_fields: Put an unknown `trace_id` field on tool calls (must be ignored).
    """

    seed: int = 7
    start: datetime = _DEFAULT_START
    workflows: int = 1000
    concurrency: int = 32
    attack_rate: float = 0.05
    disorder: float = 2.0
    duplicate_rate: float = 0.01
    attack_kinds: tuple[AttackKind, ...] = tuple(AttackKind)
    extra_fields: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "attack_kinds", tuple(AttackKind(k) for k in self.attack_kinds))
        if self.start.utcoffset() is None:
            raise ValueError("start must be timezone-aware")
        if self.workflows < 0 or self.concurrency < 1:
            raise ValueError("workflows must be >= 0 and concurrency >= 1")
        if not 0.0 <= self.attack_rate <= 1.0 or not 0.0 <= self.duplicate_rate <= 1.0:
            raise ValueError("attack_rate and duplicate_rate must lie in [0, 1]")
        if not 0.0 <= self.disorder < GRACE_SECONDS:
            raise ValueError(f"disorder must lie in [0, {GRACE_SECONDS}) seconds")
        if self.attack_rate > 0 and not self.attack_kinds:
            raise ValueError("attack_rate > 0 needs at least one attack kind")


@dataclass(frozen=True, slots=True)
class FleetEvent:
    """One delivery of an input event.

    Attributes:
        event: The event as a plain JSON-ready dict (shared with its duplicate; do not mutate).
        arrival: Simulated delivery time, epoch milliseconds; non-decreasing along the stream.
        label: The attack kind this event is part of, or None for benign traffic.
        duplicate: True for the second delivery of an event.
    """

    event: dict[str, Any]
    arrival: int
    label: str | None
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class _Plan:
    index: int
    task: Task
    workflow_id: str
    kind: AttackKind | None
    seed: int
    victim: tuple[Task, str] | None = None


def _workflow_id(index: int, task: Task, tag: str = "") -> str:
    return f"wf-{index:06d}{tag}-{task.short}"


def _plans(config: FleetConfig) -> Iterator[_Plan]:
    """What each slot runs; cheap, so `ground_truth` never has to build any events."""
    rng = random.Random(f"tether-fleet:{config.seed}:plan")
    kinds = list(config.attack_kinds)
    rng.shuffle(kinds)
    weights = [t.weight for t in TASKS]
    attacks = 0
    for index in range(config.workflows):
        kind = None
        if kinds and rng.random() < config.attack_rate:
            kind = kinds[attacks % len(kinds)]
            attacks += 1
        if kind is None:
            task = rng.choices(TASKS, weights)[0]
        else:
            pool = [t for t in TASKS if fits(kind, t)]
            task = rng.choices(pool, [t.weight for t in pool])[0]
        victim = None
        if kind is AttackKind.STOLEN_TOKEN_REPLAY:
            pool = [t for t in TASKS if fits_victim(t, task)]
            victim_task = rng.choices(pool, [t.weight for t in pool])[0]
            victim = (victim_task, _workflow_id(index, victim_task, "v"))
        yield _Plan(index, task, _workflow_id(index, task), kind, rng.getrandbits(64), victim)


def ground_truth(config: FleetConfig) -> dict[str, frozenset[str]]:
    """Every workflow id the fleet emits, mapped to the finding codes it must raise."""
    truth: dict[str, frozenset[str]] = {}
    for plan in _plans(config):
        truth[plan.workflow_id] = CODES[plan.kind] if plan.kind else frozenset()
        if plan.victim is not None:
            truth[plan.victim[1]] = frozenset()
    return truth


def _script(plan: _Plan, roster: Roster, start_ms: int, config: FleetConfig) -> list[Timed]:
    """All events of one slot, sorted by event time."""
    rng = random.Random(plan.seed)
    script = Script(roster, rng, IdMint(plan.index, rng), config.extra_fields)
    if plan.kind is None:
        benign(script, plan.task, plan.workflow_id, start_ms)
    else:
        disorder_ms = int(config.disorder * 1000)
        stage(
            plan.kind,
            Stage(script, plan.task, plan.workflow_id, start_ms, disorder_ms, plan.victim),
        )
    return script.finish()


@dataclass(slots=True)
class _Lanes:
    """`concurrency` lanes, each running its slots back to back; merged by event time."""

    config: FleetConfig
    rng: random.Random
    plans: Iterator[_Plan]
    roster: Roster
    heap: list[tuple[int, int]] = field(default_factory=list)
    scripts: list[list[Timed]] = field(default_factory=list)
    cursor: list[int] = field(default_factory=list)

    def open(self, base_ms: int) -> None:
        for lane in range(self.config.concurrency):
            self.scripts.append([])
            self.cursor.append(0)
            self._load(lane, base_ms + self.rng.randint(0, _LANE_STAGGER_MS))

    def _load(self, lane: int, start_ms: int) -> None:
        plan = next(self.plans, None)
        if plan is None:
            return
        events = _script(plan, self.roster, start_ms, self.config)
        self.scripts[lane], self.cursor[lane] = events, 0
        heapq.heappush(self.heap, (events[0][0], lane))

    def pop(self) -> Timed | None:
        """The next event by event time across all lanes, or None when every slot has run."""
        if not self.heap:
            return None
        _, lane = heapq.heappop(self.heap)
        events, pos = self.scripts[lane], self.cursor[lane]
        item = events[pos]
        pos += 1
        if pos < len(events):
            self.cursor[lane] = pos
            heapq.heappush(self.heap, (events[pos][0], lane))
        else:
            self._load(lane, item[0] + self.rng.randint(*_LANE_GAP_MS))
        return item

    def horizon(self) -> float:
        """No event still to come occurs before this time."""
        return self.heap[0][0] if self.heap else math.inf


def _deliveries(config: FleetConfig) -> Iterator[FleetEvent]:
    """Merge the lanes by event time, delay each delivery within `disorder`, add duplicates."""
    rng = random.Random(f"tether-fleet:{config.seed}:delivery")
    start_ms = int(config.start.timestamp() * 1000)
    lanes = _Lanes(config, rng, _plans(config), Roster(config.seed))
    lanes.open(start_ms)
    max_delay = int(config.disorder * 1000)
    dup_rate = config.duplicate_rate
    pending: list[tuple[int, int, FleetEvent]] = []
    seq = 0
    while (item := lanes.pop()) is not None:
        t, event, label = item
        r = rng.random()
        arrival = t + int(max_delay * r * r)
        heapq.heappush(pending, (arrival, seq, FleetEvent(event, arrival, label)))
        seq += 1
        if dup_rate and rng.random() < dup_rate:
            again = rng.randint(arrival, t + max_delay)
            heapq.heappush(pending, (again, seq, FleetEvent(event, again, label, True)))
            seq += 1
        horizon = lanes.horizon()
        while pending and pending[0][0] <= horizon:
            yield heapq.heappop(pending)[2]
    while pending:
        yield heapq.heappop(pending)[2]


def generate(config: FleetConfig) -> Iterator[FleetEvent]:
    """Yield the fleet's telemetry in arrival order, in memory bounded by `concurrency`."""
    return _deliveries(config)


def iter_json_lines(config: FleetConfig) -> Iterator[bytes]:
    """Yield each delivery of `generate(config)` as one compact UTF-8 JSON line (no newline)."""
    dumps = orjson.dumps
    for delivery in _deliveries(config):
        yield dumps(delivery.event)
