"""``tether demo``: a synthetic agent fleet through the monitor in real time, then a scorecard."""

from __future__ import annotations

import random
import signal
import sys
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import IO

import orjson
from rich.console import Console
from rich.live import Live

from tether.bootstrap import monitor
from tether.core import Monitor, Outbox
from tether.core.violations import ts
from tether.demo.fleet import FleetConfig, FleetEvent, generate, ground_truth
from tether.demo.malformed import malformed_lines
from tether.demo.scorecard import Report, score, summary_lines
from tether.demo.view import Board, render, revocation_line
from tether.models.codec import Rejected, decode_event
from tether.settings import Settings

_FPS = 6
_MALFORMED_EVERY = 2500  # one malformed line per this many deliveries (at least three in all)
_MIN_MALFORMED = 3
_RATE_WINDOW_S = 2.0
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
    last_index: dict[str, int]

    @classmethod
    def of(cls, config: FleetConfig) -> Survey:
        """Walk the (deterministic, cheap) generator once without keeping the events."""
        first = last = n = 0
        ends: dict[str, int] = {}
        for n, fe in enumerate(generate(config), 1):  # noqa: B007  # n is the count
            first = first or fe.arrival
            last = fe.arrival
            ends[fe.event["workflow_id"]] = n - 1
        return cls(n, first, last, ends)


