"""A target's revocation is never republished shorter, in `tether replay` too (issue 18 item 6).

The streaming worker keeps the same rule with its revocation ledger (tests/integration/
test_worker_hostile.py, with compaction running); replay output is what users compare the
pipeline with, and a consumer that keeps the last record per key (as compaction does) must
end up with the longest revocation either way.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import orjson
import pytest

from builders import call, started
from tether.core.config import DetectionConfig
from tether.core.engine import Monitor
from tether.core.fold import Context
from tether.replay import Replayer

YEARS = 3 * 365 * 86400


def replay(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = io.BytesIO()
    rep = Replayer(Monitor(Context(DetectionConfig())), out.write)
    rep.run(io.BytesIO(b"\n".join(orjson.dumps(e) for e in events)))
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def _not_afters(records: list[dict[str, Any]], key: str) -> list[datetime]:
    return [
        datetime.fromisoformat(r["not_after"])
        for r in records
        if r.get("kind") == "revocation" and f"{r['target']['kind']}:{r['target']['id']}" == key
    ]


@pytest.mark.parametrize(
    ("later_expiry", "label"),
    [(-YEARS, "claims it expired years ago"), (30, "claims it expires in 30 s")],
)
def test_a_token_presented_again_with_an_earlier_expiry_is_not_revoked_shorter(
    later_expiry: float, label: str
) -> None:
    events = [
        started("wf-a", "planner", "jti-p", scopes=["crm:read"]),
        # scope escalation: the token carries crm:write, revoked until its expiry (1 h) + margin
        call("wf-a", "planner", "jti-p", t=1, scopes=["crm:read", "crm:write"], expires=3600),
        started("wf-b", "planner", "jti-q", t=2, scopes=["crm:read"]),
        # the same token id again, in another workflow, claiming an earlier expiry
        call(
            "wf-b", "planner", "jti-p", t=3, scopes=["crm:read", "crm:write"], expires=later_expiry
        ),
    ]
    records = replay(events)
    not_afters = _not_afters(records, "token:jti-p")
    assert len(not_afters) >= 2, label  # the second presentation is revoked too
    for i in range(1, len(not_afters)):
        assert not_afters[i] >= max(not_afters[:i]), (label, not_afters)
