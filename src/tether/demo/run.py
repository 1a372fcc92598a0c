"""``tether demo``: a synthetic agent fleet through the monitor in real time, then a scorecard."""

from __future__ import annotations

import random
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO

import orjson
from rich.console import Console
from rich.live import Live

from tether.bootstrap import monitor
from tether.core import Monitor, Outbox
from tether.core.violations import ts
from tether.demo.board import Board, revocation_line
from tether.demo.fleet import FleetConfig, FleetEvent, generate, ground_truth
from tether.demo.malformed import malformed_lines
from tether.demo.scorecard import Report, score, summary_lines
from tether.demo.sources import fleet_sources, forged_lines
from tether.demo.view import FPS, Frames
from tether.models.codec import Rejected, decode_event, encode
from tether.security.gate import SourceGate
from tether.security.proof import SourceKey
from tether.settings import Settings

_MALFORMED_EVERY = 2500  # one malformed line per this many deliveries (at least three in all)
_MIN_MALFORMED = 3
_INTERRUPTED = 130  # the shell's status for a process ended by SIGINT

#: One arrival: simulated delivery time (epoch ms), the record's bytes, and the fleet delivery
#: it encodes (None for an injected malformed line).
Item = tuple[int, bytes, FleetEvent | None]


@dataclass(frozen=True, slots=True)
class Survey:
    """The fleet's shape from a first pass: size, time span, and where each workflow ends."""

    deliveries: int
    first_ms: int
    last_ms: int
    ends: dict[str, int]  # workflow id -> arrival of its last delivery

    @classmethod
    def of(cls, config: FleetConfig) -> Survey:
        """Walk the (deterministic, cheap) generator once without keeping the events."""
        first = last = int(config.start.timestamp() * 1000)
        n = 0
        ends: dict[str, int] = {}
        for fe in generate(config):
            first = fe.arrival if n == 0 else first
            last = ends[fe.event["workflow_id"]] = fe.arrival
            n += 1
        return cls(n, first, last, ends)


