"""P5 (memory per session, no accumulation) and P6 (recovery after kill -9), on one worker's state.

One worker is loaded with N mid-flight sessions (bench_events.StateSessions: started, a
delegation, two calls, two tokens each), then:

* P5: its RSS grows by (RSS at N + warm-up - RSS at warm-up) / N bytes per session; the
  changelog of its sessions table says how many sessions it holds. The same sessions are also
  folded in-process under tracemalloc (the core's state without faust, Kafka buffers or
  allocator slack). Completing every workflow and moving event time past the retention must
  bring the session count back to the baseline.
* P6: the worker is killed with SIGKILL; check calls for sessions from before the kill are
  produced; a new worker process with the same worker id (the same static consumer-group
  member, as a supervisor restarts it) starts at once. Recovery time = kill -> the first check's decision on
  the decisions topic; the decisions must be `deny` / `tool_not_granted`, which the worker can
  decide on arrival only with the session restored.
"""

from __future__ import annotations

import gc
import os
import sys
import time
import tracemalloc
from collections.abc import Iterable
from typing import Any

import orjson
from bench_events import StateSessions, clock_ticks
from bench_kafka import (
    Follower,
    GroupProgress,
    create_topics,
    live_keys,
    topics_like,
    wait_heartbeat,
)
from bench_procs import rss_bytes, worker_env
from bench_sweep import Context, log

from tether.bootstrap import monitor
from tether.models.codec import Rejected, decode_event
from tether.sdk.emitter import Emitter
from tether.settings import Settings

WARM_SESSIONS = 1000
_MALLOC_TRIM_S = 10.0  # the worker's default TETHER_MALLOC_TRIM_S
CHECKS = 5
_GRACE_S = 5.0