def _items(config: FleetConfig, survey: Survey) -> Iterator[Item]:
    """The fleet's deliveries as bytes, with a few malformed lines at seeded positions."""
    count = max(_MIN_MALFORMED, survey.deliveries // _MALFORMED_EVERY)
    bad = malformed_lines(config.seed, count)
    rng = random.Random(f"tether-demo:{config.seed}:malformed")
    span = range(survey.deliveries // 20, max(survey.deliveries, survey.deliveries // 20 + count))
    at = sorted(rng.sample(span, count))
    for i, fe in enumerate(generate(config)):
        while at and at[0] <= i:
            at.pop(0)
            yield fe.arrival, bad.pop(), None
        yield fe.arrival, orjson.dumps(fe.event), fe
    for line in bad:
        yield survey.last_ms, line, None


@dataclass(slots=True)
class Demo:
    """Feeds records to the monitor and keeps what the view and the summary need."""

    board: Board
    plain: IO[str] | None
    grace_s: float
    monitor: Monitor = field(init=False)
    handed: dict[str, float] = field(default_factory=dict)
    found: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    event_latency: list[float] = field(default_factory=list)
    processing: list[tuple[float, bool]] = field(default_factory=list)
    targets: Counter[str] = field(default_factory=Counter)
    dead_reasons: Counter[str] = field(default_factory=Counter)
    workflows: set[str] = field(default_factory=set)
    delivered: int = 0

    def __post_init__(self) -> None:
        self.monitor = monitor(Settings())

    def feed(self, arrival_ms: int, data: bytes, fe: FleetEvent | None) -> None:
        """Decode one record and hand it to the monitor at its arrival on the fleet clock."""
        clock = ts(arrival_ms / 1000)
        self.board.clock = clock
        if fe is not None:
            self.delivered += 1
        decoded = decode_event(data)
        if isinstance(decoded, Rejected):
            self.dead_reasons[decoded.reason] += 1
            row = self.board.dead_letter(decoded.reason, decoded.error, decoded.workflow_id)
            self._say(row.plain())
            return
        self.board.events += 1
        self.board.duplicates += fe is not None and fe.duplicate
        self.workflows.add(decoded.workflow_id)
        self.handed.setdefault(decoded.event_id, time.perf_counter())
        self.absorb(self.monitor.process(decoded, clock), decoded.event_id)

    def flush(self) -> None:
        """End of input: decide every check still waiting for late events."""
        clock = self.board.clock.timestamp() if self.board.clock else time.time()
        wm = self.monitor.watermark
        stamp = ts(max(clock, wm + self.grace_s if wm > float("-inf") else clock))
        self.absorb(self.monitor.flush(stamp), None)

    def absorb(self, out: Outbox, current: str | None) -> None:
        """Record what one step revealed: latencies, counts, feed rows, plain lines."""
        done = time.perf_counter()
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
    items: Iterator[Item], demo: Demo, start_ms: int, speedup: float | None,
    frame: Callable[[], None], stop: _StopOnInterrupt,
) -> bool:  # fmt: skip
    """Hand each record over when its (scaled) arrival time comes; True if interrupted."""
    began = time.perf_counter()
    try:
        for arrival, data, fe in items:
            if speedup is not None:
                due = began + (arrival - start_ms) / 1000 / speedup
                while (wait := due - time.perf_counter()) > 1e-3 and not stop.requested:
                    frame()
                    time.sleep(min(wait, 1 / _FPS))
            if stop.requested:
                return True
            demo.feed(arrival, data, fe)
            frame()
    except KeyboardInterrupt:
        return True
    return stop.requested


def run_demo(
    *, workflows: int, seed: int, attack_rate: float, rate: float, live: bool,
    out: IO[str] | None = None,
) -> int:  # fmt: skip
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
    demo = Demo(board, None if use_live else out, settings.grace_s)
    items = _items(config, survey)
    if not use_live:
        pace = f"at ~{rate:,.0f} events/s (x{speedup:,.0f})" if speedup else "as fast as possible"
        print(f"{title}: {survey.deliveries:,} deliveries, {span_s / 60:.0f} min of fleet time, "
              f"replayed {pace}", file=out, flush=True)  # fmt: skip
    began = time.perf_counter()
    with _StopOnInterrupt() as stop:
        if use_live:
            console = Console(file=out, highlight=False)
            with Live(console=console, auto_refresh=False, transient=False) as screen:
                frame = _Frames(board, demo, screen, console, began)
                interrupted = _pace(items, demo, survey.first_ms, speedup, frame, stop)
                demo.flush()
                frame(force=True)
        else:
            interrupted = _pace(items, demo, survey.first_ms, speedup, lambda: None, stop)
            demo.flush()
    wall_s = time.perf_counter() - began
    delivered = demo.delivered
    done = (lambda wf: survey.last_index.get(wf, -1) < delivered) if interrupted else None
    card = score(ground_truth(config), demo.found, done)
    report = Report(
        wall_s=wall_s, fleet_s=span_s, speedup=speedup, events=board.events,
        duplicates=board.duplicates, dead_reasons=demo.dead_reasons,
        workflows=len(demo.workflows), findings=board.findings, targets=demo.targets,
        completions=board.completions, event_latency=demo.event_latency,
        processing=demo.processing, grace_s=settings.grace_s, card=card,
        interrupted=interrupted,
    )  # fmt: skip
    lines = summary_lines(report)
    if use_live:
        for text, style in lines:
            console.print(text, style=style or None, highlight=False)
    else:
        print("\n".join(text for text, _ in lines), file=out, flush=True)
    if interrupted:
        return _INTERRUPTED
    return 0 if card.passed else 1


class _Frames:
    """Redraws the live view at most ``_FPS`` times a second (the loop calls it freely)."""

    def __init__(self, board: Board, demo: Demo, live: Live, console: Console, began: float) -> None:
        self.board, self.demo, self.live, self.console = board, demo, live, console
        self.began = began
        self.next = 0.0
        self.window: deque[tuple[float, int]] = deque()

    def __call__(self, *, force: bool = False) -> None:
        now = time.perf_counter()
        if now < self.next and not force:
            return
        self.next = now + 1 / _FPS
        b = self.board
        b.elapsed = now - self.began
        b.active = len(self.demo.monitor.sessions)
        self.window.append((now, b.events))
        while len(self.window) > 2 and now - self.window[0][0] > _RATE_WINDOW_S:  # noqa: PLR2004
            self.window.popleft()
        t0, n0 = self.window[0]
        b.rate = (b.events - n0) / (now - t0) if now > t0 else 0.0
        self.live.update(render(b, self.console.size.height), refresh=True)
