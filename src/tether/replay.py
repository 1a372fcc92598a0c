"""``tether replay``: run the core over a JSON Lines file of input events (file order = arrival).

Also the backtesting tool: today's policy over yesterday's telemetry.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel

from tether.audit.chain import ChainHeads
from tether.core import Monitor, Outbox
from tether.core.floor import NotAfterFloor
from tether.core.violations import ts
from tether.models.codec import Rejected, dead_letter, decode_event, encode
from tether.models.events import InputEvent
from tether.models.outputs import Decision, Revocation, Source

if TYPE_CHECKING:
    from tether.security.gate import SourceGate

Write = Callable[[bytes], object]
_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)
class ReplayStats:
    """What a replay saw and produced."""

    lines: int = 0
    blank: int = 0
    events: int = 0
    deadletters: int = 0
    revocations: int = 0
    decisions: int = 0
    findings: Counter[str] = field(default_factory=Counter)
    deadletter_reasons: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0

    @property
    def events_per_s(self) -> float:
        """Valid events applied per second of wall time."""
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Replayer:
    """Feeds lines to a ``Monitor`` and writes every output as one JSON object per line.

    ``clock="event"`` stamps records with the watermark (the event time at which tether would have
    decided), so the same input gives byte-identical output; ``clock="wall"`` uses the wall clock.
    """

    def __init__(
        self,
        monitor: Monitor,
        write: Write,
        *,
        source: str = "-",
        decisions: bool = False,
        clock: str = "event",
        gate: SourceGate | None = None,
        chain: bool = False,
    ) -> None:
        self.monitor = monitor
        self.gate = gate  # authenticates and authorizes each event (docs/SECURITY.md)
        self.write = write
        self.source = source
        self.decisions = decisions
        self.wall = clock == "wall"
        self.stats = ReplayStats()
        self._started = datetime.now(UTC)
        self._out = Outbox()
        # a target is never revoked shorter than before; shared with the monitor's decision log
        self._floor: NotAfterFloor = monitor.revocations
        # decisions linked in one hash chain (partition 0), verifiable with tether audit verify
        self._chain = ChainHeads() if chain else None
        if self._chain is not None:
            self._chain.set_head(0, None)

    def feed(self, line: bytes) -> None:
        """One input line (with or without its newline)."""
        stats = self.stats
        stats.lines += 1
        data = line.rstrip(b"\r\n")
        if stats.lines == 1:
            data = data.removeprefix(_BOM)
        if not data or data.isspace():
            stats.blank += 1
            return
        decoded = decode_event(data)
        out = self._out
        if self.gate is not None and not isinstance(decoded, Rejected):
            admitted = self._admit(data, decoded, out)
            if admitted is None:
                return
            decoded = admitted
        if isinstance(decoded, Rejected):
            self._dead(data, decoded)
            return
        stats.events += 1
        self.monitor.process_into(decoded, datetime.now(UTC) if self.wall else None, out)
        if out.failures:
            self._failed(out, data, decoded)
        if out.findings or out.revocations or out.decisions:
            self._emit(out)
            out.findings.clear()
            out.revocations.clear()
            out.decisions.clear()

    def finish(self) -> ReplayStats:
        """End of input: decide pending grace checks and return the statistics."""
        self._emit(self.monitor.flush(self._now()))
        return self.stats

    def run(
        self, lines: Iterable[bytes], tick: Callable[[int], object] | None = None
    ) -> ReplayStats:
        """Feed every line, then finish. ``tick(nbytes)`` is called per line for progress."""
        began = time.perf_counter()
        if tick is not None or self.wall:
            for line in lines:
                self.feed(line)
                if tick is not None:
                    tick(len(line))
        else:
            self._run_fast(lines)
        stats = self.finish()
        stats.elapsed_s = time.perf_counter() - began
        return stats

    def _run_fast(self, lines: Iterable[bytes]) -> None:
        """``feed`` for every line, with the per-line work inlined (the replay hot loop)."""
        stats = self.stats
        out = self._out
        process = self.monitor.process_into
        gate = self.gate
        admit = gate.admit if gate is not None else None
        initiator = self._initiator
        n, events, blank = stats.lines, stats.events, stats.blank
        try:
            for line in lines:
                n += 1
                data = line.rstrip(b"\r\n")
                if n == 1:
                    data = data.removeprefix(_BOM)  # a file saved with a UTF-8 byte-order mark
                if not data or data.isspace():
                    blank += 1
                    continue
                decoded = decode_event(data)
                if admit is not None and not isinstance(decoded, Rejected):
                    admitted = admit(data, decoded, initiator, decoded.t, out)
                    if out.findings:  # credential_invalid
                        self._emit(out)
                        out.findings.clear()
                        out.revocations.clear()
                    if admitted is None:
                        continue
                    decoded = admitted
                if isinstance(decoded, Rejected):
                    stats.lines, stats.events, stats.blank = n, events, blank
                    self._dead(data, decoded)
                    continue
                events += 1
                process(decoded, None, out)
                if out.failures:
                    stats.lines, stats.events, stats.blank = n, events, blank
                    self._failed(out, data, decoded)
                if out.findings or out.revocations or out.decisions:
                    self._emit(out)
                    out.findings.clear()
                    out.revocations.clear()
                    out.decisions.clear()
        finally:
            stats.lines, stats.events, stats.blank = n, events, blank

    def _admit(self, data: bytes, event: InputEvent, out: Outbox) -> InputEvent | Rejected | None:
        """The gate's verdict on one event; a ``credential_invalid`` finding is written now."""
        assert self.gate is not None  # noqa: S101  # only called with a gate
        wm = self.monitor.watermark
        stamp = datetime.now(UTC) if self.wall else max(wm, event.t)
        admitted = self.gate.admit(data, event, self._initiator, stamp, out)
        if out.findings:
            self._emit(out)
            out.findings.clear()
            out.revocations.clear()
        return admitted

    def _initiator(self, workflow_id: str) -> str | None:
        s = self.monitor.sessions.get(workflow_id)
        return s.started.initiator if s is not None and s.started is not None else None

    def _now(self) -> datetime | None:
        return datetime.now(UTC) if self.wall else None

    def _stamp(self) -> datetime:
        if self.wall or self.monitor.watermark == float("-inf"):
            return datetime.now(UTC) if self.wall else self._started
        return ts(self.monitor.watermark)

    def _dead(self, data: bytes, rejected: Rejected) -> None:
        stats = self.stats
        stats.deadletters += 1
        stats.deadletter_reasons[rejected.reason] += 1
        source = Source(topic=self.source, line=stats.lines)
        self._put(dead_letter(data, rejected, source, self._stamp()))

    def _failed(self, out: Outbox, data: bytes | None, current: InputEvent | None) -> None:
        """Dead-letter (reason ``internal_error``) what the core could not process: the line just
        fed, or an earlier event whose due checks failed (no line: its payload re-encoded)."""
        for f in out.failures:
            event = f.event
            eid = event.event_id if event is not None else None
            why = Rejected("internal_error", f.error, f.workflow_id, eid)
            if event is not None and event is current and data is not None:
                self._dead(data, why)
                continue
            stats = self.stats
            stats.deadletters += 1
            stats.deadletter_reasons[why.reason] += 1
            payload = encode(event) if event is not None else b""
            self._put(dead_letter(payload, why, Source(topic=self.source), self._stamp()))
        out.failures.clear()

    def _emit(self, out: Outbox) -> None:
        if out.failures:
            self._failed(out, None, None)
        if not len(out):
            return
        stats = self.stats
        by_finding: dict[str | None, list[Revocation]] = {}
        floor = self._floor
        for r in out.revocations:
            r = floor.at_least(r, r.issued_at.timestamp())  # noqa: PLW2901  # never shorter
            by_finding.setdefault(r.finding_id, []).append(r)
        stats.revocations += len(out.revocations)
        for f in out.findings:
            stats.findings[f.code] += 1
            self._put(f)
            for r in by_finding.pop(f.finding_id, ()):
                self._put(r)
        for rest in by_finding.values():
            for r in rest:
                self._put(r)
        if self.decisions:
            stats.decisions += len(out.decisions)
            for d in out.decisions:
                self._put(d)

    def _put(self, record: BaseModel) -> None:
        if self._chain is not None and isinstance(record, Decision):
            self.write(self._chain.seal(0, encode(record))[0] + b"\n")
            return
        self.write(encode(record) + b"\n")


def summary_lines(stats: ReplayStats) -> list[str]:
    """A human summary of a replay, one line each."""
    lines = [
        f"lines {stats.lines:,}  events {stats.events:,}  dead letters {stats.deadletters:,}"
        f"  blank {stats.blank:,}",
        f"findings {sum(stats.findings.values()):,}  revocations {stats.revocations:,}"
        + (f"  decisions {stats.decisions:,}" if stats.decisions else ""),
    ]
    for code, n in sorted(stats.findings.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {code:<36} {n:>8,}")
    for reason, n in sorted(stats.deadletter_reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  dead letter: {reason:<23} {n:>8,}")
    lines.append(f"elapsed {stats.elapsed_s:.2f}s  ({stats.events_per_s:,.0f} events/s)")
    return lines
