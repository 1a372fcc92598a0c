"""Drivers of the folds: workflow sessions with their watermark and due checks, the token index,
and the in-process ``Monitor`` that wires the two together.

``tether replay`` and ``tether demo`` run ``Monitor``. The streaming workers run
``WorkflowEngine`` over the session table and ``TokenIndex`` over the token table, with the
credential uses between them travelling through a topic keyed by ``token_id``.
"""

from __future__ import annotations

import heapq
from collections.abc import MutableMapping
from datetime import datetime

from tether.core.credentials import CredentialUse, observe
from tether.core.decisions import DecisionLog
from tether.core.floor import NotAfterFloor
from tether.core.fold import Context, fire_due, fold, wake_at
from tether.core.sharing import next_review, note, review, settle_s, shares_credentials
from tether.core.violations import Failure, Outbox, Stamp
from tether.models.events import InputEvent
from tether.models.outputs import Revocation
from tether.models.session import Session, TokenState

_INF = float("inf")
_HEAP_SLACK = 1024  # superseded wake-ups tolerated beyond the live ones (see _compact_heap)


class WorkflowEngine:
    """Folds events into per-workflow sessions and fires checks as event time passes them.

    Time: ``watermark`` is the greatest event time applied (or given to ``advance``). Checks due
    before it fire before the event that advanced it is applied. ``now`` stamps output records
    only; ``None`` stamps them with the watermark (deterministic output for replay).
    Credential uses bound for the token index are appended to ``uses``.
    """

    def __init__(self, ctx: Context, sessions: MutableMapping[str, Session] | None = None) -> None:
        self.ctx = ctx
        self.sessions: MutableMapping[str, Session] = sessions if sessions is not None else {}
        self.watermark = -_INF
        self.latest = -_INF  # the greatest event time applied (the watermark may be held back)
        self._heap: list[tuple[float, str]] = []
        self._scheduled: dict[str, float] = {}

    def process(
        self,
        event: InputEvent,
        now: datetime | None,
        out: Outbox,
        uses: list[CredentialUse],
        *,
        advance: bool = True,
        ceiling: float = _INF,
    ) -> bool:
        """Apply one valid event (after firing whatever its event time makes due).

        With ``advance=False`` the event does not move the watermark: a driver that merges
        several partitions moves it itself (``advance``) to the slowest active partition.
        ``ceiling`` bounds how far the event may move it (the event itself is still judged at
        its own time): a forward-dated event must not fire everyone's waiting checks early.

        Failure isolation: if folding the event raises, the event is reported in
        ``out.failures`` (the driver dead-letters it, reason ``internal_error``), its id is
        forgotten so that a redelivery is judged afresh, and this returns False. Whatever the
        fold produced before the error stays: each finding leaves whole with its revocations and
        is remembered as raised only once emitted, and each fact recorded (a token used, a
        delegation granted) is a fact of a valid event. Other events' outputs are never touched.
        """
        t = event.t
        self.latest = max(self.latest, t)
        if advance and t > self.watermark and ceiling > self.watermark:
            self._advance(min(t, ceiling), now, out, uses)
        stamp: Stamp = now if now is not None else self.watermark
        wf = event.workflow_id
        before = self.sessions.get(wf)
        applied = True
        try:
            s = fold(before, event, self.ctx, stamp, out, uses)
        except Exception as exc:  # one event's failure is its own
            out.failures.append(Failure.of(wf, exc, event))
            if before is None:
                return False  # nothing was stored: as if the event had never come
            s, applied = before, False
            s.seen.pop(event.event_id, None)
        self.sessions[wf] = s  # always write back: a table-backed store persists on assignment
        if s.rewake:
            self._schedule(s)
        return applied

    def advance(
        self,
        watermark: float,
        now: datetime | None,
        out: Outbox,
        uses: list[CredentialUse],
        *,
        limit: int | None = None,
    ) -> bool:
        """Move event time forward without an event (the processing-time backstop).

        With ``limit``, decide the due checks of at most that many sessions and leave the
        rest due for the next call (even with the same ``watermark``): a long jump of event
        time (catching up with the wall clock after a stretch of lag, when every session's
        grace period ends at once) is then worked off in bounded steps instead of one that
        holds the event loop and all of its outputs at once. The decisions are the ones one
        unbounded step would make. Returns whether nothing due is left.
        """
        if watermark > self.watermark or self.pending:
            self._advance(max(watermark, self.watermark), now, out, uses, limit)
        return not self.pending

    @property
    def pending(self) -> bool:
        """Whether checks due before the watermark are still to be decided (a bounded
        ``advance`` stopped short)."""
        heap = self._heap
        return bool(heap) and heap[0][0] < self.watermark

    def flush(self, now: datetime | None, out: Outbox, uses: list[CredentialUse]) -> None:
        """End of input: decide every pending check as if the grace period had passed."""
        if self.watermark == -_INF and self.latest == -_INF:
            return
        # past every event applied, even those a ceiling kept the watermark behind
        horizon = max(self.watermark, self.latest) + self.ctx.cfg.grace_s + 1e-3
        stamp: Stamp = now if now is not None else self.watermark
        for wf in list(self.sessions):
            s = self.sessions[wf]
            if s.pending or s.unsettled or (s.unknown is not None and not s.unknown_done):
                try:
                    fire_due(s, horizon, self.ctx, stamp, out, uses, end=True)
                except Exception as exc:  # one workflow's failure is its own
                    out.failures.append(Failure.of(wf, exc))
                self.sessions[wf] = s

    def reschedule_all(self) -> None:
        """Rebuild the wake-up index from the store (after recovery or a rebalance)."""
        self._heap = []
        self._scheduled = {}
        for s in list(self.sessions.values()):
            self._schedule(s)

    def forget(self, workflow_ids: set[str]) -> None:
        """Drop wake-ups for sessions this engine no longer owns (partitions revoked)."""
        for wf in workflow_ids:
            self._scheduled.pop(wf, None)

    @property
    def next_wake(self) -> float:
        """The earliest event time at which something is due (``inf`` when nothing is)."""
        return self._heap[0][0] if self._heap else _INF

    def _advance(
        self,
        watermark: float,
        now: datetime | None,
        out: Outbox,
        uses: list[CredentialUse],
        limit: int | None = None,
    ) -> None:
        self.watermark = watermark
        stamp: Stamp = now if now is not None else watermark
        heap = self._heap
        budget = limit if limit is not None else -1
        while heap and heap[0][0] < watermark:
            if budget == 0:
                return  # the rest stays due (``pending``)
            due, wf = heapq.heappop(heap)
            if self._scheduled.get(wf) != due:
                continue  # superseded by an earlier wake-up
            del self._scheduled[wf]
            s = self.sessions.get(wf)
            if s is None:
                continue
            budget -= 1
            try:
                kept = fire_due(s, watermark, self.ctx, stamp, out, uses)
            except Exception as exc:  # one workflow's failure is its own
                # Reported once; the session keeps what it had and is woken again by its
                # next event (rescheduled here, it would fail again in this very loop).
                out.failures.append(Failure.of(wf, exc))
                self.sessions[wf] = s
                continue
            if kept is None:
                del self.sessions[wf]
            else:
                self.sessions[wf] = kept
                self._schedule(kept)

    def _schedule(self, s: Session) -> None:
        s.rewake = False
        wake = wake_at(s, self.ctx.cfg)
        wf = s.workflow_id
        scheduled = self._scheduled
        if wake < scheduled.get(wf, _INF):
            scheduled[wf] = wake
            heapq.heappush(self._heap, (wake, wf))
            if len(self._heap) > 2 * len(scheduled) + _HEAP_SLACK:
                self._compact_heap()

    def _compact_heap(self) -> None:
        """Drop superseded wake-ups. An earlier wake-up leaves the later one in the heap until
        its time (an idle timeout: a day of event time), so without this the heap would grow
        with every reschedule; rebuilding once it is twice the live size is amortized O(1)."""
        self._heap = [(wake, wf) for wf, wake in self._scheduled.items()]
        heapq.heapify(self._heap)


