"""An output topic the worker cannot write to: the input is held, never committed past.

* revocations unwritable: a violation arrives at a known offset; its finding is published, its
  revocation is not. The group's committed offset on that partition must stay at or before the
  violating record for as long as the topic refuses writes; once it accepts them again, the
  revocation arrives and nothing is lost against ``tether replay``.
* the sessions changelog unwritable: the violation's finding and revocation are published (outputs
  come first), its session state is not, and the committed offset again waits for it: state is
  durable before the input is acknowledged.
* dead-letter topic unwritable: a malformed record arrives at a known offset. The worker must
  stop there (committed offsets frozen on every partition, the malformed record not skipped),
  and once the topic accepts writes again its dead letter arrives and processing resumes.

The lever is ``Scenario.unwritable`` (``max.message.bytes=1`` on the topic, then restored).

Sizes: ``TETHER_FAULT_*`` (fast) / ``TETHER_SOAK_*`` (soak): ``BLOCK_EVENTS`` fleet events around
the fault (4,000 / 40,000), ``BLOCK_S`` seconds the topic stays unwritable once the worker hit
it (8 / 120), ``SEED``, ``TIMEOUT`` seconds (180 / 900).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from corpus import fleet_lines, workflow_key
from handmade import latest_time, violation
from scenario import Scenario, knob, wait_until
from tap import Seen

from tether.demo.malformed import malformed_lines


@pytest.fixture
def revocations_run(open_scenario: Callable[[str], Scenario]) -> Scenario:
    return open_scenario("revocations_unwritable")


@pytest.fixture
def state_run(open_scenario: Callable[[str], Scenario]) -> Scenario:
    return open_scenario("state_unwritable")


@pytest.fixture
def deadletter_run(open_scenario: Callable[[str], Scenario]) -> Scenario:
    return open_scenario("deadletter_unwritable")


def _warm_up(run: Scenario, head: list[bytes], timeout: float) -> None:
    """The first half of the stream, processed and committed, its waiting checks decided."""
    run.start()
    run.launch("w1")
    run.wait_up("w1")
    expected_head = run.replay(head, "head")
    run.produce_records([(workflow_key(line), line) for line in head])
    run.wait_for_revocations(expected_head, timeout)
    assert run.lag() == 0, "the warm-up input was not committed"


def _failed_deliveries(run: Scenario, topic: str) -> int:
    return run.log_text("w1").count(f"delivery to {run.topic(topic)}")


def _violation_while_unwritable(run: Scenario, variant: str, topic: str) -> dict[str, Any]:
    """Warm up, make ``topic`` unwritable, send a violation (and the rest of the stream) and
    watch the group's commits while the worker cannot finish the violation's step; restore,
    wait for everything, fill the figures. What the tests assert on comes back."""
    events = int(knob(variant, "BLOCK_EVENTS", 4_000, 40_000))
    block_s, timeout = knob(variant, "BLOCK_S", 8, 120), knob(variant, "TIMEOUT", 180, 900)
    lines = fleet_lines(events, seed=int(knob(variant, "SEED", 17, 17)), end_before_now_s=600)
    head, tail = lines[: len(lines) // 2], lines[len(lines) // 2 :]
    start, call = violation("held", latest_time(head))
    expected = run.replay([*head, start, call, *tail])
    run.figures.events_in = len(lines) + 2
    _warm_up(run, head, timeout)
    pid = run.pid("w1")

    def of_violation(kind: str) -> list[Seen]:
        assert run.tap is not None
        return [s for s in run.tap.records(kind) if s.doc["workflow_id"] == "wf-fault-held"]

    with run.unwritable(topic):
        blocked_at = time.time()
        (p, _), (p_call, o_call) = run.produce_records(
            [(workflow_key(start), start), (workflow_key(call), call)]
        )
        assert p == p_call
        run.produce_records([(workflow_key(line), line) for line in tail])
        wait_until(
            lambda: bool(of_violation("findings")),
            timeout,
            "the violation's finding (the worker processed it)",
            check=run.assert_alive,
        )
        wait_until(
            lambda: _failed_deliveries(run, topic) > 0,
            timeout,
            f"a refused delivery to {topic} in the worker's log",
            check=run.assert_alive,
        )
        samples = run.watch_commits(block_s, check=run.assert_alive)
        revoked_during = of_violation("revocations")
        unblocked_at = time.time()

    run.wait_for_revocations(expected, timeout)
    lost = run.count_revocations(expected)
    held = max(sample.get(p, -1) for sample in samples)
    revoked = of_violation("revocations")
    run.figures.extra.update(
        unwritable=topic,
        violating_record=f"{p}@{o_call}",
        committed_max_while_unwritable=held,
        unwritable_s=round(unblocked_at - blocked_at, 1),
        refused_deliveries_logged=_failed_deliveries(run, topic),
        heartbeat_gap_s=round(run.tap.heartbeat_gap(blocked_at, unblocked_at), 1),
        violation_revoked_while_unwritable=bool(revoked_during),
        violation_revoked_at_end=bool(revoked),
        lag_at_end=run.lag(),
        same_pid=run.pid("w1") == pid,
    )
    run.report()
    assert held <= o_call, f"committed {held} past the violating input {o_call}, step not durable"
    assert revoked, "the violation's revocation never arrived after the topic was writable again"
    assert not lost, f"{len(lost)} revocations lost: {sorted(lost)[:5]}"
    assert run.lag() == 0
    assert run.pid("w1") == pid
    return {"revoked_during": revoked_during}


def test_unpublished_revocation_holds_the_input_offset(
    revocations_run: Scenario, variant: str
) -> None:
    seen = _violation_while_unwritable(revocations_run, variant, "revocations")
    assert not seen["revoked_during"], "published while the topic refused writes?"


def test_unpersisted_state_holds_the_input_offset(state_run: Scenario, variant: str) -> None:
    """The sessions changelog unwritable: the outputs go out (they come first), the state does
    not, and the input offset waits for the state."""
    seen = _violation_while_unwritable(state_run, variant, "monitor-sessions-changelog")
    assert seen["revoked_during"], "the revocation should precede the state it reflects"


def test_unwritable_dead_letter_topic_stops_the_input(
    deadletter_run: Scenario, variant: str
) -> None:
    run = deadletter_run
    events = int(knob(variant, "BLOCK_EVENTS", 4_000, 40_000))
    block_s, timeout = knob(variant, "BLOCK_S", 8, 120), knob(variant, "TIMEOUT", 180, 900)
    lines = fleet_lines(events, seed=int(knob(variant, "SEED", 19, 19)), end_before_now_s=600)
    head, tail = lines[: len(lines) // 2], lines[len(lines) // 2 :]
    bad = malformed_lines(19, 1)[0]
    expected = run.replay([*head, *tail])  # replay dead-letters `bad` too; not a revocation
    run.figures.events_in = len(lines) + 1
    _warm_up(run, head, timeout)
    pid = run.pid("w1")

    with run.unwritable("deadletter"):
        blocked_at = time.time()
        [(p, o)] = run.produce_records([(b"wf-fault-dlq", bad)])
        run.produce_records([(workflow_key(line), line) for line in tail])
        wait_until(
            lambda: _failed_deliveries(run, "deadletter") > 0,
            timeout,
            "a refused delivery to the dead-letter topic in the worker's log",
            check=run.assert_alive,
        )
        time.sleep(2.0)  # commits of batches acknowledged before it may still be on their way
        samples = run.watch_commits(block_s, check=run.assert_alive)
        dead_during = len(run.tap.records("deadletter"))
        unblocked_at = time.time()

    def dead_letter_for_bad() -> bool:
        return any(
            (s.doc["source"]["partition"], s.doc["source"]["offset"]) == (p, o)
            for s in run.tap.records("deadletter")
        )

    wait_until(dead_letter_for_bad, timeout, "the held dead letter", check=run.assert_alive)
    run.wait_for_revocations(expected, timeout)
    lost = run.count_revocations(expected)
    held = max(sample.get(p, -1) for sample in samples)
    moved = sorted({q for s in samples for q in s if s[q] != samples[0][q]})
    run.figures.extra.update(
        malformed_record=f"{p}@{o}",
        committed_max_while_unwritable=held,
        partitions_committing_while_unwritable=moved,
        unwritable_s=round(unblocked_at - blocked_at, 1),
        refused_deliveries_logged=_failed_deliveries(run, "deadletter"),
        heartbeat_gap_s=round(run.tap.heartbeat_gap(blocked_at, unblocked_at), 1),
        dead_letters_while_unwritable=dead_during,
        lag_at_end=run.lag(),
        same_pid=run.pid("w1") == pid,
    )
    run.report()
    assert held <= o, f"committed {held} past the malformed record at {o} (its dead letter unsent)"
    assert not moved, f"input kept being committed on partitions {moved}: records dropped?"
    assert dead_during == 0
    assert not lost, f"{len(lost)} revocations lost: {sorted(lost)[:5]}"
    assert run.lag() == 0
    assert run.pid("w1") == pid
