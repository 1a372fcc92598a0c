"""The token index forgets a token once it has expired (plus the revocation margin) and, in the
streaming worker, once it has also gone unused for ``hold_s`` of processing time."""

from __future__ import annotations

import pytest

from tether.core import Context, DetectionConfig, Outbox
from tether.core.credentials import CredentialUse
from tether.core.engine import TokenIndex
from tether.models.session import PairUse

CFG = DetectionConfig()
KEEP = max(CFG.grace_s, CFG.revocation_margin_s)  # how long past its expiry a token is kept
EXPIRES = 1_000.0
HOLD = 300.0


def use(workflow: str = "wf-1", t: float = 10.0, expires: float = EXPIRES, event: str = "ev-1") -> CredentialUse:  # fmt: skip
    """A use of token ``tok-1`` by workload ``wl-a``."""
    return CredentialUse("tok-1", "wl-a", workflow, t, event, False, expires)


def index(hold_s: float = 0.0) -> TokenIndex:
    return TokenIndex(Context(CFG), {}, hold_s=hold_s)


@pytest.mark.parametrize(
    ("watermark", "kept"),
    [
        (EXPIRES, True),
        (EXPIRES + KEEP, True),
        (EXPIRES + KEEP + 1, False),
    ],
)
def test_without_a_hold_a_token_is_forgotten_a_margin_after_it_expires(
    watermark: float, kept: bool
) -> None:
    idx = index()
    idx.observe(use(), 10.0, Outbox())
    idx.expire(watermark)
    assert ("tok-1" in idx.tokens) is kept


@pytest.mark.parametrize(
    ("now", "kept"),
    [
        (5_000.0, True),  # last used at 5,000 s of processing time: held
        (5_000.0 + HOLD - 1, True),
        (5_000.0 + HOLD, False),
    ],
)
def test_with_a_hold_an_expired_token_is_kept_until_unused_for_the_hold(
    now: float, kept: bool
) -> None:
    idx = index(HOLD)
    idx.observe(use(), 5_000.0, Outbox())
    idx.expire(EXPIRES + KEEP + 1, now)
    assert ("tok-1" in idx.tokens) is kept


def test_each_use_restarts_the_hold() -> None:
    idx = index(HOLD)
    idx.observe(use(), 5_000.0, Outbox())
    idx.observe(use(workflow="wf-2", event="ev-2"), 5_200.0, Outbox())
    idx.expire(EXPIRES + KEEP + 1, 5_000.0 + HOLD)
    assert "tok-1" in idx.tokens
    idx.expire(EXPIRES + KEEP + 1, 5_200.0 + HOLD)
    assert "tok-1" not in idx.tokens


def test_recovered_tokens_are_held_afresh_from_the_first_check() -> None:
    idx = index(HOLD)
    idx.observe(use(), 5_000.0, Outbox())
    restarted = TokenIndex(Context(CFG), idx.tokens, hold_s=HOLD)
    restarted.reschedule_all()
    restarted.expire(EXPIRES + KEEP + 1, 9_000.0)  # long after the last use: held from now
    assert "tok-1" in restarted.tokens
    restarted.expire(EXPIRES + KEEP + 1, 9_000.0 + HOLD - 1)
    assert "tok-1" in restarted.tokens
    restarted.expire(EXPIRES + KEEP + 1, 9_000.0 + HOLD)
    assert "tok-1" not in restarted.tokens


def test_a_token_whose_expiry_moved_later_is_kept_until_the_new_expiry() -> None:
    idx = index()
    idx.observe(use(), 10.0, Outbox())
    idx.observe(use(workflow="wf-2", event="ev-2", expires=EXPIRES + 500), 20.0, Outbox())
    idx.expire(EXPIRES + KEEP + 1)
    assert "tok-1" in idx.tokens
    idx.expire(EXPIRES + 500 + KEEP + 1)
    assert "tok-1" not in idx.tokens


def test_a_token_remembers_each_workload_and_workflow_once_with_its_earliest_use() -> None:
    idx = index()
    out = Outbox()
    idx.observe(use(t=30.0, event="ev-3"), 30.0, out)
    idx.observe(use(t=10.0, event="ev-1"), 30.0, out)  # earlier, arriving late
    idx.observe(use(t=20.0, event="ev-2"), 30.0, out)
    idx.observe(use(workflow="wf-2", t=40.0, event="ev-4"), 40.0, out)
    assert idx.tokens["tok-1"].pairs == [
        PairUse("wl-a", "wf-1", 10.0, "ev-1", False),
        PairUse("wl-a", "wf-2", 40.0, "ev-4", False),
    ]