def _marks(out: Outbox) -> tuple[int, int, int]:
    """Where this step's revocations, findings and decisions begin in ``out``."""
    return len(out.revocations), len(out.findings), len(out.decisions)


def _seconds(stamp: Stamp) -> float:
    return stamp.timestamp() if isinstance(stamp, datetime) else float(stamp)


class TokenIndex:
    """Cross-workflow token memory: observes credential uses, forgets long-expired tokens and,
    when credentials may be shared across workflows, decides completions as event time passes
    them (``decide``; ``tether.core.sharing``)."""

    def __init__(
        self,
        ctx: Context,
        tokens: MutableMapping[str, TokenState] | None = None,
        *,
        hold_s: float = 0.0,
        wait_s: float = 0.0,
    ) -> None:
        self.ctx = ctx
        self.tokens: MutableMapping[str, TokenState] = tokens if tokens is not None else {}
        self._expiry: list[tuple[float, str]] = []
        # Processing time (seconds) each token was last used at, when ``hold_s`` > 0: the
        # streaming worker keeps a token that long after its last use even once event time has
        # passed its expiry, because uses from a lagging partition or worker arrive late.
        self.hold_s = hold_s  # (the time of a token's last use is its ``used_at``)
        self._due: list[tuple[float, str]] = []  # (review time, token id), as WorkflowEngine
        self._due_at: dict[str, float] = {}
        # With ``wait_s`` > 0 (the streaming worker), a shared token's completions are decided
        # no sooner than ``wait_s`` of processing time after its last completion arrived (or
        # after recovery: -inf, held from the first ``decide``). The uses a catching-up or
        # restarted worker settles in the same step that moves the watermark past a completion
        # travel the credential-uses topic after it; this gives them time to arrive.
        self.wait_s = wait_s
        self._held: dict[str, float] = {}

    def observe(self, use: CredentialUse, stamp: Stamp, out: Outbox) -> None:
        """Fold one use into its token's state (a failure is reported in ``out.failures``)."""
        before = self.tokens.get(use.token_id)
        cfg = self.ctx.cfg
        try:
            st = observe(before, use, cfg, stamp, out)
            if shares_credentials(cfg) and note(st, use, cfg, stamp, out):
                self._schedule(st)
                if use.completed and self.wait_s > 0:
                    self._held[use.token_id] = _seconds(stamp)
        except Exception as exc:  # one use's failure is its own
            out.failures.append(Failure.of(use.workflow_id, exc))
            if before is not None:
                self.tokens[use.token_id] = before  # persist what it holds
            return
        self.tokens[use.token_id] = st
        if self.hold_s > 0:
            st.used_at = _seconds(stamp)
        if before is None:
            heapq.heappush(self._expiry, (st.expires_at, use.token_id))

    def decide(self, watermark: float, stamp: Stamp, out: Outbox) -> None:
        """Decide the completions of shared tokens (and their backstops) due before
        ``watermark``; O(1) when nothing is due."""
        due = self._due
        held: list[tuple[float, str]] = []
        while due and due[0][0] < watermark:
            at, token_id = heapq.heappop(due)
            if self._due_at.get(token_id) != at:
                continue  # superseded by an earlier review
            if self._held and self._holds(token_id, stamp):
                held.append((at, token_id))
                continue
            del self._due_at[token_id]
            st = self.tokens.get(token_id)
            if st is None:
                continue
            try:
                changed = review(st, watermark, self.ctx.cfg, stamp, out)
            except Exception as exc:  # one token's failure is its own
                out.failures.append(Failure.of(token_id, exc))
                continue
            if changed:
                self.tokens[token_id] = st  # a table-backed store persists on assignment
            self._schedule(st)
        for item in held:
            heapq.heappush(due, item)

    def _holds(self, token_id: str, stamp: Stamp) -> bool:
        """Whether the token's decisions wait (``wait_s``) a little longer."""
        since = self._held.get(token_id)
        if since is None:
            return False
        now_s = _seconds(stamp)
        if since == -_INF:  # recovered: held from now on
            self._held[token_id] = since = now_s
        if now_s - since < self.wait_s:
            return True
        del self._held[token_id]
        return False

    @property
    def next_decision(self) -> float:
        """The earliest event time at which a shared token's review is due (``inf``: none)."""
        return self._due[0][0] if self._due else _INF

    def _schedule(self, st: TokenState) -> None:
        at = next_review(st, self.ctx.cfg)
        token_id = st.token_id
        if at < self._due_at.get(token_id, _INF):
            self._due_at[token_id] = at
            heapq.heappush(self._due, (at, token_id))
            if len(self._due) > 2 * len(self._due_at) + _HEAP_SLACK:
                self._due = [(t, k) for k, t in self._due_at.items()]  # as _compact_heap
                heapq.heapify(self._due)

    def expire(self, watermark: float, now: Stamp | None = None, out: Outbox | None = None) -> None:
        """Forget tokens expired for longer than the revocation margin (a later use of one
        raises credential_expired regardless); with ``hold_s``, only tokens also unused for
        ``hold_s`` of processing time before ``now``. A shared token's completions still
        waiting are decided first, into ``out``."""
        heap = self._expiry
        keep = max(self.ctx.cfg.grace_s, self.ctx.cfg.revocation_margin_s)
        held = self.hold_s > 0 and now is not None
        now_s = _seconds(now) if now is not None else 0.0
        while heap and heap[0][0] + keep < watermark:
            token_id = heap[0][1]
            st = self.tokens.get(token_id)
            if st is None:
                heapq.heappop(heap)
                continue
            if held:
                if not st.used_at:  # recovered: held from now on
                    st.used_at = now_s
                if now_s - st.used_at < self.hold_s:
                    break  # the earliest-expiring token is still held: the rest wait behind it
            heapq.heappop(heap)
            if st.expires_at + keep < watermark:
                if st.shares and out is not None:  # completions waiting: decided, not dropped
                    stamp = now if now is not None else watermark
                    review(st, watermark, self.ctx.cfg, stamp, out, force=True)
                del self.tokens[token_id]
            else:
                heapq.heappush(heap, (st.expires_at, token_id))

    def reschedule_all(self) -> None:
        """Rebuild the expiry and review indexes from the store (recovered tokens are held
        afresh)."""
        self._expiry = []
        self._due, self._due_at, self._held = [], {}, {}
        for k, st in self.tokens.items():
            st.used_at = 0.0
            self._expiry.append((st.expires_at, k))
            if st.shares or st.backstop is not None:
                self._schedule(st)
                if self.wait_s > 0:
                    self._held[k] = -_INF
        heapq.heapify(self._expiry)


