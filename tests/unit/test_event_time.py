"""Event time in the streaming worker never runs ahead of input it has not read.

Checks that wait for a late event are decided once event time passes them. The processing-time
backstop moves event time on a quiet stream; it must not mistake a worker that is catching up
(after a restart, or slower than its input) for a quiet stream, or the checks are decided
without records still in Kafka, and the answer differs from replay's (the worker-kill test saw
lost and unexpected revocations).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from builders import T0, call, started
from streams import worker as worker_module
from streams.lag import InputLag
from streams.watermarks import PartitionWatermarks
from streams.worker import Worker
from tether.security import SetSigner, generate_key
from tether.settings import Settings
from worker_doubles import make_worker, records

NEG_INF = float("-inf")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- PartitionWatermarks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quiet_s", "behind", "expected"),
    [
        (0.5, False, 10.0),  # both active: the slower partition's
        (3.0, False, 50.0),  # partition 0 went quiet: no longer holds the other back
        (3.0, True, 10.0),  # quiet but known to have unread records: still holds back
        (31.0, True, 50.0),  # ... for at most behind_s
    ],
)
def test_a_quiet_partition_holds_event_time_back_only_while_it_has_unread_records(
    quiet_s: float, behind: bool, expected: float
) -> None:
    clock = Clock()
    marks = PartitionWatermarks(
        idle_s=2.0, clock=clock, behind=lambda p: behind and p == 0, behind_s=30.0
    )
    marks.assign({0, 1})
    marks.observe(0, 10.0)
    marks.observe(1, 50.0)
    clock.now += quiet_s
    marks.observe(1, 50.0)  # partition 1 keeps delivering
    assert marks.current() == expected


def test_a_new_partition_holds_event_time_back_from_its_seed() -> None:
    clock = Clock()
    marks = PartitionWatermarks(idle_s=2.0, clock=clock, behind=lambda p: p == 1)
    marks.assign({0, 1}, seeds={0: 40.0, 1: 20.0})
    marks.observe(0, 60.0)
    clock.now += 5
    marks.observe(0, 61.0)
    assert marks.current() == 20.0


# -- the worker's backstop ----------------------------------------------------------------


@pytest.fixture(scope="module")
def signer() -> SetSigner:
    return SetSigner(generate_key("ES256"), issuer="https://tether.test", token_issuer="sts")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(worker_module, "monotonic", clock)  # the worker's wall clock only
    return clock


@dataclass
class Lag:
    behind: set[int] = field(default_factory=set)
    buffered: bool = False

    def lag(self) -> InputLag:
        return InputLag(behind=lambda p: p in self.behind, buffered=lambda: self.buffered)


def _worker(signer: SetSigner, lag: Lag) -> Worker:
    return make_worker(signer, settings=Settings(grace_s=2.0, tick_s=0.2), lag=lag.lag())


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


T_START = T0.timestamp()


@pytest.mark.parametrize(
    ("behind", "buffered", "wait_s", "advances_by"),
    [
        (set(), False, 5.0, 5.0),  # quiet and caught up: event time follows the wall clock
        ({0}, False, 5.0, 0.0),  # records still unread in Kafka: catching up, not quiet
        (set(), True, 5.0, 0.0),  # records read but not handed over yet: same
        ({0}, False, 31.0, 31.0),  # ... at most behind_s: a wrong lag cannot stop time
        (set(), False, 0.1, 0.0),  # within a tick of the last record: not quiet yet
    ],
)
def test_the_backstop_moves_event_time_only_on_a_quiet_caught_up_stream(
    signer: SetSigner,
    clock: Clock,
    behind: set[int],
    buffered: bool,
    wait_s: float,
    advances_by: float,
) -> None:
    lag = Lag()
    w = _worker(signer, lag)
    w.assign({0})
    batch = records(started("wf-1", "planner", "tok-1", t=0), call("wf-1", "planner", "tok-1", t=1))
    _run(w.on_intents(batch))
    clock.now += 0.05
    _run(w.tick())  # the watermark reaches the records' event time
    before = w.engine.watermark
    assert before == pytest.approx(T_START + 1, abs=1e-6)
    lag.behind, lag.buffered = behind, buffered
    clock.now += wait_s
    _run(w.tick())
    assert w.engine.watermark - before == pytest.approx(advances_by, abs=0.06)


def test_time_spent_recovering_does_not_count_as_quiet_input(
    signer: SetSigner, clock: Clock
) -> None:
    lag = Lag()
    w = _worker(signer, lag)  # built when the process starts ...
    w.sessions["wf-1"] = _session_at(signer, T_START + 100)  # ... the table recovers this ...
    clock.now += 20.0  # ... which takes a while
    w.assign({0})
    _run(w.tick())  # the first tick once ready: reschedules, event time starts at the seed
    assert w.engine.watermark == pytest.approx(T_START + 100, abs=1e-6)
    clock.now += 0.5
    _run(w.tick())
    assert w.engine.watermark == pytest.approx(T_START + 100.5, abs=1e-6)  # not + 20.5


def _session_at(signer: SetSigner, t: float) -> Any:
    """A session whose last event was at ``t`` on partition 0 (as recovery installs it)."""
    lag = Lag()
    w = _worker(signer, lag)
    w.assign({0})
    seconds = t - T_START
    _run(w.on_intents(records(started("wf-1", "planner", "tok-1", t=seconds))))
    return w.sessions["wf-1"]
