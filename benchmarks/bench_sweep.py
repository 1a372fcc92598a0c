"""P2 and P3: a pipeline under open-loop load at fixed offered rates, and its detection latency.

A *pipeline* is one process under test (``tether worker`` or the naive agent) on its own
topics, a gateway (the SDK Watcher) on its revocations topic, and the load generators. A *step*
offers one rate for a fixed time and records:

* offered: the rate asked for, and the rate the load generator achieved (lines / send time);
* processed: records the process's consumer group committed per second on the intents topic
  (least-squares slope over the last three quarters of the step; the worker commits only after
  the outputs are acknowledged, so committed = fully processed);
* lag: produced minus committed, at the end of the step, and the time to drain it afterwards;
* probe latency: from the Emitter producing a violating intent to the gateway holding the
  revocation (probes are embedded at a low, fixed rate);
* CPU: percent of one core used by the process under test and the load generator, and the
  machine's busy percent (all cores), to tell a slow pipeline from a busy machine; and the
  process's CPU time per processed event, which a busy machine disturbs much less than rates.

**Sustainable** (the criterion of the maximum rate): the load generator achieved at least 95%
of the rate asked for; the lag did not grow: its least-squares slope over the second half of the
step is at most 5% of the offered rate (the lag is sampled every 0.5 s; the slope averages out
the saw-tooth of the worker's 0.5 s commit interval); and the lag at the end of the step is at
most 2 s worth of input (+1000 records). The maximum sustainable rate is the highest offered
rate of a sustainable step, found by raising the rate geometrically until a step is not
sustainable, then bisecting between the two.
"""

from __future__ import annotations

import math
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench_events import event_time
from bench_kafka import Gateway, GroupProgress, ProbeClock, create_topics, wait_heartbeat
from bench_procs import (
    Children,
    CpuMeter,
    LoadClient,
    broker_pid,
    child_pids,
    gc_pauses,
    worker_env,
)

from tether.demo.fleet import FleetConfig, iter_json_lines

SAMPLE_S = 0.5
KEEP_UP = 0.95
LAG_BOUND_S = 2.0
LAG_SLACK = 1000


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; ``inf`` entries count as lost."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(values: list[float]) -> dict[str, Any]:
    lost = sum(1 for v in values if math.isinf(v))
    out: dict[str, Any] = {"n": len(values), "lost": lost}
    for name, q in (("p50", 50), ("p99", 99), ("p999", 99.9)):
        v = percentile(values, q)
        out[f"{name}_ms"] = None if math.isnan(v) or math.isinf(v) else round(v, 2)
    finite = [v for v in values if not math.isinf(v)]
    out["max_ms"] = round(max(finite), 2) if finite else None
    return out


class Corpus:
    """The fleet's telemetry as a JSON Lines file, generated ahead of the steps that read it.

    Same mix as P1 (seed, 5% attacks, 1% duplicates, bounded disorder, 32 interleaved
    workflows), dated 30 days back so that no event is ahead of the worker's clock. The fleet
    runs on an accelerated clock (~10 events per second of event time), as in P1 and
    ``tether demo``.
    """

    def __init__(self, path: Path, seed: int) -> None:
        start = (datetime.now(UTC) - timedelta(days=30)).replace(microsecond=0)
        self.path = path
        self._gen = iter_json_lines(
            FleetConfig(seed=seed, workflows=10**12, attack_rate=0.05, start=start)
        )
        self.lines = 0
        path.write_bytes(b"")

    def ensure(self, lines: int) -> None:
        """Make the file at least ``lines`` lines long."""
        if lines <= self.lines:
            return
        began, need = time.monotonic(), lines - self.lines
        last = b""
        with self.path.open("ab") as f:
            while self.lines < lines:
                chunk = [next(self._gen) for _ in range(min(10_000, lines - self.lines))]
                f.write(b"\n".join(chunk) + b"\n")
                self.lines += len(chunk)
                last = chunk[-1]
        if event_time(last) > time.time() - 600:
            raise RuntimeError(
                "the fleet corpus has caught up with the wall clock; start it earlier"
            )
        log(f"  generated {need:,} more fleet events in {time.monotonic() - began:.1f}s")


@dataclass
class Pipeline:
    """One process under test with its topics, gateway and load generators."""

    kind: str
    prefix: str
    group: str
    proc: subprocess.Popen[bytes]
    progress: GroupProgress
    gateway: Gateway
    clock: ProbeClock
    loads: list[LoadClient]
    log_path: Path | None = None  # the process's log (the worker's logged gc pauses)
    line: int = 0
    offset: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)

    def close(self, children: Children) -> None:
        for load in self.loads:
            load.quit()
        self.gateway.stop()
        self.progress.close()
        children.stop(self.kind)