class LeadGuard:
    """Where no wall clock bounds event time (``tether replay``): bound it by the events around.

    The ceiling is the event time of the second most advanced workflow plus ``lead_s``: event
    time may run ahead of every workflow but one by at most ``lead_s``. So one workflow's
    events, however far ahead they are dated, cannot fire other workflows' waiting checks
    early: the watermark follows once a second workflow's events get there too. An honest
    stream keeps its watermark (its workflows move on together); a stream with one workflow
    has nobody else's checks to fire and is not bounded. O(1) per event.
    """

    __slots__ = ("_first", "_first_wf", "_second", "lead_s")

    def __init__(self, lead_s: float) -> None:
        self.lead_s = lead_s
        self._first = -_INF  # the greatest event time seen, and its workflow
        self._first_wf: str | None = None
        self._second = -_INF  # the greatest event time of any other workflow

    def ceiling(self, t: float, workflow_id: str) -> float:
        """Note an event of ``workflow_id`` at ``t``; the watermark's ceiling from now on."""
        if workflow_id == self._first_wf:
            self._first = max(self._first, t)
        elif t > self._first:
            if self._first_wf is not None:
                self._second = self._first
            self._first, self._first_wf = t, workflow_id
        elif t > self._second:
            self._second = t
        return _INF if self._second == -_INF else self._second + self.lead_s


