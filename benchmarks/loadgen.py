"""An open-loop load generator: replays a JSON Lines corpus through the SDK Emitter on a schedule.

The harness (benchmarks/harness.py) runs one or more of these as child processes, so that the
producer's CPU and GIL are never shared with the process that times revocations. Commands arrive
on stdin and answers leave on stdout, one JSON object per line:

    {"cmd": "step", "path": P, "offset": B, "lines": N, "rate": R, "t0": T,
     "probe_rate": r, "probe_tag": "s1"}
        Send lines [B.., N of them) of file P, line j at wall time T + j / R, never waiting for
        anything but the clock (open loop: when the Emitter cannot keep up the schedule, the
        lines are sent late and the achieved rate says so). Every 1/r s, a probe workflow (see
        bench_events.probe) dated at the stream's current event time goes out too.
        Answer: sent, achieved rate, worst lateness, probes [[token, sent_at]], end offset.
    {"cmd": "probe", "tag": "idle"}
        One probe now, dated at the last event time sent plus the wall time since (the event
        time the worker's backstop has reached). Answer: its token and sent_at.
    {"cmd": "quit"}

With `--index i --of n`, only lines whose workflow key hashes to i (mod n) are sent, but the
schedule stays the global one, so n producers together offer the rate R with per-workflow order
preserved. Only producer 0 sends probes.
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib

import orjson
from bench_events import event_time, probe, probe_token

from tether.sdk.emitter import EmitFailedError, Emitter
from tether.settings import Settings

_KEY = b'"workflow_id":"'
_PROBE_LIFETIME_S = 3600.0


def key_of(line: bytes) -> bytes | None:
    """The workflow id of a fleet line, found without parsing the JSON."""
    start = line.find(_KEY)
    if start < 0:
        return None
    start += len(_KEY)
    return line[start : line.find(b'"', start)]


class LoadGen:
    """One producer: an Emitter plus the schedule."""

    def __init__(
        self, emitter: Emitter, run: str, index: int, of: int, prober: Emitter | None = None
    ) -> None:
        self.emitter = emitter
        self.prober = prober or emitter
        self.run = run
        self.index, self.of = index, of
        self.last_line: bytes | None = None
        self.last_sent_at = 0.0
        self.probes = 0

    def _probe(self, tag: str, t: float) -> tuple[str, float]:
        self.probes += 1
        probe_id = f"{self.run}-{tag}-{self.probes}"
        key, started, call = probe(probe_id, t, time.time() + _PROBE_LIFETIME_S)
        self.prober.emit_raw(started, key)
        sent_at = time.time()
        self.prober.emit_raw(call, key)
        return probe_token(probe_id), sent_at

    def step(self, cmd: dict) -> dict:  # one hot loop, kept flat
        rate, total, t0 = float(cmd["rate"]), int(cmd["lines"]), float(cmd["t0"])
        probe_every = 1.0 / cmd["probe_rate"] if cmd.get("probe_rate") and self.index == 0 else 0.0
        tag = cmd.get("probe_tag", "p")
        emit = self.emitter.emit_raw
        mine, of = self.index, self.of
        probes: list[tuple[str, float]] = []
        sent, worst = 0, 0.0
        with open(cmd["path"], "rb") as f:
            f.seek(int(cmd["offset"]))
            readline = f.readline
            while (pause := t0 - time.time()) > 0:
                time.sleep(min(pause, 0.05))
            next_probe = t0 + probe_every / 2 if probe_every else float("inf")
            i = 0
            line = b""
            while i < total:
                now = time.time()
                due = min(total, int((now - t0) * rate) + 1)
                if due <= i:
                    time.sleep(min(0.001, t0 + i / rate - now))
                    continue
                worst = max(worst, now - (t0 + i / rate))
                while i < due:
                    line = readline()
                    i += 1
                    key = key_of(line)
                    if of > 1 and zlib.crc32(key or b"") % of != mine:
                        continue
                    emit(line[:-1] if line.endswith(b"\n") else line, key)
                    sent += 1
                self.last_line = line
                if now >= next_probe:
                    next_probe += probe_every
                    probes.append(self._probe(tag, event_time(line)))
            last = time.time()
            end = f.tell()
        self.last_sent_at = last
        flush_began = time.time()
        failed = 0
        for emitter in {self.emitter, self.prober}:
            try:
                emitter.flush(60)
            except EmitFailedError as exc:
                failed += exc.failed + exc.pending
        return {
            "ok": "step",
            "sent": sent,
            "lines": total,
            "t0": t0,
            "last": last,
            "achieved_rate": total / max(last - t0, 1e-9),
            "worst_late_s": worst,
            "flush_s": time.time() - flush_began,
            "failed": failed,
            "probes": probes,
            "end_offset": end,
        }

    def idle_probe(self, cmd: dict) -> dict:
        if self.last_line is None:
            t = time.time() - 86400
        else:
            t = event_time(self.last_line) + (time.time() - self.last_sent_at)
        token, sent_at = self._probe(cmd.get("tag", "idle"), t)
        return {"ok": "probe", "probes": [[token, sent_at]]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True, help="the intents topic to produce to")
    ap.add_argument("--run", required=True, help="names this run's probes")
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--of", type=int, default=1)
    ap.add_argument(
        "--linger-ms",
        type=float,
        default=1.0,
        help="the background load's batching (the probes always use the SDK default)",
    )
    args = ap.parse_args()
    settings = Settings(kafka_bootstrap=args.bootstrap)
    emitter = Emitter(
        settings,
        args.topic,
        client_id=f"tether-bench-loadgen-{args.index}",
        linger_ms=args.linger_ms,
    )
    emitter.start()
    # Probes (only producer 0 sends them) are timed: they go out as one agent's events would,
    # through an Emitter of their own with the SDK's defaults.
    prober = Emitter(settings, args.topic, client_id=f"tether-bench-probe-{args.index}")
    gen = LoadGen(emitter, args.run, args.index, args.of, prober)
    out = sys.stdout
    out.write('{"ok": "ready"}\n')
    out.flush()
    for raw in sys.stdin:
        cmd = orjson.loads(raw)
        if cmd["cmd"] == "quit":
            break
        reply = gen.step(cmd) if cmd["cmd"] == "step" else gen.idle_probe(cmd)
        out.write(orjson.dumps(reply).decode() + "\n")
        out.flush()
    emitter.close(30)
    prober.close(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
