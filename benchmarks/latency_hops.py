"""Where a detection's latency goes: P3's probe latency split at the broker, hop by hop.

Run: `python benchmarks/latency_hops.py [--rates 200,1000,2500] [--seconds 20]` (needs
`make services`, or TETHER_KAFKA_BOOTSTRAP and TETHER_REDIS_URL). It starts P2's pipeline (a
`tether worker` on fresh topics, the gateway's `Watcher`, a load generator), switches the
intents and revocations topics to broker time (`message.timestamp.type=LogAppendTime`), and
follows both topics. For every probe it splits the latency P3 measures into

    emitter   the load generator producing the intent -> the broker appending it
    worker    the intent appended -> the worker's signed revocation appended
    gateway   the revocation appended -> the gateway's Watcher holding it

and prints p50/p90/p99 of each hop per offered rate (JSON under benchmarks/out/). The broker's
clock and the harness's are the same machine's. Settings pass through from the environment,
like `TETHER_FETCH_WAIT_MS=1 python benchmarks/latency_hops.py`. The topics are deleted
afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench_kafka import PROBE_PREFIX, _consumer, admin_client, decode_revocation, delete_run
from bench_sweep import (
    Corpus,
    latency_summary,
    open_pipeline,
    percentile,
    run_step,
    standalone_context,
)
from confluent_kafka import OFFSET_END, Message, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

OUT = Path(__file__).resolve().parent / "out"
HOPS = ("emitter", "worker", "gateway", "total")
_PROBE = PROBE_PREFIX.encode()


def broker_time(bootstrap: str, topics: list[str]) -> None:
    """Have the broker stamp every record of ``topics`` with its append time."""
    admin = admin_client(bootstrap)
    entry = ConfigEntry(
        "message.timestamp.type", "LogAppendTime", incremental_operation=AlterConfigOpType.SET
    )
    resources = [
        ConfigResource(ConfigResource.Type.TOPIC, t, incremental_configs=[entry]) for t in topics
    ]
    for done in admin.incremental_alter_configs(resources).values():
        done.result()


def probe_of_intent(value: bytes) -> str | None:
    """The probe token a violating probe intent presents (None for any other record)."""
    i = value.find(_PROBE)
    if i < 0 or b"tool_call.intent" not in value:
        return None
    return value[i : value.find(b'"', i)].decode()


def probe_of_revocation(value: bytes) -> str | None:
    """The probe token a revocation targets (None for any other record)."""
    target = decode_revocation(value)
    if target is None or target[0] != "token" or not target[1].startswith(PROBE_PREFIX):
        return None
    return target[1]


class AppendTimes:
    """Follows a topic from its end and keeps the broker's append time of each probe's record."""

    def __init__(self, bootstrap: str, topic: str, probe_of: Any) -> None:
        self.times: dict[str, float] = {}
        self._probe_of = probe_of
        self._stop = threading.Event()
        self._consumer = _consumer(bootstrap)
        meta = self._consumer.list_topics(topic, timeout=10).topics[topic]
        self._consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in meta.partitions])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(500, 0.1):
                self._note(msg)
        self._consumer.close()

    def _note(self, msg: Message) -> None:
        value = msg.value()
        if msg.error() or not value:
            return
        token = self._probe_of(value)
        if token is not None:
            self.times.setdefault(token, msg.timestamp()[1] / 1000)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def hops(
    sent: dict[str, float],
    seen: dict[str, float],
    intents: dict[str, float],
    revocations: dict[str, float],
) -> dict[str, Any]:
    """Per hop, the latency summary (ms) of the probes every timestamp was taken for."""
    rows: dict[str, list[float]] = {hop: [] for hop in HOPS}
    for token, at in sent.items():
        if token in seen and token in intents and token in revocations:
            appended, revoked = intents[token], revocations[token]
            rows["emitter"].append((appended - at) * 1000)
            rows["worker"].append((revoked - appended) * 1000)
            rows["gateway"].append((seen[token] - revoked) * 1000)
            rows["total"].append((seen[token] - at) * 1000)
    return {
        hop: {**latency_summary(values), "p90_ms": round(percentile(values, 90), 2)}
        for hop, values in rows.items()
        if values
    }


def main() -> None:
    """Parse the arguments, measure each rate, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rates", default="200,1000,2500", help="offered intents/s, one step each (comma list)"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each step")
    parser.add_argument("--probe-rate", type=float, default=20.0, help="probes/s in each step")
    parser.add_argument("--partitions", type=int, default=6, help="partitions per topic")
    parser.add_argument("--seed", type=int, default=7, help="fleet seed of the load")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]

    stamp = time.strftime("%Y%m%d-%H%M%S")
    ctx = standalone_context("hops", stamp, args.partitions, OUT)
    bootstrap = ctx.bootstrap
    corpus = Corpus(OUT / f"hops-stream-{stamp}.jsonl", args.seed)
    pipe = open_pipeline(ctx, "worker")
    results: list[dict[str, Any]] = []
    try:
        intents_topic, revocations_topic = pipe.prefix + "intents", pipe.prefix + "revocations"
        broker_time(bootstrap, [intents_topic, revocations_topic])
        intents = AppendTimes(bootstrap, intents_topic, probe_of_intent)
        revocations = AppendTimes(bootstrap, revocations_topic, probe_of_revocation)
        try:
            run_step(pipe, corpus, 500, 5, probe_rate=5, tag="warm", record=False)
            for rate in rates:
                pipe.clock.sent.clear()
                pipe.clock.seen.clear()
                step = run_step(
                    pipe, corpus, rate, args.seconds, probe_rate=args.probe_rate, tag=f"h{rate:.0f}"
                )
                time.sleep(1)  # the followers' last records
                split = hops(pipe.clock.sent, pipe.clock.seen, intents.times, revocations.times)
                results.append(
                    {
                        "offered_per_s": rate,
                        "processed_per_s": step["processed_per_s"],
                        "sustainable": step["sustainable"],
                        "machine_busy_pct": step["machine_busy_pct"],
                        "hops_ms": split,
                    }
                )
        finally:
            intents.stop()
            revocations.stop()
    finally:
        pipe.close(ctx.children)
        corpus.path.unlink(missing_ok=True)
        delete_run(bootstrap, ctx.run_prefix)

    out = OUT / f"hops-{stamp}.json"
    out.write_text(json.dumps({"prefix": ctx.run_prefix, "steps": results}, indent=1))
    print(f"\n{'offered/s':>9}  {'hop':8} {'n':>4} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    for r in results:
        for hop, s in r["hops_ms"].items():
            print(
                f"{r['offered_per_s']:9.0f}  {hop:8} {s['n']:4d} {s['p50_ms']:8.1f} "
                f"{s['p90_ms']:8.1f} {s['p99_ms']:8.1f}"
            )
    print(f"results: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