class Monitor:
    """The whole core in one process: workflow engine and token index wired directly.

    Event time is the greatest event time applied, bounded by a ``LeadGuard`` (the
    configuration's ``watermark_lead_s``; ``None`` switches the bound off).
    """

    def __init__(
        self,
        ctx: Context,
        sessions: MutableMapping[str, Session] | None = None,
        tokens: MutableMapping[str, TokenState] | None = None,
    ) -> None:
        self.ctx = ctx
        self.workflows = WorkflowEngine(ctx, sessions)
        self.index = TokenIndex(ctx, tokens)
        self._uses: list[CredentialUse] = []
        lead = ctx.cfg.watermark_lead_s
        self.guard = LeadGuard(lead) if lead is not None else None
        # what this monitor revoked (the longest not_after per target): the decision log's view
        self.revocations = NotAfterFloor()
        cfg = ctx.cfg
        self.decisions = (
            DecisionLog(self.revocations, keep_s=max(4 * cfg.grace_s, 60.0))
            if cfg.emit_decisions
            else None
        )

    @property
    def sessions(self) -> MutableMapping[str, Session]:
        """The session store."""
        return self.workflows.sessions

    @property
    def tokens(self) -> MutableMapping[str, TokenState]:
        """The token store."""
        return self.index.tokens

    @property
    def watermark(self) -> float:
        """The greatest event time applied."""
        return self.workflows.watermark

    def process(self, event: InputEvent, now: datetime | None = None) -> Outbox:
        """Apply one valid event; return what it revealed."""
        out = Outbox()
        self.process_into(event, now, out)
        return out

    def process_into(self, event: InputEvent, now: datetime | None, out: Outbox) -> None:
        """Apply one valid event, appending what it revealed to ``out`` (the allocation-free
        path for replay)."""
        uses = self._uses
        before = self.workflows.watermark
        guard = self.guard
        ceiling = guard.ceiling(event.t, event.workflow_id) if guard is not None else _INF
        marks = _marks(out) if self.decisions is not None else None
        self.workflows.process(event, now, out, uses, ceiling=ceiling)
        if uses:
            self._route(uses, now, out)
            uses.clear()
        wm = self.workflows.watermark
        if wm > before:
            index = self.index
            if index.next_decision < wm:
                index.decide(wm, now if now is not None else wm, out)
            index.expire(wm, now, out)
        if marks is not None:
            self._settle(out, marks, now)

    def advance(self, watermark: float, now: datetime | None = None) -> Outbox:
        """Move event time forward without an event."""
        out = Outbox()
        uses: list[CredentialUse] = []
        self.workflows.advance(watermark, now, out, uses)
        self._route(uses, now, out)
        wm = self.workflows.watermark
        self.index.decide(wm, now if now is not None else wm, out)
        self.index.expire(wm, now, out)
        if self.decisions is not None:
            self._settle(out, (0, 0, 0), now)
        return out

    def flush(self, now: datetime | None = None) -> Outbox:
        """End of input: decide every pending check (and every completion of a shared token,
        as if its settling time had passed)."""
        out = Outbox()
        uses: list[CredentialUse] = []
        self.workflows.flush(now, out, uses)
        self._route(uses, now, out)
        wf = self.workflows
        if wf.watermark > -_INF or wf.latest > -_INF:
            horizon = max(wf.watermark, wf.latest) + settle_s(self.ctx.cfg) + 1e-3
            self.index.decide(horizon, now if now is not None else wf.watermark, out)
        if self.decisions is not None:
            self._settle(out, (0, 0, 0), now)
        return out

    def note_revocations(self, revocations: list[Revocation], now: datetime | None = None) -> None:
        """Revocations issued beside the monitor (the source gate's, an operator's): from now on
        the decision log denies the calls they name, and none of them is republished shorter.
        Each is replaced by itself with its ``not_after`` raised to the longest known."""
        at = _seconds(now) if now is not None else self.workflows.watermark
        floor = self.revocations
        revocations[:] = [floor.at_least(r, at) for r in revocations]

    def _settle(self, out: Outbox, marks: tuple[int, int, int], now: datetime | None) -> None:
        """The step's revocations join the view (never shorter), then its decisions are judged
        against it (``tether.core.decisions``)."""
        log = self.decisions
        assert log is not None  # noqa: S101  # called only with decisions on
        r0, f0, d0 = marks
        wm = self.workflows.watermark
        revs = out.revocations
        if len(revs) > r0:
            at = _seconds(now) if now is not None else wm
            floor = self.revocations
            revs[r0:] = [floor.at_least(r, at) for r in revs[r0:]]
        if len(out.decisions) > d0 or len(out.findings) > f0:
            log.settle(out.decisions, d0, out.findings[f0:], wm)

    def _route(self, uses: list[CredentialUse], now: datetime | None, out: Outbox) -> None:
        if not uses:
            return
        stamp: Stamp = now if now is not None else self.workflows.watermark
        for use in uses:
            self.index.observe(use, stamp, out)
