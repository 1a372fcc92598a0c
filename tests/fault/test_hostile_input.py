"""Fuzzed malformed and hostile records: the worker never crashes, and every one of them is in the
dead-letter topic with the reason the codec gives it (matched by source partition and offset).

The records are produced raw (the SDK Emitter validates): see ``fuzz.py`` for the families.
Valid fleet traffic follows them; the same worker process must then produce every revocation
``tether replay`` expects for it.

Sizes: ``TETHER_FAULT_*`` (fast) / ``TETHER_SOAK_*`` (soak): ``FUZZ`` hostile records
(3,000 / 20,000), ``FUZZ_VALID_EVENTS`` valid events after them (2,000 / 20,000), ``SEED``,
``TIMEOUT`` seconds (240 / 900).
"""

from __future__ import annotations

from collections import Counter

from corpus import fleet_lines, workflow_key
from fuzz import hostile_records
from scenario import Scenario, knob, wait_until

SCENARIO = "hostile_input"


def test_every_hostile_record_is_dead_lettered_with_its_reason(run: Scenario, variant: str) -> None:
    n = int(knob(variant, "FUZZ", 3_000, 20_000))
    valid_events = int(knob(variant, "FUZZ_VALID_EVENTS", 2_000, 20_000))
    seed, timeout = int(knob(variant, "SEED", 13, 13)), knob(variant, "TIMEOUT", 240, 900)

    hostile = hostile_records(n, seed)
    lines = fleet_lines(valid_events, seed=seed, end_before_now_s=600)
    expected = run.replay(lines)
    run.start()
    run.launch("w1")
    run.wait_up("w1")
    pid = run.pid("w1")

    positions = run.produce_records([(h.key, h.value) for h in hostile])
    assert len(positions) == len(hostile)
    want = dict(zip(positions, hostile, strict=True))
    run.produce_records([(workflow_key(line), line) for line in lines])
    run.figures.events_in = len(hostile) + len(lines)

    def dead_letters() -> dict[tuple[int, int], list[dict]]:
        assert run.tap is not None
        by_source: dict[tuple[int, int], list[dict]] = {}
        for s in run.tap.records("deadletter"):
            src = s.doc["source"]
            by_source.setdefault((src["partition"], src["offset"]), []).append(s.doc)
        return by_source

    wait_until(
        lambda: want.keys() <= dead_letters().keys(),
        timeout,
        "a dead letter for every hostile record",
        interval=0.5,
        check=run.assert_alive,
    )
    run.wait_for_revocations(expected, timeout)

    got = dead_letters()
    missing = [pos for pos in want if pos not in got]
    wrong = {
        pos: (want[pos].case, want[pos].reason, got[pos][0]["reason"], got[pos][0]["error"][:200])
        for pos in want
        if pos in got and got[pos][0]["reason"] != want[pos].reason.split(":")[0]
    }
    unexplained = [d for ds in got.values() for d in ds if not (d["reason"] and d["error"])]
    internal = [d for ds in got.values() for d in ds if d["error"].startswith("internal error")]
    extra = [pos for pos in got if pos not in want]
    lost = run.count_revocations(expected)
    run.figures.extra.update(
        hostile_records=len(hostile),
        dead_letters_expected=len(hostile),
        dead_letters_missing=len(missing),
        dead_letters_wrong_reason=len(wrong),
        dead_letters_internal_error=len(internal),
        dead_letters_not_hostile=len(extra),
        reasons=dict(Counter(d[0]["reason"] for d in got.values())),
        cases=len({h.case for h in hostile}),
        same_pid=run.pid("w1") == pid,
        tracebacks_in_log=run.log_text("w1").count("Traceback"),
    )
    run.report()
    run.assert_alive("w1")
    assert run.pid("w1") == pid, "the worker restarted"
    assert not missing, f"{len(missing)} hostile records without a dead letter: {missing[:10]}"
    assert not wrong, f"{len(wrong)} dead letters with another reason: {list(wrong.items())[:10]}"
    assert not unexplained
    assert not internal, f"the codec raised on {len(internal)} records: {internal[:3]}"
    assert not extra, f"dead letters for records that were not hostile: {extra[:10]}"
    assert not lost, f"{len(lost)} revocations lost after the hostile records: {sorted(lost)[:5]}"
