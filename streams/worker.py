"""The worker's logic between faust and the core: decode, fold, publish, then persist state.

Ordering is the delivery guarantee: outputs (findings, decisions, revocations, dead letters,
credential uses) are acknowledged by Kafka before the state changes they reflect are published to
the table's changelog, and that is acknowledged before the input records are acknowledged to
faust (so before their offsets can be committed). A crash anywhere replays input; it never skips an output.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import monotonic
from typing import Any

from tether.adapters.kafka_publisher import Entry
from tether.core import Context, Outbox
from tether.core.credentials import CredentialUse
from tether.core.decisions import DecisionLog
from tether.core.engine import TokenIndex, WorkflowEngine
from tether.core.violations import ts
from tether.metrics import (
    DEADLETTERS_TOTAL,
    DECISION_LATENCY,
    EVENTS_TOTAL,
    FINDINGS_TOTAL,
    REVOCATIONS_TOTAL,
)
from tether.models.codec import Rejected, dead_letter, decode_event, encode
from tether.models.outputs import Finding, Heartbeat, Revocation, Source
from tether.models.session import Session, TokenState
from tether.security import SetSigner
from tether.security.gate import SourceGate
from tether.settings import Settings
from tether.topics import CREDENTIAL_USES, DEADLETTER, DECISIONS, FINDINGS, INTENTS, REVOCATIONS
from tether.tuning import TuningWatch

from .audit_chain import DecisionChain
from .credential_uses import decode_use, encode_use
from .epochs import StateEpochs
from .intake import InputRecord
from .lag import InputLag
from .ledger import RevocationFloor
from .output_rejects import OutputRejects
from .outputs import Batch, Publisher
from .registry_sync import LocalSignatures
from .signing import SigningPool, signed_inline
from .tables import TableStore
from .watermarks import PartitionWatermarks

_log = logging.getLogger("tether.worker")


FIRE_MAX = 2000
"""Sessions whose due checks one step decides at most: a long jump of event time (after a
stretch of lag, every session's grace period ends at once) is worked off in steps of this size,
each made durable before the next, instead of one step that stalls the worker for seconds."""


def _where(rec: InputRecord, workflow: str | None, code: str) -> dict[str, object]:
    """A log record's fields an operator filters on (``TETHER_LOG_FORMAT=json``)."""
    return {
        "topic": rec.topic,
        "partition": rec.partition,
        "offset": rec.offset,
        "workflow": workflow,
        "code": code,
    }


@dataclass(slots=True)
class _Alarms:
    """What one step has published of its findings' revocations as they were raised."""

    budget: int  # revocations it may still sign on the event loop (``signing_inline_max``)
    seen: int = 0  # revocations in the step's outbox already looked at
    findings: int = 0  # findings in the outbox already looked at
    sent: list[asyncio.Future[None]] = field(default_factory=list)  # their publications
    raised: list[Finding] = field(default_factory=list)  # the findings sent (for the decisions)


class Worker:
    """One worker's share of the pipeline: the partitions faust assigned to it."""

    def __init__(  # noqa: PLR0913  # its parts, as tether.bootstrap.worker_parts picked them
        self,
        settings: Settings,
        ctx: Context,
        sessions: TableStore[Session],
        tokens: TableStore[TokenState],
        publisher: Publisher,
        signer: SetSigner,
        *,
        worker_id: str,
        lag: InputLag | None = None,
        gate: SourceGate | None = None,
        tuning: TuningWatch | None = None,
    ) -> None:
        self.settings = settings
        self.tuning = tuning  # the tuning file, re-read when it changes (docs/tuning.md)
        self.sessions = sessions
        self.tokens = tokens
        self.engine = WorkflowEngine(ctx, sessions)
        self.index = TokenIndex(
            ctx, tokens, hold_s=settings.token_hold_s, wait_s=ctx.cfg.grace_s
        )  # wait_s: shared tokens' completions wait for uses a catch-up settles with them
        self.publisher = publisher
        self.topics = {
            name: settings.topic(name)
            for name in (FINDINGS, DECISIONS, REVOCATIONS, DEADLETTER, CREDENTIAL_USES)
        }
        if publisher.reject is None:  # an output refused for good: its dead letter instead
            publisher.reject = OutputRejects(settings, self.topics)
        self.heartbeats = Publisher(publisher.publish_many)
        # the decisions' hash chain and its signed checkpoints (streams.audit_chain)
        self.audit = (
            DecisionChain(settings, signer, worker_id=worker_id) if settings.audit_chain else None
        )
        self.signer = signer  # revocations and heartbeats leave as signed Security Event Tokens
        self.signing = SigningPool(signer, settings.signing_processes)
        self.inline_max = settings.signing_inline_max  # findings' revocations signed here
        self.signed_here: LocalSignatures | None = None  # given to the registry sync, if any
        self.signed_for_ledger: LocalSignatures | None = None  # and to the revocation ledger
        # a key's revocation is never published shorter than this process knows it was
        self.floor = RevocationFloor()
        # each step's decisions are judged against it: deny once a call's target is revoked;
        # decisions are kept for late findings keep_s of processing time (see _collect)
        self.decision_log = DecisionLog(self.floor, keep_s=max(4 * settings.grace_s, 60.0))
        self.worker_id = worker_id
        # outputs at once, the state they left once per epoch, after them (streams.epochs)
        self.epochs = StateEpochs((sessions, tokens), publisher.send, settings.state_epoch_ms)
        self.needs_reschedule = True
        self.assigned: set[int] = set()
        self.lag = lag or InputLag()
        self.watermarks = PartitionWatermarks(
            idle_s=max(1.0, settings.grace_s), behind=self.lag.behind
        )
        self._advanced_at = monotonic()  # wall time of the last watermark advance
        self._record_at = monotonic()  # wall time of the last input record
        self._ahead = float("inf")  # the current step's event-time limit (submit_intents)
        self._heartbeats = 0
        self._caught_up_at: dict[int, float] = {}  # intents partition -> wall time last caught up
        self.revocation_partitions = settings.partitions  # heartbeats go to every one of them
        self.events = 0
        self.deadletters = 0
        # authenticates and authorizes each record (tether.bootstrap.source_gate; None: inputs
        # are believed as they are)
        self.gate = gate

    # -- intents --------------------------------------------------------------------------

    async def on_intents(self, records: Sequence[InputRecord]) -> None:
        """Apply a batch of input records; returns once their outputs and state are durable."""
        self.submit_intents(records)
        await self.drain()

    def submit_intents(self, records: Sequence[InputRecord]) -> asyncio.Future[None]:
        """Apply a batch of input records now; the future resolves once their outputs and then
        the state they left are durable in Kafka (see ``_commit``).

        The caller hands records over only once the tables have recovered: a record applied to
        a session that recovery later overwrites would be forgotten."""
        self._retune()
        self._maybe_reschedule()
        now = datetime.now(UTC)
        out = Outbox()
        uses: list[CredentialUse] = []
        batch = Batch()
        skew = self.settings.max_skew_s
        horizon = now.timestamp() + skew
        self._ahead = now.timestamp() + self.settings.max_ahead_s
        before = self.engine.watermark
        self._record_at = monotonic()
        alarms = _Alarms(self.inline_max)
        revocations = out.revocations
        oldest = horizon
        for rec in records:
            self._apply(rec, now, horizon, skew, out, uses, batch)
            if len(revocations) > alarms.seen:
                self._raise_now(out, alarms)
            stamp = getattr(rec, "timestamp", None)  # seconds; a test's record may have none
            if stamp and 0 < stamp < oldest:
                oldest = stamp
        self.engine.advance(self.watermarks.current(), now, out, uses, limit=FIRE_MAX)
        if self.engine.watermark > before:
            self._advanced_at = monotonic()
        self._collect(out, batch, alarms.raised)
        self._collect_uses(uses, batch)
        done = self._commit(batch, early=alarms.sent, budget=alarms.budget)
        if oldest < horizon:  # one observation per batch: its oldest record's wait
            DECISION_LATENCY.observe(max(0.0, datetime.now(UTC).timestamp() - oldest))
        return done

    def _raise_now(self, out: Outbox, alarms: _Alarms) -> None:
        """Publish at once the findings and revocations the record just applied raised, if its
        findings' revocations fit in what is left of the step's ``signing_inline_max``: they
        need not wait for the rest of the batch to be applied. Whatever is not sent here stays
        in ``out`` for the end of the step (task-completion revocations, a burst, an error)."""
        revocations = out.revocations
        at_least = self.floor.at_least
        revocations[alarms.seen :] = [at_least(r) for r in revocations[alarms.seen :]]
        here, later = signed_inline(revocations[alarms.seen :], alarms.budget)
        if here:
            tokens = self._sign_here(here)
            if tokens is not None:
                alarm = Batch()
                self._collect_findings(out.findings[alarms.findings :], alarm)
                alarms.raised.extend(out.findings[alarms.findings :])
                del out.findings[alarms.findings :]
                alarm.records.extend(self._signed(here, tokens))
                alarms.sent.append(self.publisher.send_now(alarm))
                alarms.budget -= len(here)
                revocations[alarms.seen :] = later
        alarms.seen = len(revocations)
        alarms.findings = len(out.findings)

    def _commit(
        self,
        outputs: Batch,
        *,
        now: bool = False,
        early: Sequence[asyncio.Future[None]] = (),
        budget: int | None = None,
    ) -> asyncio.Future[None]:
        """Publish a step's ``outputs`` at once and add the step to the open state epoch; the
        future resolves once the epoch's state is durable (see ``close_epoch``).

        Outputs never wait (a revocation should not queue behind anything); state is written
        once per epoch, not per step: a session touched by many steps of an epoch reaches the
        changelog once, and the broker sees one state write per epoch instead of one per
        fetch. ``now`` closes the epoch with this step (a caller that waits for durability).

        A finding's revocations, while the step's ``budget`` of ``signing_inline_max`` lasts,
        are signed here and queued to Kafka with the step's other records before this returns
        (``submit_intents`` has already sent those raised while its batch was applied: their
        publications are ``early``); the rest (task-completion revocations, routine and the
        bulk of them, and the rest of a burst of findings) are signed in the signing process
        (see ``streams.signing``) and follow."""
        later = self._sign_urgent(outputs, self.inline_max if budget is None else budget)
        sent = self.publisher.send_now(outputs)
        if self.audit is not None:  # the step's links are durable once Kafka has them
            sent.add_done_callback(self.audit.acknowledged(self.audit.take()))
        steps = [*early, sent]
        if later is not None:
            steps.append(asyncio.ensure_future(self._send_outputs(later)))
        return self.epochs.add(steps, now=now)

    async def _send_outputs(self, outputs: Batch) -> None:
        if outputs.unsigned:  # signed in another process while the next batch is applied
            unsigned, outputs.unsigned = outputs.unsigned, []
            outputs.records.extend(await self._sign(unsigned))
        await self.publisher.send(outputs)

    def close_epoch(self) -> None:
        """Close the open state epoch now (see ``streams.epochs.StateEpochs.close``)."""
        self.epochs.close()

    def _sign_urgent(self, outputs: Batch, budget: int) -> Batch | None:
        """Sign the revocations findings raised here, if there are at most ``budget`` of them;
        return what is left for the signing process (``None``: nothing). On any error here
        everything is left to it: a step must not fail once the core has applied it."""
        unsigned, outputs.unsigned = outputs.unsigned, []
        if not unsigned:
            return None
        here, later = signed_inline(unsigned, budget)
        if not here:
            return Batch(unsigned=later)
        tokens = self._sign_here(here)
        if tokens is None:
            return Batch(unsigned=unsigned)
        outputs.records.extend(self._signed(here, tokens))
        return Batch(unsigned=later) if later else None

    def _sign_here(self, revocations: list[Revocation]) -> list[bytes] | None:
        """The SETs of ``revocations``, signed on the event loop; ``None`` on any error (the
        caller leaves them to the signing process: a revocation is never lost to it)."""
        try:
            payload = self.signer.revocation_payload
            return self.signing.sign_now([payload(r) for r in revocations])
        except Exception:
            _log.exception(
                "signing %d revocations here failed; handing them over", len(revocations)
            )
            return None

    async def _sign(self, revocations: list[Revocation]) -> list[Entry]:
        payload = self.signer.revocation_payload
        tokens = await self.signing.sign([payload(r) for r in revocations])
        return self._signed(revocations, tokens)

    def _signed(self, revocations: list[Revocation], tokens: list[bytes]) -> list[Entry]:
        topic, local, ledger = self.topics[REVOCATIONS], self.signed_here, self.signed_for_ledger
        entries: list[Entry] = []
        for r, token in zip(revocations, tokens, strict=True):
            REVOCATIONS_TOTAL.add(r.reason)
            if local is not None:
                local.add(token, r)
            if ledger is not None:
                ledger.add(token, r)
            entries.append((topic, r.target.key.encode(), token, None))
        return entries

    async def drain(self) -> None:
        """Wait until every step applied so far is durable."""
        await self.epochs.drain()

    def _apply(
        self,
        rec: InputRecord,
        now: datetime,
        horizon: float,
        skew: float,
        out: Outbox,
        uses: list[CredentialUse],
        batch: Batch,
    ) -> None:
        data = rec.value or b""
        try:
            decoded = decode_event(data)
            if not isinstance(decoded, Rejected) and decoded.t > horizon:
                decoded = Rejected(
                    "clock_skew",
                    f"occurred_at {decoded.occurred_at.isoformat()} is more than {skew:.0f}s "
                    f"ahead of the worker's clock",
                    decoded.workflow_id,
                    decoded.event_id,
                )
            if self.gate is not None and not isinstance(decoded, Rejected):
                admitted = self.gate.admit(data, decoded, self._initiator, now, out)
                if admitted is None:  # an invalid presented token: a finding, nothing applied
                    return
                decoded = admitted
            if isinstance(decoded, Rejected):
                self._dead(rec, data, decoded, now, batch)
                return
            self.sessions.current_partition = rec.partition
            if not self.engine.process(decoded, now, out, uses, advance=False):
                f = out.failures.pop()  # this record's own failure: dead-lettered as received
                _log.error(
                    "internal error on %s[%d]@%d: %s",
                    *(rec.topic, rec.partition, rec.offset, f.error),
                    extra=_where(rec, f.workflow_id, "internal_error"),
                )
                why = Rejected("internal_error", f.error, f.workflow_id, decoded.event_id)
                self._dead(rec, data, why, now, batch)
                return
            # an event dated ahead of the wall clock is applied, but moves event time no
            # further than max_ahead_s past it: it cannot fire others' waiting checks early
            self.watermarks.observe(rec.partition, min(decoded.t, self._ahead))
            self.events += 1
            EVENTS_TOTAL.add(decoded.event_type)
        except Exception as exc:  # never let one record stop the worker or vanish
            _log.exception(
                "unexpected error on %s[%d]@%d",
                *(rec.topic, rec.partition, rec.offset),
                extra=_where(rec, None, "internal_error"),
            )
            self._dead(
                rec, data, Rejected("internal_error", f"internal error: {exc!r}"), now, batch
            )

    def _initiator(self, workflow_id: str) -> str | None:
        s = self.sessions.get(workflow_id)
        return s.started.initiator if s is not None and s.started is not None else None

    def _dead(
        self, rec: InputRecord, data: bytes, why: Rejected, now: datetime, batch: Batch
    ) -> None:
        self.deadletters += 1
        DEADLETTERS_TOTAL.add(why.reason)
        source = Source(topic=rec.topic, partition=rec.partition, offset=rec.offset)
        record = dead_letter(data, why, source, now)
        batch.add(self.topics[DEADLETTER], rec.key, encode(record))

    def _collect(self, out: Outbox, batch: Batch, raised: Sequence[Finding] = ()) -> None:
        """Add the step's outputs to ``batch``; ``raised``: its findings already sent."""
        for f in out.failures:  # an earlier event's due checks (or a use) failed: the core's
            ev = f.event  # report, dead-lettered like any record it could not process
            eid = ev.event_id if ev is not None else None
            why = Rejected("internal_error", f.error, f.workflow_id, eid)
            source = Source(topic=self.settings.topic(INTENTS))
            dead = dead_letter(
                encode(ev) if ev is not None else b"", why, source, datetime.now(UTC)
            )
            self.deadletters += 1
            DEADLETTERS_TOTAL.add("internal_error")
            batch.add(self.topics[DEADLETTER], f.workflow_id.encode(), encode(dead))
        out.failures.clear()
        self._collect_findings(out.findings, batch)
        at_least = self.floor.at_least
        batch.unsigned.extend(at_least(r) for r in out.revocations)
        if out.decisions or out.findings or raised:  # after the step's revocations joined the view
            findings = [*raised, *out.findings] if raised else out.findings
            # kept by processing time: the token index's findings come back through a topic,
            # however far event time moved meanwhile (a backlog is read in big strides)
            self.decision_log.settle(out.decisions, 0, findings, time.time())
        topic, audit = self.topics[DECISIONS], self.audit
        for d in out.decisions:
            if audit is None:
                batch.add(topic, d.workflow_id.encode(), encode(d))
                continue
            partition = self._decision_partition(d.workflow_id)  # the chain's: explicit
            batch.add(topic, d.workflow_id.encode(), audit.seal(partition, encode(d)), partition)

    def _decision_partition(self, workflow_id: str) -> int:
        """The decisions partition of a workflow: its intents partition, which this worker
        owns (so it is the one writer of that partition's chain)."""
        partition = self.sessions.partition_of(workflow_id)
        if partition is None or partition < 0:
            partition = self.sessions.current_partition
        if partition < 0:
            partition = min(self.assigned, default=0)
        return partition

    def _collect_findings(self, findings: list[Finding], batch: Batch) -> None:
        topic = self.topics[FINDINGS]
        for f in findings:
            FINDINGS_TOTAL.add(f.code)
            batch.add(topic, f.workflow_id.encode(), encode(f))

    def _collect_uses(self, uses: list[CredentialUse], batch: Batch) -> None:
        for use in uses:
            batch.add(self.topics[CREDENTIAL_USES], use.token_id.encode(), encode_use(use))

    # -- credential uses (the token index) ------------------------------------------------

    async def on_uses(self, records: Sequence[InputRecord]) -> None:
        """Fold a batch of credential uses into the token table; returns once durable."""
        self.submit_uses(records)
        await self.drain()

    def submit_uses(self, records: Sequence[InputRecord]) -> asyncio.Future[None]:
        """Fold a batch of credential uses into the token table (tables recovered, as above);
        the future resolves once the outputs and then the token state are durable."""
        self._retune()
        now = datetime.now(UTC)
        out = Outbox()
        latest = float("-inf")
        for rec in records:
            try:
                use = decode_use(rec.value or b"")
            except (ValueError, TypeError) as exc:  # written by us; log loudly, keep going
                _log.error("bad credential-use record %s@%d: %r", rec.topic, rec.offset, exc)
                continue
            self.tokens.current_partition = rec.partition
            self.index.observe(use, now, out)
            latest = max(latest, use.t)
        self.index.decide(self.engine.watermark, now, out)  # shared tokens' completions
        if latest > float("-inf"):
            self.index.expire(min(latest, now.timestamp() + self.settings.max_ahead_s), now, out)
        batch = Batch()
        self._collect(out, batch)
        return self._commit(batch)

    def _retune(self) -> None:
        """Apply a changed tuning file to every event and check from here on. It only touches
        per-code tuning (never grace or limits), so nothing already scheduled moves; an invalid
        file is logged by the watch and the tuning in force kept."""
        watch = self.tuning
        if watch is None:
            return
        cfg = watch.poll()
        if cfg is None:
            return
        ctx = dataclasses.replace(self.engine.ctx, cfg=cfg)
        self.engine.ctx = ctx
        self.index.ctx = ctx
        if self.gate is not None:
            self.gate.cfg = cfg

    # -- time -----------------------------------------------------------------------------

    async def tick(self) -> None:
        """Move event time on without input: partitions that went quiet stop holding the
        watermark back, and on a quiet stream event time follows the wall clock from the last
        event (the processing-time backstop), so waiting checks fire about one grace period
        after their event."""
        self._retune()
        self._maybe_reschedule()
        self.input_lag()  # samples which partitions are caught up
        engine = self.engine
        target = self.watermarks.current()
        clock = monotonic()
        if self._quiet(clock) and engine.watermark > float("-inf"):
            target = max(target, engine.watermark + (clock - self._advanced_at))
        target = min(target, self._event_time_limit())
        if target <= engine.watermark and not engine.pending:
            await self._decide_tokens()
            return
        reached = False
        while not reached:  # in bounded steps, each made durable before the next
            now = datetime.now(UTC)
            out = Outbox()
            uses: list[CredentialUse] = []
            reached = engine.advance(target, now, out, uses, limit=FIRE_MAX)
            self._advanced_at = monotonic()
            if not len(out) and not uses:
                continue
            batch = Batch()
            self._collect(out, batch)
            self._collect_uses(uses, batch)
            await self._commit(batch, now=True)
        await self._decide_tokens()

    async def _decide_tokens(self) -> None:
        """Decide the completions of shared tokens that event time has passed
        (``tether.core.sharing``): their revocations, then the token state, made durable."""
        if self.index.next_decision >= self.engine.watermark:
            return
        now = datetime.now(UTC)
        out = Outbox()
        self.index.decide(self.engine.watermark, now, out)
        if not len(out) and not self.tokens.dirty:
            return  # held (TokenIndex.wait_s): nothing decided yet
        batch = Batch()
        self._collect(out, batch)
        await self._commit(batch, now=True)

    def _event_time_limit(self) -> float:
        """How far event time may go now: the wall clock plus ``max_ahead_s``."""
        return datetime.now(UTC).timestamp() + self.settings.max_ahead_s

    def _quiet(self, clock: float) -> bool:
        """Whether the input is quiet, not just slow: nothing arrived for a tick and nothing is
        waiting to be read. A worker that is catching up (after a restart, or slower than its
        input) must not let event time run ahead of records it has not read yet: their checks
        would be decided without them. The backstop holds back for at most ``behind_s``, so a
        wrong lag figure cannot stop event time."""
        silent = clock - self._record_at
        if silent <= self.settings.tick_s:
            return False
        if silent > self.watermarks.behind_s:
            return True
        lag = self.lag
        return not (lag.buffered() or any(lag.behind(p) for p in self.assigned))

    async def heartbeat(self) -> None:
        """Tell gateways the feed is alive (skipped while publishing is failing)."""
        loop = asyncio.get_running_loop()
        if self.publisher.stuck_for(loop.time()) > self.settings.heartbeat_s:
            return
        self._heartbeats += 1
        wm = self.engine.watermark
        lag_s, lag_records = self.input_lag()
        emitted = datetime.now(UTC)
        watermark = ts(wm) if wm > float("-inf") else None
        batch = Batch()
        key = f"heartbeat:{self.worker_id}".encode()
        topic = self.topics[REVOCATIONS]
        # One on every partition of the revocations topic (same key, pinned): a watcher that
        # cannot read one partition sees that partition go stale instead of a fresh feed.
        for partition in range(self.revocation_partitions):
            hb = Heartbeat(
                emitted_at=emitted,
                source=self.worker_id,
                sequence=self._heartbeats,
                watermark=watermark,
                interval_s=self.settings.heartbeat_s,
                partition=partition,
                input_lag_s=lag_s,
                input_lag_records=lag_records,
            )
            batch.add(topic, key, self.signer.heartbeat(hb), partition)
        await self.heartbeats.send(batch)  # its own failure clock: a heartbeat that gets through
        # must not make a pipeline whose outputs are failing look healthy

    async def checkpoint(self) -> None:
        """Publish a signed checkpoint of each decisions chain head that moved (docs/audit.md)."""
        if self.audit is None:
            return
        batch = Batch()
        batch.records.extend(self.audit.due_checkpoints(datetime.now(UTC).timestamp()))
        if batch.records:
            await self.heartbeats.send(batch)

    def input_lag(self) -> tuple[float, int | None]:
        """The worker's input lag: seconds (an upper bound on how long its oldest unapplied
        input record has waited: the time since its most lagging intents partition was last
        seen caught up) and records (not taken yet on that partition; None if unknown).

        Sampled on every tick and heartbeat; a partition with nothing unread is caught up."""
        now = monotonic()
        lag = self.lag
        seconds, records = 0.0, 0
        known = True
        for p in self.assigned:
            if not lag.behind(p):
                self._caught_up_at[p] = now
                continue
            since = self._caught_up_at.setdefault(p, now)
            seconds = max(seconds, now - since)
            count = lag.records(p)
            if count is None:
                known = False
            else:
                records = max(records, count)
        return round(seconds, 3), (records if known else None)

    def assign(self, partitions: set[int]) -> None:
        """Faust assigned these intents partitions to this worker (state recovers next)."""
        self.assigned = partitions
        self._caught_up_at = {}
        self.needs_reschedule = True

    def _maybe_reschedule(self) -> None:
        if not self.needs_reschedule:
            return
        self.needs_reschedule = False
        self.engine.reschedule_all()
        self.index.reschedule_all()
        # Event time restarts from what the recovered sessions of each partition had seen, so
        # no partition's checks fire before that partition has caught up.
        seeds: dict[int, float] = {}
        for s in self.sessions.values():
            if s.last_time > seeds.get(s.partition, float("-inf")):
                seeds[s.partition] = s.last_time
        limit = self._event_time_limit()  # a session dated ahead does not seed event time ahead
        seeds = {p: min(t, limit) for p, t in seeds.items()}
        self.watermarks.assign(self.assigned, seeds)
        self.engine.watermark = min(
            (seeds.get(p, float("-inf")) for p in self.assigned), default=float("-inf")
        )
        # Processing time restarts too: the time spent recovering is not quiet input.
        self._record_at = self._advanced_at = monotonic()
        _log.info("rescheduled %d sessions and %d tokens", len(self.sessions), len(self.tokens))

    def stats(self) -> dict[str, Any]:
        """Counters for logs and benchmarks."""
        return {
            "events": self.events,
            "deadletters": self.deadletters,
            "sessions": len(self.sessions),
            "tokens": len(self.tokens),
            "published": self.publisher.published,
            "retries": self.publisher.retries,
        }
