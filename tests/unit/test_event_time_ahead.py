"""Event time in the streaming worker never runs ahead of its wall clock by more than
``max_ahead_s`` (issue 18, item 4): an event dated ahead (inside the 300 s skew bound) is
applied, but cannot carry the watermark, and with it every other workflow's waiting checks,
minutes into the future. The reproduction against a real worker is
``tests/integration/test_worker_hostile.py::test_event_dated_ahead_cannot_fire_other_workflows_checks_early``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from builders import T0, call, started
from tether.security import SetSigner, generate_key
from tether.settings import Settings
from worker_doubles import make_worker, records


@pytest.fixture(scope="module")
def signer() -> SetSigner:
    return SetSigner(generate_key("ES256"), issuer="https://tether.test", token_issuer="sts")


def _dated(ev: dict[str, object], ahead_s: float) -> dict[str, object]:
    """``ev`` moved so that T0 is ``ahead_s`` from now (its credential moved with it)."""
    shift = datetime.now(UTC) + timedelta(seconds=ahead_s) - T0
    out = dict(ev)

    def moved(s: object) -> str:
        return (datetime.fromisoformat(str(s)) + shift).isoformat()

    out["occurred_at"] = moved(ev["occurred_at"])
    cred = dict(ev["credential"])  # type: ignore[call-overload]
    cred["issued_at"], cred["expires_at"] = moved(cred["issued_at"]), moved(cred["expires_at"])
    out["credential"] = cred
    if "grant" in ev:
        grant = dict(ev["grant"])  # type: ignore[call-overload]
        grant["not_after"] = moved(grant["not_after"])
        out["grant"] = grant
    return out


@pytest.mark.parametrize("max_ahead_s", [0.0, 1.0, 2.0])
def test_an_event_dated_ahead_moves_event_time_at_most_to_the_bound(
    signer: SetSigner, max_ahead_s: float
) -> None:
    settings = Settings(grace_s=2.0, tick_s=0.2, signing_processes=0, max_ahead_s=max_ahead_s)
    w = make_worker(signer, settings=settings)
    w.assign({0})
    ahead = [
        _dated(started("wf-ahead", "rogue", "tok-r", t=0), 290),
        _dated(call("wf-ahead", "rogue", "tok-r", t=0.5), 290),
    ]

    async def go() -> None:
        await w.on_intents(records(*ahead))
        await w.tick()

    asyncio.run(go())
    limit = datetime.now(UTC).timestamp() + max_ahead_s
    assert w.engine.watermark <= limit
    assert w.events == 2  # applied, not dead-lettered
    assert w.deadletters == 0
    # a restart seeds event time from recovered sessions: not ahead of the clock either
    w.assign({0})
    asyncio.run(w.tick())
    assert w.engine.watermark <= datetime.now(UTC).timestamp() + max_ahead_s


# -- the input lag heartbeats carry (item 9) ------------------------------------------------


def test_input_lag_counts_from_when_a_partition_was_last_caught_up(
    signer: SetSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams import worker as worker_module
    from streams.lag import InputLag

    now = [100.0]
    monkeypatch.setattr(worker_module, "monotonic", lambda: now[0])
    behind: dict[int, int] = {}
    lag = InputLag(behind=lambda p: behind.get(p, 0) > 0, records=lambda p: behind.get(p, 0))
    w = make_worker(signer, lag=lag)
    w.assign({0, 1})
    assert w.input_lag() == (0.0, 0)  # both caught up
    behind[1] = 250
    now[0] += 0.5
    assert w.input_lag() == (0.5, 250)  # last seen caught up 0.5 s ago
    now[0] += 90
    assert w.input_lag() == (90.5, 250)  # its oldest unapplied record waited <= 90.5 s
    behind[1] = 0
    assert w.input_lag() == (0.0, 0)