def _items(config: FleetConfig, survey: Survey, key: SourceKey | None = None) -> Iterator[Item]:
    """The fleet's deliveries as bytes (signed with ``key``), with a few malformed lines at
    seeded positions (and, when signed, a few forged ones)."""
    count = max(_MIN_MALFORMED, survey.deliveries // _MALFORMED_EVERY)
    bad = malformed_lines(config.seed, count)
    rng = random.Random(f"tether-demo:{config.seed}:malformed")
    span = range(survey.deliveries // 20, max(survey.deliveries, survey.deliveries // 20 + count))
    at = sorted(rng.sample(span, count))
    if key is not None:
        bad.extend(b"\x00forge" for _ in range(2))  # places for the forgeries, made below
    for i, fe in enumerate(generate(config)):
        while at and at[0] <= i:
            at.pop(0)
            line = bad.pop()
            if line == b"\x00forge":
                for forged in forged_lines(fe.event):
                    yield fe.arrival, forged, None
                continue
            yield fe.arrival, line, None
        data = orjson.dumps(fe.event)
        yield fe.arrival, key.sign(data) if key is not None else data, fe
    for line in bad:
        if line != b"\x00forge":
            yield survey.last_ms, line, None


@dataclass(slots=True)
class Demo:
    """Feeds records to the monitor and keeps what the view and the summary need."""

    board: Board
    plain: IO[str] | None
    settings: Settings
    gate: SourceGate | None = None
    tap: Callable[[str, bytes], None] | None = None  # a live console (tether demo --console)
    monitor: Monitor = field(init=False)
    handed: dict[str, float] = field(default_factory=dict)
    found: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    event_latency: list[float] = field(default_factory=list)
    processing: list[tuple[float, bool]] = field(default_factory=list)
    targets: Counter[str] = field(default_factory=Counter)
    dead_reasons: Counter[str] = field(default_factory=Counter)
    workflows: set[str] = field(default_factory=set)
    running: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.monitor = monitor(self.settings)

    def feed(self, arrival_ms: int, data: bytes, fe: FleetEvent | None) -> None:
        """Decode one record and hand it to the monitor at its arrival on the fleet clock."""
        clock = ts(arrival_ms / 1000)
        self.board.clock = clock
        decoded = decode_event(data)
        if self.gate is not None and not isinstance(decoded, Rejected):
            admitted = self.gate.admit(data, decoded, self._initiator, clock, out := Outbox())
            self.absorb(out, None)
            if admitted is None:
                return
            decoded = admitted
        if isinstance(decoded, Rejected):
            self.dead_reasons[decoded.reason] += 1
            row = self.board.dead_letter(decoded.reason, decoded.error, decoded.workflow_id)
            self._say(row.plain())
            return
        self.board.events += 1
        self.board.duplicates += fe is not None and fe.duplicate
        self.workflows.add(decoded.workflow_id)
        if decoded.event_type == "workflow.started":
            self.running.add(decoded.workflow_id)
        elif decoded.event_type == "workflow.completed":
            self.running.discard(decoded.workflow_id)
        self.handed.setdefault(decoded.event_id, time.perf_counter())
        if self.tap is not None:
            self.tap("intents", data)
        self.absorb(self.monitor.process(decoded, clock), decoded.event_id)

    def _initiator(self, workflow_id: str) -> str | None:
        s = self.monitor.sessions.get(workflow_id)
        return s.started.initiator if s is not None and s.started is not None else None

    def flush(self) -> None:
        """End of input: decide every check still waiting for late events."""
        clock = self.board.clock.timestamp() if self.board.clock else time.time()
        wm = self.monitor.watermark
        stamp = ts(max(clock, wm + self.settings.grace_s if wm > float("-inf") else clock))
        self.absorb(self.monitor.flush(stamp), None)

    def absorb(self, out: Outbox, current: str | None) -> None:
        """Record what one step revealed: latencies, counts, feed rows, plain lines."""
        done = time.perf_counter()
        if self.tap is not None:
            for r in out.revocations:
                self.tap("revocations", encode(r))
            for f in out.findings:
                self.tap("findings", encode(f))
        by_finding: dict[str | None, list[str]] = defaultdict(list)
        for r in out.revocations:
            self.targets[r.target.kind] += 1
            if self.board.revocation(r):
                by_finding[r.finding_id].append(revocation_line(r))
        for f in out.findings:
            self.found[f.workflow_id].add(f.code)
            self.event_latency.append((f.detected_at - f.event_time).total_seconds())
            handed = [(self.handed[e], e) for e in f.evidence if e in self.handed]
            if handed:
                at, trigger = max(handed)
                self.processing.append(((done - at) * 1000, trigger == current))
            self._say(self.board.finding(f).plain())
            for line in by_finding.pop(f.finding_id, ()):
                self._say(line)
        for lines in by_finding.values():
            for line in lines:
                self._say(line)

    def _say(self, line: str) -> None:
        if self.plain is not None:
            print(line, file=self.plain, flush=True)


class _StopOnInterrupt:
    """SIGINT sets a flag the loop checks between records (a second one interrupts at once)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: object = None

    def __enter__(self) -> _StopOnInterrupt:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: KeyboardInterrupt still ends the loop
            self._previous = None
        return self

    def __exit__(self, *_: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def _pace(
    items: Iterator[Item],
    demo: Demo,
    start_ms: int,
    speedup: float | None,
    frame: Callable[[], None],
    stop: _StopOnInterrupt,
) -> bool:
    """Hand each record over when its (scaled) arrival time comes; True if interrupted."""
    began = time.perf_counter()
    try:
        for arrival, data, fe in items:
            if speedup is not None:
                due = began + (arrival - start_ms) / 1000 / speedup
                while (wait := due - time.perf_counter()) > 1e-3 and not stop.requested:
                    frame()
                    time.sleep(min(wait, 1 / FPS))
            if stop.requested:
                return True
            demo.feed(arrival, data, fe)
            frame()
    except KeyboardInterrupt:
        return True
    return stop.requested


def _decided(
    survey: Survey, config: FleetConfig, board: Board, settings: Settings
) -> Callable[[str], bool]:
    """After an interrupt, the attacked workflows whose checks have all had time to fire.

    An interrupt is not the end of input, so nothing is flushed: a workflow counts once its last
    event arrived more than the delivery disorder plus twice the grace period before the stop.
    """
    if board.clock is None:
        return lambda _wf: False
    margin_ms = (config.disorder + 2 * settings.grace_s) * 1000
    cutoff = board.clock.timestamp() * 1000 - margin_ms
    return lambda wf: survey.ends.get(wf, cutoff + 1) <= cutoff


def run_demo(
    *,
    workflows: int,
    seed: int,
    attack_rate: float,
    rate: float,
    live: bool,
    out: IO[str] | None = None,
    tap: Callable[[str, bytes], None] | None = None,
) -> int:
    """Run the synthetic fleet through the monitor, paced in real time, and score the result.

    Args:
        workflows: Workflow slots to simulate.
        seed: Seeds the fleet (same seed, same fleet and same attacks).
        attack_rate: Fraction of workflows carrying one injected attack.
        rate: Average events per second of wall time; 0 replays as fast as possible.
        live: Draw a rich live view when ``out`` is a terminal (plain lines otherwise).
        out: Where to write (default: standard output).

    Returns:
        0 when every injected attack was caught and no benign workflow raised a finding,
        1 when not, 130 when interrupted (the summary covers what had been delivered).
    """
    if rate < 0:
        raise ValueError("rate must be >= 0")
    out = out if out is not None else sys.stdout
    start = datetime.now(UTC).replace(microsecond=0)
    config = FleetConfig(seed=seed, workflows=workflows, attack_rate=attack_rate, start=start)
    survey = Survey.of(config)
    span_s = (survey.last_ms - survey.first_ms) / 1000
    speedup = rate * span_s / survey.deliveries if rate > 0 and span_s > 0 else None
    title = f"tether demo · seed {seed} · {workflows:,} workflows · {attack_rate:.0%} attacked"
    board = Board(title, survey.deliveries, speedup)
    settings = Settings()
    use_live = live and out.isatty()
    keys = tempfile.TemporaryDirectory(prefix="tether-demo-sources-")
    key, gate = fleet_sources(Path(keys.name), settings.detection())
    demo = Demo(board, None if use_live else out, settings, gate, tap)
    items = _items(config, survey, key)
    if not use_live:
        pace = f"at ~{rate:,.0f} events/s (x{speedup:,.0f})" if speedup else "as fast as possible"
        print(
            f"{title}: {survey.deliveries:,} deliveries, {span_s / 60:.0f} min of fleet time, "
            f"replayed {pace}",
            file=out,
            flush=True,
        )
    began = time.perf_counter()
    with _StopOnInterrupt() as stop:
        if use_live:
            console = Console(file=out, highlight=False)
            with Live(console=console, auto_refresh=False, transient=False) as screen:
                frame = Frames(board, screen, console, demo.running, demo.monitor.sessions)
                interrupted = _pace(items, demo, survey.first_ms, speedup, frame, stop)
                if not interrupted:
                    demo.flush()
                frame(force=True)
        else:
            interrupted = _pace(items, demo, survey.first_ms, speedup, lambda: None, stop)
            if not interrupted:
                demo.flush()
    wall_s = time.perf_counter() - began
    keys.cleanup()
    decided = _decided(survey, config, board, settings) if interrupted else None
    card = score(ground_truth(config), demo.found, decided)
    report = Report(
        wall_s=wall_s,
        fleet_s=span_s,
        speedup=speedup,
        events=board.events,
        duplicates=board.duplicates,
        dead_reasons=demo.dead_reasons,
        workflows=len(demo.workflows),
        findings=board.findings,
        targets=demo.targets,
        completions=board.completions,
        event_latency=demo.event_latency,
        processing=demo.processing,
        grace_s=settings.grace_s,
        card=card,
        interrupted=interrupted,
    )
    lines = summary_lines(report)
    if use_live:
        for text, style in lines:
            console.print(text, style=style or None, highlight=False)
    else:
        print("\n".join(text for text, _ in lines), file=out, flush=True)
    if interrupted:
        return _INTERRUPTED
    return 0 if card.passed else 1