@dataclass
class Context:
    """What every phase needs: where things run and where they go."""

    bootstrap: str
    redis_url: str
    run_prefix: str
    partitions: int
    children: Children
    logs: Path
    producers: int = 1
    observer: str = "watcher"
    load_linger_ms: float = 5.0


def standalone_context(tag: str, stamp: str, partitions: int, out: Path) -> Context:
    """The context of a benchmark run on its own (not by the harness): the local services
    from TETHER_KAFKA_BOOTSTRAP and TETHER_REDIS_URL, fresh topics ``<tag>-<stamp>-<random>-``
    and logs in ``out/logs-<tag>-<stamp>``."""
    logs = out / f"logs-{tag}-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    return Context(
        os.environ.get("TETHER_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        os.environ.get("TETHER_REDIS_URL", "redis://127.0.0.1:6379/0"),
        f"{tag}-{stamp}-{secrets.token_hex(2)}-",
        partitions,
        Children(),
        logs,
    )


def open_pipeline(ctx: Context, kind: str) -> Pipeline:
    """Create topics, start the process under test and wait for its first heartbeat."""
    prefix = f"{ctx.run_prefix}{kind}-"
    group = f"{prefix}{'naive' if kind == 'naive' else 'monitor'}"
    create_topics(ctx.bootstrap, prefix, ctx.partitions)
    env = worker_env(ctx.bootstrap, ctx.redis_url, prefix, group, kind, ctx.partitions)
    if kind == "naive":
        argv = [sys.executable, str(Path(__file__).with_name("naive_agent.py"))]
    else:
        argv = [sys.executable, "-m", "tether.cli", "worker", "--loglevel", "warning"]
    proc = ctx.children.spawn(kind, argv, env, ctx.logs / f"{kind}.log")
    up = wait_heartbeat(
        ctx.bootstrap, f"{prefix}revocations", kind, 120, lambda: proc.poll() is None
    )
    log(f"  {kind} (pid {proc.pid}) up in {up:.1f}s; topics {prefix}*")
    clock = ProbeClock.new()
    gateway = Gateway(ctx.bootstrap, prefix, clock, ctx.observer)
    gateway.start()
    loads = [
        LoadClient(
            ctx.children,
            f"{kind}-load{i}",
            [
                "--bootstrap",
                ctx.bootstrap,
                "--topic",
                f"{prefix}intents",
                "--run",
                ctx.run_prefix + kind,
                "--index",
                str(i),
                "--of",
                str(ctx.producers),
                "--linger-ms",
                str(ctx.load_linger_ms),
            ],
            ctx.logs / f"{kind}-load{i}.log",
        )
        for i in range(ctx.producers)
    ]
    progress = GroupProgress(ctx.bootstrap, group, [f"{prefix}intents"], ctx.partitions)
    return Pipeline(
        kind, prefix, group, proc, progress, gateway, clock, loads, ctx.logs / f"{kind}.log"
    )


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(t, y)`` points (0 with fewer than two)."""
    if len(points) < 2:  # a line needs two points
        return 0.0
    mt = sum(t for t, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    var = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / var if var else 0.0


def slopes(samples: list[tuple[float, int, int]], t_a: float, t_b: float) -> tuple[float, float]:
    """``(committed/s, lag growth/s)``: least-squares slopes over the samples in ``[t_a, t_b]``
    (a fit over many 0.5 s samples is not fooled by the saw-tooth of the commit interval)."""
    window = [s for s in samples if t_a <= s[0] <= t_b]
    committed = _slope([(t, c) for t, _, c in window])
    lag = _slope([(t, e - c) for t, e, c in window])
    return committed, lag


def _drive(
    pipe: Pipeline, corpus: Corpus, rate: float, lines: int, probe_rate: float, tag: str
) -> tuple[float, list[tuple[float, int, int]], list[dict[str, Any]], dict[str, float]]:
    """Have the load generators send ``lines`` at ``rate``; sample the lag meanwhile."""
    corpus.ensure(pipe.line + lines)
    t0 = time.time() + 0.3
    for load in pipe.loads:
        load.send(
            {
                "cmd": "step",
                "path": str(corpus.path),
                "offset": pipe.offset,
                "lines": lines,
                "rate": rate,
                "t0": t0,
                "probe_rate": probe_rate,
                "probe_tag": tag,
            }
        )
    broker = broker_pid()
    meter = CpuMeter(
        {
            "process": pipe.proc.pid,
            **{f"process-child{i}": pid for i, pid in enumerate(child_pids(pipe.proc.pid))},
            **{load.name: load.proc.pid for load in pipe.loads},
            "harness": os.getpid(),
            **({"broker": broker} if broker is not None else {}),
        }
    )
    samples: list[tuple[float, int, int]] = []
    replies: list[dict[str, Any]] = []
    next_log = time.monotonic() + 5
    while len(replies) < len(pipe.loads):
        got = pipe.progress.try_sample()
        if got is not None:
            end, committed = got
            samples.append((time.time(), end, committed))
        for load in pipe.loads:
            reply = load.poll_reply()
            if reply is not None:
                replies.append(reply)
        if pipe.proc.poll() is not None:
            raise RuntimeError(f"the {pipe.kind} exited (code {pipe.proc.returncode}); see its log")
        if time.monotonic() >= next_log and samples:
            next_log += 5
            end, committed = samples[-1][1:]
            log(
                f"    {time.time() - t0:5.1f}s  produced {end:,}  committed {committed:,}  lag {end - committed:,}"
            )
        time.sleep(SAMPLE_S)
    return t0, samples, replies, meter.read()


def run_step(
    pipe: Pipeline,
    corpus: Corpus,
    rate: float,
    seconds: float,
    *,
    probe_rate: float,
    tag: str,
    record: bool = True,
) -> dict[str, Any]:
    """Offer ``rate`` events/s for ``seconds`` and measure (see the module docstring)."""
    lines = max(1, int(rate * seconds))
    t0, samples, replies, cpu = _drive(pipe, corpus, rate, lines, probe_rate, tag)
    t_last = max(r["last"] for r in replies)
    got = pipe.progress.try_sample()
    if got is not None:
        samples.append((time.time(), *got))
    if not samples:
        raise RuntimeError("no lag sample during the step: the broker did not answer")
    end, committed = samples[-1][1:]
    duration = max(t_last - t0, 1e-9)
    achieved = lines / duration
    processed, _ = slopes(samples, t0 + duration / 4, t_last + SAMPLE_S)
    growth = slopes(samples, t0 + duration / 2, t_last + SAMPLE_S)[1]
    _, end_at, committed_at = next((x for x in samples if x[0] >= t_last), samples[-1])
    lag_end = end_at - committed_at
    if committed == samples[0][2] and end > committed:
        raise RuntimeError(f"the {pipe.kind} processed nothing in {duration:.0f}s; see its log")
    alive = lambda: pipe.proc.poll() is None  # noqa: E731
    drain = pipe.progress.wait_caught_up(max(60.0, 3 * (end - committed) / max(rate, 1)), alive)
    probes = [tuple(p) for r in replies for p in r["probes"]]
    pipe.clock.expect(probes)  # type: ignore[arg-type]  # [token, sent_at] pairs
    tokens = [p[0] for p in probes]
    pipe.clock.wait(tokens, 15.0)
    latency = latency_summary(pipe.clock.latencies_ms(tokens))
    pipe.line += lines
    pipe.offset = replies[0]["end_offset"]
    pauses = gc_pauses(pipe.log_path, t0, t_last) if pipe.log_path is not None else {}
    kept_up = growth <= (1 - KEEP_UP) * achieved
    bounded = lag_end <= LAG_BOUND_S * achieved + LAG_SLACK
    producer_ok = achieved >= KEEP_UP * rate
    result = {
        "tag": tag,
        "offered_target": round(rate),
        "offered_achieved": round(achieved),
        "seconds": round(duration, 1),
        "processed_per_s": round(processed),
        "lag_end": lag_end,
        "lag_growth_per_s": round(growth, 1),
        "drain_s": None if drain is None else round(drain, 1),
        "producer_worst_late_ms": round(max(r["worst_late_s"] for r in replies) * 1000, 1),
        "producer_ok": producer_ok,
        "kept_up": kept_up,
        "lag_bounded": bounded,
        "sustainable": producer_ok and kept_up and bounded,
        "latency": latency,
        "delivery_failures": sum(r["failed"] for r in replies),
        **pauses,
        **cpu,
        "process_cpu_us_per_event": round(cpu["process_cpu_pct"] * 1e4 / processed, 1)
        if processed > 0
        else None,
        "samples": [
            [round(t - t0, 2), e - samples[0][1], c - samples[0][1]] for t, e, c in samples
        ],
    }
    if record:
        pipe.steps.append(result)
    verdict = (
        "sustainable"
        if result["sustainable"]
        else ("producer-limited" if not producer_ok else "NOT sustainable")
    )
    log(
        f"  {pipe.kind} {tag}: offered {rate:,.0f}/s (achieved {achieved:,.0f}), processed "
        f"{result['processed_per_s'] or 0:,}/s, lag at end {lag_end:,} (growing "
        f"{growth:,.0f}/s), drained in "
        f"{result['drain_s']}s -> {verdict}; probe p50 {latency['p50_ms']} ms p99 "
        f"{latency['p99_ms']} ms (n={latency['n']}, lost {latency['lost']}); cpu "
        f"{pipe.kind} {cpu['process_cpu_pct']}% broker {cpu.get('broker_cpu_pct', '?')}% "
        f"machine {cpu['machine_busy_pct']}%"
        + (
            f"; gc pauses >= {pauses['gc_log_ms']:g} ms: {pauses['gc_pauses']} "
            f"({pauses['gc_pauses_full']} full), longest {pauses['gc_pause_max_ms']} ms"
            if pauses.get("gc_pauses") is not None and pipe.kind != "naive"
            else ""
        )
    )
    return result


def _round_rate(rate: float) -> float:
    step = 100 if rate >= 1000 else 50
    return max(step, round(rate / step) * step)


@dataclass
class SweepPlan:
    start: float
    growth: float
    refine: int
    max_rate: float
    seconds: float
    probe_rate: float
    warmup_s: float = 5.0


def sweep(pipe: Pipeline, corpus: Corpus, plan: SweepPlan) -> dict[str, Any]:
    """Find the maximum sustainable rate (see the module docstring); returns the P2 figures."""
    log(f"  warm-up: {plan.start / 2:,.0f}/s for {plan.warmup_s:.0f}s (not recorded)")
    run_step(
        pipe,
        corpus,
        plan.start / 2,
        plan.warmup_s,
        probe_rate=plan.probe_rate,
        tag="warmup",
        record=False,
    )
    good: dict[str, Any] | None = None
    bad: dict[str, Any] | None = None
    rate, n = plan.start, 0
    while rate <= plan.max_rate:
        n += 1
        step = run_step(pipe, corpus, rate, plan.seconds, probe_rate=plan.probe_rate, tag=f"s{n}")
        if not step["sustainable"]:
            bad = step
            break
        good = step
        rate = _round_rate(rate * plan.growth)
    if good is None and bad is not None:  # too fast already: come down
        rate = bad["offered_target"]
        for _ in range(3):
            rate = _round_rate(rate / 2)
            n += 1
            step = run_step(
                pipe, corpus, rate, plan.seconds, probe_rate=plan.probe_rate, tag=f"s{n}"
            )
            if step["sustainable"]:
                good = step
                break
            bad = step
    for _ in range(plan.refine):
        if good is None or bad is None or not bad["producer_ok"]:
            break
        mid = _round_rate((good["offered_target"] + bad["offered_target"]) / 2)
        if mid in (good["offered_target"], bad["offered_target"]):
            break
        n += 1
        step = run_step(pipe, corpus, mid, plan.seconds, probe_rate=plan.probe_rate, tag=f"s{n}")
        if step["sustainable"]:
            good = step
        else:
            bad = step
    capacity = max((s["processed_per_s"] or 0 for s in pipe.steps), default=0)
    limited_by = None
    if bad is not None and not bad["producer_ok"]:
        limited_by = "load generator"
    elif bad is None:
        limited_by = "--max-rate"
    cost = good["process_cpu_us_per_event"] if good else None
    return {
        "max_sustainable_per_s": good["offered_target"] if good else 0,
        "cpu_us_per_event_at_max": cost,
        "events_per_cpu_s_at_max": round(1e6 / cost) if cost else None,
        "processed_at_max_per_s": good["processed_per_s"] if good else 0,
        "first_unsustainable_per_s": bad["offered_target"] if bad else None,
        "peak_processed_per_s": capacity,
        "search_limited_by": limited_by,
        "steps": pipe.steps,
    }


def idle_probe(pipe: Pipeline, idle_began: float, minutes: float) -> dict[str, Any]:
    """After ``minutes`` without input, one probe (the first violation), then five more."""
    remaining = idle_began + minutes * 60 - time.time()
    while remaining > 0:
        log(f"  pipeline idle; first violation in {remaining:.0f}s")
        time.sleep(min(remaining, 30.0))
        remaining = idle_began + minutes * 60 - time.time()
    idle_s = time.time() - idle_began
    values = []
    for i in range(6):
        pipe.loads[0].send({"cmd": "probe", "tag": f"idle{i}"})
        token, sent_at = pipe.loads[0].reply(30)["probes"][0]
        pipe.clock.expect([(token, sent_at)])
        pipe.clock.wait([token], 60.0)
        values.append(pipe.clock.latencies_ms([token])[0])
        time.sleep(0.2)
    first = values[0]
    return {
        "idle_s": round(idle_s),
        "first_ms": None if math.isinf(first) else round(first, 2),
        "next_five_p50_ms": latency_summary(values[1:])["p50_ms"],
    }
