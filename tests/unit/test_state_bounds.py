"""State stays bounded: shared values, remembered event ids, the engine's wake-up heap."""

from __future__ import annotations

from builders import call, completed, parse, started
from tether.core import Context, DetectionConfig, Outbox
from tether.core.credentials import CredentialUse
from tether.core.engine import WorkflowEngine
from tether.core.fold import fold
from tether.models import session as S
from tether.models.session import Session


def test_the_shared_cache_starts_over_when_full() -> None:
    for i in range(S.SHARED_MAX + 10):
        S.shared(("value", i))
    assert len(S._shared) <= S.SHARED_MAX
    first = S.shared(("again", 1))
    assert S.shared(("again", 1)) is first  # still shares after starting over


def test_large_sets_are_not_shared() -> None:
    items = [f"scope-{i}" for i in range(S.SHARED_MAX_ITEMS + 1)]
    assert S.shared_set(items) == S.shared_set(items)
    assert S.shared_set(items) is not S.shared_set(items)
    assert S.shared_set(items[:3]) is S.shared_set(list(reversed(items[:3])))


def test_event_ids_are_bounded_by_the_dedup_window_without_any_wake_up() -> None:
    window = 60.0
    ctx = Context(DetectionConfig(dedup_window_s=window))
    step = 0.05  # 20 events/s: 6,000 events span 300 s, five windows
    s: Session | None = fold(
        None, parse(started("wf-1", "planner", "tok-1")), ctx, 0.0, Outbox(), []
    )
    for i in range(1, 6000):
        ev = parse(call("wf-1", "planner", "tok-1", t=i * step, eid=f"c{i}"))
        s = fold(s, ev, ctx, 0.0, Outbox(), [])
    assert s is not None
    assert len(s.seen) <= 4097
    last = s.last_time
    assert all(f"c{i}" in s.seen for i in range(1, 6000) if i * step >= last - window)
    assert s.recent is not None
    assert len(s.recent) <= 5 / step + 1


def test_superseded_wake_ups_do_not_pile_up() -> None:
    # Each call brings a new token: its use is settled a grace period later, then the session
    # waits for its idle timeout, superseded by the next call's earlier wake-up, and so on.
    engine = WorkflowEngine(Context(DetectionConfig()))
    out, uses = Outbox(), list[CredentialUse]()
    engine.process(parse(started("wf-1", "planner", "tok-0")), None, out, uses)
    for i in range(1, 3000):
        engine.process(parse(call("wf-1", "planner", f"tok-{i}", t=10 * i)), None, out, uses)
    assert len(engine._heap) <= 2 * len(engine._scheduled) + 1024 + 1
    assert len(uses) == 2999  # every use but the last was settled and reported
    engine.process(parse(completed("wf-1", "planner", t=30000)), None, out, uses)
    # past completion + retention and past the dedup window of its last event ids
    engine.advance(engine.watermark + 3600 + 6, None, out, uses)
    assert not engine.sessions


def test_a_long_jump_of_event_time_is_worked_off_in_bounded_steps() -> None:
    """After a stretch of lag every session's grace period ends at once; the worker decides
    them in steps of at most ``limit`` sessions, with the same outcome as one step."""

    def engine_with_completed(n: int) -> WorkflowEngine:
        eng = WorkflowEngine(Context(DetectionConfig()))
        for i in range(n):
            for raw in (started(f"wf-{i}", "planner", f"tok-{i}"), completed(f"wf-{i}", "planner")):
                eng.process(parse(raw), None, Outbox(), [])
        return eng

    later = parse(started("wf-x", "planner", "tok-x")).t + 86_400.0
    whole = engine_with_completed(10)
    assert whole.advance(later, None, Outbox(), []) is True
    stepped = engine_with_completed(10)
    steps, left = 0, [10]
    while not stepped.advance(later, None, Outbox(), [], limit=3):
        steps += 1
        left.append(len(stepped.sessions))
        assert left[-2] - left[-1] <= 3  # at most 3 sessions decided per step
        assert stepped.watermark == later
        assert stepped.pending
    assert steps >= 3
    assert len(stepped.sessions) == len(whole.sessions) == 0
    assert not stepped.pending