class StateWorker:
    """A worker process on the state topics, restartable under the same consumer group."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.prefix = f"{ctx.run_prefix}state-"
        self.group = f"{self.prefix}monitor"
        create_topics(ctx.bootstrap, self.prefix, ctx.partitions)
        self.emitter = Emitter(
            Settings(kafka_bootstrap=ctx.bootstrap),
            f"{self.prefix}intents",
            client_id="tether-bench-state",
        )
        self.intents = GroupProgress(
            ctx.bootstrap, self.group, [f"{self.prefix}intents"], ctx.partitions
        )
        self.uses = GroupProgress(
            ctx.bootstrap, self.group, [f"{self.prefix}credential-uses"], ctx.partitions
        )
        self.notes: list[str] = []
        self.name = ""
        self.pid = 0

    def start(self, name: str) -> float:
        env = worker_env(
            self.ctx.bootstrap,
            self.ctx.redis_url,
            self.prefix,
            self.group,
            name,
            self.ctx.partitions,
        )
        argv = [sys.executable, "-m", "tether.cli", "worker", "--loglevel", "warning"]
        proc = self.ctx.children.spawn(name, argv, env, self.ctx.logs / f"{name}.log")
        self.name, self.pid = name, proc.pid
        return time.time()

    def wait_up(self, timeout: float = 120.0) -> float:
        proc = self.ctx.children.procs[self.name]
        return wait_heartbeat(
            self.ctx.bootstrap,
            f"{self.prefix}revocations",
            self.name,
            timeout,
            lambda: proc.poll() is None,
        )

    def send(self, records: Iterable[tuple[bytes, bytes]], what: str) -> None:
        began = time.monotonic()
        count = 0
        for key, value in records:
            self.emitter.emit_raw(value, key)
            count += 1
            if count % 100_000 == 0:
                log(f"    {what}: {count:,} produced")
        self.emitter.flush(120)
        log(f"    {what}: {count:,} events produced in {time.monotonic() - began:.1f}s")

    def settle(self, what: str, uses_timeout: float = 120.0) -> float:
        """Wait until every input produced is processed, then (up to ``uses_timeout``) for the
        credential uses, which settle a grace period of event time later (moved on by the
        worker's backstop). Uses that do not drain in time are noted, not fatal: they only
        affect the token table's count."""
        began = time.monotonic()
        alive = lambda: self.ctx.children.procs[self.name].poll() is None  # noqa: E731
        if self.intents.wait_caught_up(900, alive) is None:
            raise TimeoutError(f"{what}: the worker did not catch up within 15 minutes")
        time.sleep(_GRACE_S + 2)  # the backstop moves event time on; the last uses settle
        self.intents.wait_caught_up(900, alive)
        if self.uses.wait_caught_up(uses_timeout, alive) is None:
            end, committed = self.uses.sample()
            note = f"{what}: {end - committed:,} credential uses still unprocessed after {uses_timeout:.0f}s"
            self.notes.append(note)
            log(f"    note: {note}")
        took = time.monotonic() - began
        log(f"    {what}: processed ({took:.0f}s)")
        return took

    def table_sizes(self) -> dict[str, int]:
        """Keys held in each table, and their serialized bytes, from the changelogs."""
        out = {}
        for table in ("sessions", "tokens"):
            (topic,) = topics_like(self.ctx.bootstrap, self.group, f"-{table}-changelog")
            out[table], out[f"{table}_bytes"] = live_keys(self.ctx.bootstrap, topic)
        return out

    def close(self) -> None:
        self.emitter.close(30)
        self.intents.close()
        self.uses.close()
        if self.name:
            self.ctx.children.stop(self.name)


def _rss_after(pid: int, settle_s: float = 3.0) -> int:
    """The worker's RSS once it has been idle for ``settle_s`` plus one heap-trim interval (it
    returns freed memory to the OS every ``TETHER_MALLOC_TRIM_S``, as it would in production)."""
    time.sleep(settle_s + float(os.environ.get("TETHER_MALLOC_TRIM_S", _MALLOC_TRIM_S)))
    return rss_bytes(pid)


def recover(sw: StateWorker, sessions: StateSessions) -> dict[str, Any]:
    """P6: kill -9, produce checks for old sessions, start a new worker, time the first answer."""
    decisions = Follower(sw.ctx.bootstrap, f"{sw.prefix}decisions")
    beats = Follower(sw.ctx.bootstrap, f"{sw.prefix}revocations")
    picks = sorted({0, sessions.n // 4, sessions.n // 2, 3 * sessions.n // 4, sessions.n - 1})
    checks = [sessions.check(i) for i in picks]
    killed_at = sw.ctx.children.kill9(sw.name)
    log(f"  P6: kill -9 {sw.name} (pid {sw.pid}) holding {sessions.n:,} sessions")
    for key, value, _ in checks:
        sw.emitter.emit_raw(value, key)
    sw.emitter.flush(30)
    # A supervisor restarts the same worker: same TETHER_WORKER_ID, so the same static
    # consumer-group member, which gets its partitions back without a rebalance timeout.
    spawned_at = sw.start(sw.name)
    wanted = {event_id for _, _, event_id in checks}
    beat_key = f"heartbeat:{sw.name}".encode()
    answers: dict[str, tuple[float, dict]] = {}
    first_beat = None
    deadline = time.monotonic() + 180
    while len(answers) < len(wanted) and time.monotonic() < deadline:
        for at, _, value in decisions.poll(0.1):
            doc = orjson.loads(value)
            if doc.get("event_id") in wanted:
                answers.setdefault(doc["event_id"], (at, doc))
        for at, key, _ in beats.poll(0):
            if first_beat is None and key == beat_key and at > spawned_at + 0.5:
                first_beat = at  # the killed process cannot send: this is the new one
    decisions.close()
    beats.close()
    restored = sum(
        1
        for _, doc in answers.values()
        if doc["decision"] == "deny" and doc["findings"] == ["tool_not_granted"]
    )
    first = min((at for at, _ in answers.values()), default=None)
    result = {
        "sessions": sessions.n,
        "recovery_s": None if first is None else round(first - killed_at, 2),
        "restart_after_kill_s": round(spawned_at - killed_at, 2),
        "first_heartbeat_s": None if first_beat is None else round(first_beat - killed_at, 2),
        "all_checks_answered_s": round(max(at for at, _ in answers.values()) - killed_at, 2)
        if answers
        else None,
        "checks": len(wanted),
        "checks_answered": len(answers),
        "checks_restored": restored,
        "state_restored": restored == len(wanted),
        "method": "SIGKILL the worker holding the sessions, produce check calls for sessions from "
        "before the kill, start a new worker process with the same TETHER_WORKER_ID at once (as "
        "a supervisor would); time = kill to the first check's decision on the decisions topic; "
        "restored = every check decided on arrival as deny/tool_not_granted",
    }
    log(
        f"  P6: processing again {result['recovery_s']}s after the kill; state restored for {restored}/{len(wanted)} checked sessions"
    )
    return result


def core_bytes_per_session(n: int) -> dict[str, Any]:
    """The same sessions folded by the core in this process, measured with tracemalloc."""
    now = time.time()
    sessions = StateSessions("core", n, now - 7200)
    mon = monitor(Settings(), decisions=True)

    def feed(records: list[tuple[bytes, bytes]]) -> None:
        for _, value in records:
            event = decode_event(value)
            if not isinstance(event, Rejected):
                mon.process(event)

    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        feed(sessions.active(i))
    # a grace period of event time: every credential use settles and reaches the token index,
    # as in the worker (which holds every token of the loaded sessions)
    mon.advance(mon.watermark + 2 * _GRACE_S)
    gc.collect()
    active = tracemalloc.get_traced_memory()[0]
    live = len(mon.sessions), len(mon.tokens)
    feed([sessions.completed(i) for i in range(n)])
    feed(clock_ticks("core-tick", now - 600))
    mon.advance(now - 600 + 2 * _GRACE_S)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {
        "sessions": n,
        "bytes_per_session": round((active - base) / n),
        "live_sessions": live[0],
        "live_tokens": live[1],
        "after_completion_sessions": len(mon.sessions),
        "after_completion_tokens": len(mon.tokens),
        "after_completion_bytes_over_baseline": after - base,
        "method": "tether.core Monitor in the harness process, event time moved a grace period "
        "on so that every credential use reached the token index; tracemalloc current traced "
        "bytes (after gc) with N sessions and their tokens minus before, / N",
    }


def _completion(sw: StateWorker, sessions: list[StateSessions], now: float) -> dict[str, Any]:
    """Complete every workflow, move event time past the retention, count what is left."""
    tick_t = now - 600
    ticks = clock_ticks("tick", tick_t)
    sw.send((s.completed(i) for s in sessions for i in range(s.n)), "completions")
    sw.send(ticks, "clock ticks (event time past the retention)")
    sw.settle("completions")
    sizes = sw.table_sizes()
    log(
        f"  P5: after completion + retention the worker holds {sizes['sessions']:,} sessions and "
        f"{sizes['tokens']:,} tokens (the {len(ticks)} clock-tick workflows remain)"
    )
    return {
        "table_sessions_after_completion": sizes["sessions"],
        "table_tokens_after_completion": sizes["tokens"],
        "expected_after_completion": len(ticks),
        "rss_after_completion_mib": round(_rss_after(sw.pid) / 2**20, 1),
        "no_accumulation": sizes["sessions"] <= len(ticks) + CHECKS,
    }


def _loaded(sw: StateWorker, warm: StateSessions, main: StateSessions) -> dict[str, Any]:
    """Warm up, measure RSS, load the sessions, measure again: the P5 figure."""
    sw.send((r for i in range(warm.n) for r in warm.active(i)), "warm-up sessions")
    sw.settle("warm-up")
    rss0 = _rss_after(sw.pid)
    n = main.n
    sw.send((r for i in range(n) for r in main.active(i)), f"{n:,} sessions")
    sw.settle(f"{n:,} sessions")
    rss1 = _rss_after(sw.pid)
    sizes = sw.table_sizes()
    log(
        f"  P5: RSS {rss0 / 2**20:.0f} -> {rss1 / 2**20:.0f} MiB with {sizes['sessions']:,} "
        f"sessions: {(rss1 - rss0) / n:,.0f} bytes/session"
    )
    return {
        "sessions": n,
        "rss_baseline_mib": round(rss0 / 2**20, 1),
        "rss_loaded_mib": round(rss1 / 2**20, 1),
        "bytes_per_session": round((rss1 - rss0) / n),
        "table_sessions_loaded": sizes["sessions"],
        "table_tokens_loaded": sizes["tokens"],
        "serialized_bytes_per_session": round(
            (sizes["sessions_bytes"] + sizes["tokens_bytes"]) / max(sizes["sessions"], 1)
        ),
        "method": f"RSS of the tether worker process (/proc) after {n:,} more mid-flight "
        f"sessions (4 events, 2 tokens each) than a {warm.n:,}-session warm-up, / {n:,}; "
        "includes faust's table, the token index, allocator slack and client buffers",
    }


def run_state(ctx: Context, n: int, *, p5: bool, p6: bool, core_n: int) -> dict[str, Any]:
    """The state phase: P5 and/or P6 on one worker (see the module docstring). Figures are
    kept as soon as they are measured; a later step that fails is reported under "errors"."""
    now = time.time()
    warm = StateSessions("warm", WARM_SESSIONS, now - 7200)
    main = StateSessions("main", n, now - 7200)
    sw = StateWorker(ctx)
    out: dict[str, Any] = {"errors": []}
    try:
        sw.start("state-w1")
        log(f"  state worker up in {sw.wait_up():.1f}s")
        p5_result = _loaded(sw, warm, main)
        if p5:
            out["P5"] = p5_result
        if p6:
            out["P6"] = recover(sw, main)
            sw.settle("recovered worker")
            rss_rec = _rss_after(sw.pid)
            p5_result["rss_after_recovery_mib"] = round(rss_rec / 2**20, 1)
            # The restarted worker holds the same sessions, recovered from the changelog, without
            # the transients of having processed them (buffers, allocator slack): a lower bound.
            base = p5_result["rss_baseline_mib"] * 2**20
            p5_result["bytes_per_session_after_recovery"] = round((rss_rec - base) / n)
        if p5:
            try:
                p5_result.update(_completion(sw, [main, warm], now))
            except Exception as exc:  # keep the figures measured so far
                out["errors"].append(f"P5 completion: {exc!r}")
                log(f"  P5 completion failed: {exc!r}")
            log(f"  P5: folding {core_n:,} sessions in-process under tracemalloc")
            p5_result["core"] = core_bytes_per_session(core_n)
    except Exception as exc:  # keep the figures measured so far
        out["errors"].append(f"P5/P6: {exc!r}")
        log(f"  P5/P6 failed: {exc!r}")
    finally:
        if sw.notes and "P5" in out:
            out["P5"]["notes"] = sw.notes
        sw.close()
    return out
