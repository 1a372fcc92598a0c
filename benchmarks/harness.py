"""tether's benchmark harness (issue 4): every figure P1-P6 from one command.

    .venv/bin/python benchmarks/harness.py              # everything, full sizes (~25-30 min)
    .venv/bin/python benchmarks/harness.py --quick      # the same, smaller (a few minutes)
    .venv/bin/python benchmarks/harness.py --only P2,P3 --idle-minutes 1
    make bench                                          # = the first line; ARGS="--quick" etc.

It needs the local services (`make services`: Kafka on TETHER_KAFKA_BOOTSTRAP, Redis on
TETHER_REDIS_URL) and starts everything else itself: `tether worker` processes and the naive
faust baseline (benchmarks/naive_agent.py) on fresh topics (prefix bench-<time>-<random>-,
created with `tether topics create`, deleted at the end unless --keep-topics), load generators
(benchmarks/loadgen.py) that produce with the SDK Emitter on a wall-clock schedule (open loop),
and the SDK Watcher as the gateway. Children die with the harness (also on Ctrl-C or kill -9).

Figures (targets in brackets; see docs/benchmarks.md for the method of each):
  P1  core events/s on one core over a realistic fleet, default Cedar pack   [>= 50,000/s]
  P2  max sustainable intents/s through one `tether worker`, all outputs on  [>= 10,000/s,
      stretch 25,000]; P2/P1; the same for a naive one-event-at-a-time faust agent
  P3  intent produced -> Watcher holds the revocation, p50/p99/p99.9 at 50% and 80% of P2
      [p50 <= 15 ms, p99 <= 100 ms at 50%]; the first violation after N idle minutes
  P4  Watcher.is_revoked with 1M live revocations                            [<= 2 us]
  P5  bytes per active session at 100k sessions [<= 4 KB]; completed workflows do not pile up
  P6  kill -9 the worker holding 100k sessions -> processing again, state restored [<= 15 s]

Output: a table on stdout (each figure beside its target, PASS/FAIL), one line of JSON with the
headline figures, benchmarks/out/results-<time>.json and latest.json (every step, sample and
method), and benchmarks/out/latency-vs-rate.png. Progress goes to stderr. Exit status: 0 when
every selected phase ran (whether or not it met its target), 1 when one failed to run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench_report
import core_replay
import watcher_lookup
from bench_kafka import delete_run
from bench_procs import Children, broker_idle_pct, loadavg
from bench_state import run_state
from bench_sweep import Context, Corpus, SweepPlan, idle_probe, log, open_pipeline, run_step, sweep

from tether.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("P1", "P2", "P3", "P4", "P5", "P6")
BROKER_IDLE_WARN_PCT = 30  # % of a core; a warmed-up broker with few topics idled at 12-24% here
#            full        quick
SIZES = {
    "p1_events": (1_000_000, 200_000),
    "p4_live": (1_000_000, 1_000_000),
    "p4_calls": (1_000_000, 200_000),
    "step_seconds": (30.0, 10.0),
    "growth": (1.5, 2.0),
    "refine": (2, 1),
    "p3_seconds": (60.0, 15.0),
    "p3_probe_rate": (25.0, 20.0),
    "idle_minutes": (5.0, 0.5),
    "sessions": (100_000, 20_000),
    "core_sessions": (20_000, 5_000),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    settings = Settings()
    p = argparse.ArgumentParser(
        prog="benchmarks/harness.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--only", default=",".join(PHASES), help="comma-separated phases to run (default: all)"
    )
    p.add_argument(
        "--quick", action="store_true", help="smaller sizes and shorter steps: a few minutes"
    )
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out", help="where results go")
    p.add_argument(
        "--bootstrap", default=settings.kafka_bootstrap, help="Kafka [TETHER_KAFKA_BOOTSTRAP]"
    )
    p.add_argument(
        "--redis-url",
        default=settings.redis_url.get_secret_value(),
        help="Redis [TETHER_REDIS_URL]",
    )
    p.add_argument(
        "--partitions", type=int, default=settings.partitions, help="per topic [TETHER_PARTITIONS]"
    )
    p.add_argument("--seed", type=int, default=7, help="fleet seed (P1 and the P2/P3 stream)")
    g = p.add_argument_group("P2/P3 load (open loop, SDK Emitter)")
    g.add_argument(
        "--step-seconds", type=float, help="length of each offered-rate step [30; quick 10]"
    )
    g.add_argument("--start-rate", type=float, default=1000, help="first offered rate, events/s")
    g.add_argument(
        "--naive-start-rate", type=float, default=500, help="first offered rate for the naive agent"
    )
    g.add_argument(
        "--growth", type=float, help="rate multiplier between steps until one fails [1.5; quick 2]"
    )
    g.add_argument(
        "--refine", type=int, help="bisection steps after the first failure [2; quick 1]"
    )
    g.add_argument("--max-rate", type=float, default=60_000, help="never offer more than this")
    g.add_argument(
        "--probe-rate", type=float, default=5.0, help="latency probes per second in P2 steps"
    )
    g.add_argument("--p3-seconds", type=float, help="length of each P3 load level [60; quick 15]")
    g.add_argument(
        "--p3-probe-rate", type=float, help="probes per second in P3 levels [25; quick 20]"
    )
    g.add_argument(
        "--idle-minutes",
        type=float,
        help="idle time before the first-violation probe [5; quick 0.5]",
    )
    g.add_argument(
        "--producers", type=int, default=1, help="load generator processes (each ~20k/s max)"
    )
    g.add_argument(
        "--load-linger-ms",
        type=float,
        default=5.0,
        help="batching of the background load (librdkafka linger.ms): one process stands in "
        "for a whole fleet of agents, whose events reach the broker in many requests that the "
        "fleet's own hosts pay for; here the broker shares the worker's cores. The timed "
        "probes always go through an Emitter with the SDK's defaults (linger 1 ms) [5]",
    )
    g.add_argument(
        "--observer",
        choices=("watcher", "raw"),
        default="watcher",
        help="time probes in the SDK Watcher (default; falls back to raw if it rejects "
        "the feed) or a plain consumer",
    )
    g = p.add_argument_group("P1, P4, P5, P6 sizes")
    g.add_argument("--p1-events", type=int, help="events replayed [1,000,000; quick 200,000]")
    g.add_argument("--p4-live", type=int, help="live revocations [1,000,000]")
    g.add_argument("--p4-calls", type=int, help="lookups per case [1,000,000; quick 200,000]")
    g.add_argument("--sessions", type=int, help="sessions loaded for P5/P6 [100,000; quick 20,000]")
    g.add_argument(
        "--core-sessions",
        type=int,
        help="sessions for the in-process tracemalloc check [20,000; quick 5,000]",
    )
    p.add_argument(
        "--keep-topics", action="store_true", help="leave the run's topics and groups on the broker"
    )
    args = p.parse_args(argv)
    for name, (full, quick) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    args.only = [x.strip().upper() for x in args.only.split(",") if x.strip()]
    unknown = set(args.only) - set(PHASES)
    if unknown:
        p.error(f"unknown phase(s) {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}")
    return args


def _git() -> str:
    """The commit measured, with "+dirty" when the work tree has changes."""
    git = shutil.which("git")
    if git is None:
        return "unknown"
    try:
        head = subprocess.run(  # noqa: S603  # fixed arguments
            [git, "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(  # noqa: S603  # fixed arguments
            [git, "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _check_services(args: argparse.Namespace) -> None:
    from tether.adapters.kafka_admin import wait_for_broker  # noqa: PLC0415

    wait_for_broker(Settings(kafka_bootstrap=args.bootstrap), timeout=15)
    import redis  # noqa: PLC0415

    redis.Redis.from_url(args.redis_url, socket_connect_timeout=3).ping()


def _phase(
    results: dict[str, Any], errors: list[str], name: str, fn: Any, *a: Any, **kw: Any
) -> Any:
    log(f"\n== {name} ==")
    began = time.monotonic()
    try:
        value = fn(*a, **kw)
    except Exception as exc:  # one broken phase must not lose the others
        traceback.print_exc()
        errors.append(f"{name}: {exc!r}")
        results.setdefault("errors", []).append(f"{name}: {exc!r}")
        return None
    log(f"== {name}: {time.monotonic() - began:.0f}s ==")
    return value


def run_pipelines(
    args: argparse.Namespace, ctx: Context, results: dict[str, Any], errors: list[str], stamp: str
) -> None:
    """P2 (worker and naive sweeps) and P3 (load levels, idle probe) share one worker."""
    corpus = Corpus(args.out / f"stream-{stamp}.jsonl", args.seed)
    worker = None
    try:
        worker = _phase(results, errors, "P2 tether worker: start", open_pipeline, ctx, "worker")
        if worker is None:
            return
        plan = SweepPlan(
            args.start_rate,
            args.growth,
            args.refine,
            args.max_rate,
            args.step_seconds,
            args.probe_rate,
        )
        found = _phase(results, errors, "P2 tether worker: sweep", sweep, worker, corpus, plan)
        if found is None:
            return
        found["gateway"] = worker.gateway.mode + (
            f" ({worker.gateway.note})" if worker.gateway.note else ""
        )
        results.setdefault("P2" if "P2" in args.only else "P3", {})[
            "worker" if "P2" in args.only else "sweep"
        ] = found
        idle_began = time.time()
        if "P3" in args.only and found["max_sustainable_per_s"]:
            levels = []
            for pct in (50, 80):
                rate = found["max_sustainable_per_s"] * pct / 100
                log(
                    f"\n== P3: {pct}% of {found['max_sustainable_per_s']:,}/s = {rate:,.0f}/s for {args.p3_seconds:.0f}s =="
                )
                step = run_step(
                    worker,
                    corpus,
                    rate,
                    args.p3_seconds,
                    probe_rate=args.p3_probe_rate,
                    tag=f"p3-{pct}",
                    record=False,
                )
                levels.append({"load_pct": pct, **step})
            results.setdefault("P3", {})["levels"] = levels
            results["P3"]["gateway"] = found["gateway"]
            idle_began = time.time()
        if "P2" in args.only:
            naive = _phase(
                results, errors, "P2 naive faust agent: start", open_pipeline, ctx, "naive"
            )
            if naive is not None:
                nplan = SweepPlan(
                    args.naive_start_rate,
                    args.growth,
                    args.refine,
                    args.max_rate,
                    args.step_seconds,
                    args.probe_rate,
                )
                got = _phase(
                    results, errors, "P2 naive faust agent: sweep", sweep, naive, corpus, nplan
                )
                naive.close(ctx.children)
                if got is not None:
                    got["gateway"] = naive.gateway.mode + (
                        f" ({naive.gateway.note})" if naive.gateway.note else ""
                    )
                    results["P2"]["naive"] = got
        if "P3" in args.only:
            log(
                f"\n== P3: first violation after {args.idle_minutes:g} idle minutes (the worker has had no input since the last step) =="
            )
            results.setdefault("P3", {})["idle"] = idle_probe(worker, idle_began, args.idle_minutes)
            log(f"  first violation: {results['P3']['idle']['first_ms']} ms")
    finally:
        if worker is not None:
            worker.close(ctx.children)
        corpus.path.unlink(missing_ok=True)


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, one flat object."""
    out: dict[str, Any] = {}
    p1 = results.get("P1", {}).get("events_per_s")
    out["P1_events_per_s"] = p1
    worker = results.get("P2", {}).get("worker") or results.get("P3", {}).get("sweep")
    if worker:
        out["P2_max_sustainable_per_s"] = worker["max_sustainable_per_s"]
        out["P2_over_P1"] = round(worker["max_sustainable_per_s"] / p1, 3) if p1 else None
    naive = results.get("P2", {}).get("naive")
    if naive:
        out["naive_max_sustainable_per_s"] = naive["max_sustainable_per_s"]
        out["naive_over_P1"] = round(naive["max_sustainable_per_s"] / p1, 3) if p1 else None
    for level in results.get("P3", {}).get("levels", []):
        for k in ("p50_ms", "p99_ms", "p999_ms"):
            out[f"P3_{k}_at_{level['load_pct']}pct"] = level["latency"][k]
    if "idle" in results.get("P3", {}):
        out["P3_first_after_idle_ms"] = results["P3"]["idle"]["first_ms"]
    if "P4" in results:
        p4 = results["P4"]
        out["P4_is_revoked_us"] = round(
            max(p4["token_hit_us"], p4["token_miss_us"], p4["three_ids_miss_us"]), 3
        )
    if "P5" in results:
        out["P5_bytes_per_session"] = results["P5"]["bytes_per_session"]
        out["P5_sessions_after_completion"] = results["P5"].get("table_sessions_after_completion")
    if "P6" in results:
        out["P6_recovery_s"] = results["P6"]["recovery_s"]
        out["P6_state_restored"] = results["P6"]["state_restored"]
    return out


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _check_broker() -> float | None:
    """Measure the idle broker's CPU before the run; warn when it is high."""
    idle = broker_idle_pct()
    if idle is not None:
        log(f"broker CPU while idle, before the run: {idle:.0f}% of a core")
        if idle > BROKER_IDLE_WARN_PCT:
            log(
                f"warning: the idle broker uses more than {BROKER_IDLE_WARN_PCT}% of a core (it "
                "holds many partitions, e.g. the topics `make test` leaves behind): that CPU is "
                "taken from the worker under test; `make services-down services` restarts it "
                "empty, for figures comparable with earlier runs"
            )
    return idle


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915  # the run, top to bottom
    args = parse(argv)
    os.chdir(ROOT)  # children and the SDK find .tether/ (development keys) where the worker does
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_prefix = f"bench-{stamp}-{secrets.token_hex(2)}-"
    logs = args.out / f"logs-{stamp}"
    logs.mkdir()
    # Explicit handlers: a job started in the background of a script inherits SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    children = Children()
    ctx = Context(
        args.bootstrap,
        args.redis_url,
        run_prefix,
        args.partitions,
        children,
        logs,
        args.producers,
        args.observer,
        args.load_linger_ms,
    )
    results: dict[str, Any] = {
        "run": {
            "started": datetime.now(UTC).isoformat(),
            "host": socket.gethostname(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "git": _git(),
            "quick": args.quick,
            "phases": args.only,
            "topic_prefix": run_prefix,
            "bootstrap": args.bootstrap,
            "partitions": args.partitions,
            "loadavg_before": loadavg(),
            "logs": str(logs),
            "tether_env": sorted(k for k in os.environ if k.startswith("TETHER_")),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        }
    }
    errors: list[str] = []
    log(
        f"tether benchmark harness: phases {','.join(args.only)}{' (quick)' if args.quick else ''}; "
        f"{os.cpu_count()} CPUs, load average {loadavg()}; topics {run_prefix}*; logs {logs}"
    )
    results["run"]["broker_idle_cpu_pct"] = _check_broker()
    if loadavg() > (os.cpu_count() or 1) * 0.75:
        log(
            "warning: the machine is already busy (load average above 3/4 of the CPUs): expect "
            "noisy figures; each step's CPU columns in the JSON tell how starved it was"
        )
    interrupted = False
    try:
        if "P1" in args.only:
            results["P1"] = _phase(
                results,
                errors,
                "P1 core replay",
                core_replay.run,
                args.p1_events,
                args.seed,
                args.out / "fleet-1m.jsonl",
            )
        if "P4" in args.only:
            results["P4"] = _phase(
                results,
                errors,
                "P4 Watcher.is_revoked",
                watcher_lookup.run,
                args.p4_live,
                args.p4_calls,
                echo=log,
            )
        if {"P2", "P3", "P5", "P6"} & set(args.only):
            _check_services(args)
        if {"P2", "P3"} & set(args.only):
            run_pipelines(args, ctx, results, errors, stamp)
        if {"P5", "P6"} & set(args.only):
            got = _phase(
                results,
                errors,
                "P5/P6 worker state",
                run_state,
                ctx,
                args.sessions,
                p5="P5" in args.only,
                p6="P6" in args.only,
                core_n=args.core_sessions,
            )
            got = got or {}
            for problem in got.pop("errors", []):
                errors.append(problem)
                results.setdefault("errors", []).append(problem)
            results.update(got)
    except KeyboardInterrupt:
        interrupted = True
        log("\ninterrupted: stopping children, cleaning up, writing what was measured")
    except Exception as exc:  # e.g. services down: report, clean up, exit 1
        errors.append(repr(exc))
        log(f"\nerror: {exc}")
    finally:
        children.stop_all()
        if not args.keep_topics and {"P2", "P3", "P5", "P6"} & set(args.only):
            try:
                deleted = delete_run(args.bootstrap, run_prefix)
                log(f"deleted {len(deleted)} topics {run_prefix}*")
            except Exception as exc:  # the broker may be what failed
                log(f"could not delete topics {run_prefix}*: {exc}")
    results = {k: v for k, v in results.items() if v is not None}
    results["run"].update(
        {
            "finished": datetime.now(UTC).isoformat(),
            "loadavg_after": loadavg(),
            "interrupted": interrupted,
            "errors": errors,
        }
    )
    results["summary"] = summarize(results)
    path = bench_report.write_json(results, args.out, stamp)
    png = bench_report.plot(results, args.out, stamp) if ({"P2", "P3"} & set(args.only)) else None
    print(bench_report.table(bench_report.rows(results)))
    print(json.dumps(results["summary"]))
    print(f"full results: {path}" + (f"\nplot: {png}" if png else ""))
    print(
        f"machine: {os.cpu_count()} CPUs, load average {results['run']['loadavg_before']} before, "
        f"{results['run']['loadavg_after']} after; idle broker before the run "
        f"{results['run']['broker_idle_cpu_pct']}% of a core"
        + (f"\n{bench_report.QUICK_NOTE}" if args.quick else "")
    )
    return 1 if errors or interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
