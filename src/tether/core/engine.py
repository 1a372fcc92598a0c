"""The in-process monitor: sessions, the token index, the watermark and due checks, in memory.

This is what ``tether replay`` and ``tether demo`` run. The streaming workers run the same folds
with state in changelog-backed tables; only the driver differs.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, MutableMapping
from datetime import datetime

from tether.core.credentials import CredentialUse, observe
from tether.core.fold import Context, fire_due, fold, wake_at
from tether.core.violations import Outbox, ts
from tether.models.events import InputEvent
from tether.models.session import Session, TokenState

_INF = float("inf")


class Monitor:
    """Folds events into per-workflow sessions and a per-token index; fires due checks.

    Time: ``watermark`` is the greatest event time applied. Checks due before it fire before the
    event that advanced it is applied. ``now`` stamps output records only; pass ``None`` to stamp
    them with the watermark (deterministic output for replay and backtesting).
    """

    def __init__(
        self,
        ctx: Context,
        sessions: MutableMapping[str, Session] | None = None,
        tokens: MutableMapping[str, TokenState] | None = None,
    ) -> None:
        self.ctx = ctx
        self.sessions: MutableMapping[str, Session] = sessions if sessions is not None else {}
        self.tokens: MutableMapping[str, TokenState] = tokens if tokens is not None else {}
        self.watermark = -_INF
        self._heap: list[tuple[float, str]] = []
        self._scheduled: dict[str, float] = {}
        self._token_heap: list[tuple[float, str]] = []

    def process(self, event: InputEvent, now: datetime | None = None) -> Outbox:
        """Apply one valid event (after firing whatever its event time makes due)."""
        out = Outbox()
        t = event.t
        if t > self.watermark:
            self._advance(t, now, out)
        stamp = now if now is not None else ts(self.watermark)
        wf = event.workflow_id
        before = self.sessions.get(wf)
        pending = len(before.pending) if before is not None else -1
        done = before.completed_at if before is not None else None
        uses: list[CredentialUse] = []
        s = fold(before, event, self.ctx, stamp, out, uses)
        self.sessions[wf] = s  # always write back: a table-backed store persists on assignment
        if before is None or len(s.pending) > pending or s.completed_at != done:
            self._schedule(s)
        self._route(uses, stamp, out)
        return out

    def advance(self, watermark: float, now: datetime | None = None) -> Outbox:
        """Move event time forward without an event (the processing-time backstop)."""
        out = Outbox()
        if watermark > self.watermark:
            self._advance(watermark, now, out)
        return out

    def flush(self, now: datetime | None = None) -> Outbox:
        """End of input: decide every pending check as if the grace period had passed."""
        out = Outbox()
        horizon = self.watermark + self.ctx.cfg.grace_s + 1e-3
        stamp = now if now is not None else ts(self.watermark) if self.watermark > -_INF else None
        if stamp is None:
            return out
        for wf in list(self.sessions):
            s = self.sessions[wf]
            if s.pending or (s.unknown is not None and not s.unknown_done):
                uses: list[CredentialUse] = []
                fire_due(s, horizon, self.ctx, stamp, out, uses)
                self.sessions[wf] = s
                self._route(uses, stamp, out)
        return out

    @property
    def open_sessions(self) -> int:
        """Sessions currently held in memory."""
        return len(self.sessions)

    def _advance(self, watermark: float, now: datetime | None, out: Outbox) -> None:
        self.watermark = watermark
        stamp = now if now is not None else ts(watermark)
        heap = self._heap
        while heap and heap[0][0] < watermark:
            due, wf = heapq.heappop(heap)
            if self._scheduled.get(wf) != due:
                continue  # superseded by an earlier wake-up
            del self._scheduled[wf]
            s = self.sessions.get(wf)
            if s is None:
                continue
            uses: list[CredentialUse] = []
            kept = fire_due(s, watermark, self.ctx, stamp, out, uses)
            self._route(uses, stamp, out)
            if kept is None:
                del self.sessions[wf]
            else:
                self.sessions[wf] = kept
                self._schedule(kept)
        self._expire_tokens(watermark)

    def _schedule(self, s: Session) -> None:
        wake = wake_at(s, self.ctx.cfg)
        wf = s.workflow_id
        if wake < self._scheduled.get(wf, _INF):
            self._scheduled[wf] = wake
            heapq.heappush(self._heap, (wake, wf))

    def _route(self, uses: Iterable[CredentialUse], stamp: datetime, out: Outbox) -> None:
        cfg = self.ctx.cfg
        for use in uses:
            before = self.tokens.get(use.token_id)
            st = observe(before, use, cfg, stamp, out)
            self.tokens[use.token_id] = st
            if before is None:
                heapq.heappush(self._token_heap, (st.expires_at, use.token_id))

    def _expire_tokens(self, watermark: float) -> None:
        """Forget tokens long expired (uses after expiry raise credential_expired anyway)."""
        heap = self._token_heap
        keep = max(self.ctx.cfg.grace_s, self.ctx.cfg.revocation_margin_s)
        while heap and heap[0][0] + keep < watermark:
            _, token_id = heapq.heappop(heap)
            st = self.tokens.get(token_id)
            if st is None:
                continue
            if st.expires_at + keep < watermark:
                del self.tokens[token_id]
            else:
                heapq.heappush(heap, (st.expires_at, token_id))
