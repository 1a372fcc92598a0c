"""Spans decoded and mapped per second by one `tether ingest otlp` process (one core).

Run: `python benchmarks/otel_ingest.py [--traces 20000] [--batch 512]`.

Spans are made by the real OpenTelemetry SDK (tests/otel_spans.py's shapes: a root
``invoke_agent`` span with a grant and credential, three tool spans, a second agent invoked by
the first with an ``execute_tool`` span (an MCP span under it, merged into one call) and an
OpenInference TOOL span: 8 spans and 8 tether events per trace), exported in batches of ``--batch`` spans (the SDK's
BatchSpanProcessor default is 512) and serialised once as the Collector's Kafka exporter would,
in otlp_proto and otlp_json, with and without partition_traces_by_id. The timed loop is the
adapter's own per-record work without the broker: decode, join per trace, map, validate each
event and encode it to the bytes it would produce. Target: at least P2's 10,000 events/s, so the
adapter is never the pipeline's bottleneck.

It also prints the processing latency one record adds (p50/p99 per record). The larger part of
the added detection latency is structural and not measured here: OpenTelemetry exports a span
when it ends, so a tool call is mapped once its trace's root span has arrived (or trace_idle_s
after its last span), see docs/otel.md.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from opentelemetry.sdk.trace import ReadableSpan

from otel_spans import SEC, Collect, Otel, cred_attrs, grant_attrs, records, span
from tether.models.codec import encode
from tether.otel.adapter import tune_gc
from tether.otel.config import MappingConfig
from tether.otel.decode import decode
from tether.otel.join import TraceJoiner

ORG = "spiffe://acme.example/agent/"


def make_spans(traces: int) -> list[ReadableSpan]:
    sink = Collect()
    otel = Otel(sink)
    planner = otel.tracer("planner", **{"tether.agent.id": ORG + "planner"})
    worker = otel.tracer("worker", **{"tether.agent.id": ORG + "worker"})
    t0 = time.time_ns() - 3600 * SEC
    for n in range(traces):
        t = t0 + n * SEC // 100
        ts = t / SEC
        root = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.id": ORG + "planner",
            **grant_attrs(["crm:read"], ["crm.search", "docs.fetch", "mail.send"], ts),
            **cred_attrs("planner", f"jti-p-{n}", ["crm:read"], ts),
        }
        tool = {"gen_ai.operation.name": "execute_tool", "server.address": "crm.internal"}
        with span(planner, "invoke_agent planner", t, t + 9 * SEC, root):
            for k, name in enumerate(("crm.search", "docs.fetch", "crm.search")):
                with span(
                    planner,
                    f"execute_tool {name}",
                    t + k * SEC,
                    t + k * SEC + 1,
                    {**tool, "gen_ai.tool.name": name},
                ):
                    pass
            sub = {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.id": ORG + "worker",
                **cred_attrs("worker", f"jti-w-{n}", ["crm:read"], ts),
            }
            with span(worker, "invoke_agent worker", t + 4 * SEC, t + 8 * SEC, sub):
                with (
                    span(
                        worker,
                        "execute_tool crm.search",
                        t + 5 * SEC,
                        t + 6 * SEC,
                        {**tool, "gen_ai.tool.name": "crm.search"},
                    ),
                    span(
                        worker,
                        "tools/call crm.search",
                        t + 5 * SEC + 1,
                        t + 6 * SEC - 1,
                        {
                            "mcp.method.name": "tools/call",
                            "gen_ai.tool.name": "crm.search",
                            "mcp.resource.uri": "crm://a/1",
                        },
                    ),
                ):
                    pass
                with span(
                    worker,
                    "mail.send",
                    t + 7 * SEC,
                    t + 7 * SEC + 1,
                    {"openinference.span.kind": "TOOL", "tool.name": "mail.send"},
                ):
                    pass
    return sink.spans


def run(recs: list[bytes]) -> tuple[int, int, float, list[float]]:
    joiner = TraceJoiner(MappingConfig())
    spans = events = 0
    per_record: list[float] = []
    gc.collect()
    start = time.perf_counter()
    for n, value in enumerate(recs):
        r0 = time.perf_counter()
        decoded = decode(value)
        spans += len(decoded.spans)
        joiner.add(decoded.spans, n, 0.0)
        for item in joiner.release(0.0):
            for event in item.mapped.events:
                encode(event)
                events += 1
            for cov in item.mapped.coverage:
                encode(cov)
        per_record.append(time.perf_counter() - r0)
    for item in joiner.drain(0.0):
        events += len(item.mapped.events)
    return spans, events, time.perf_counter() - start, per_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traces", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=512, help="spans per exported batch")
    args = parser.parse_args()
    tune_gc()  # as `tether ingest otlp` does
    t = time.perf_counter()
    spans = make_spans(args.traces)
    print(
        f"{len(spans):,} spans of {args.traces:,} traces made by the OTel SDK in {time.perf_counter() - t:.1f} s"
    )
    for encoding in ("otlp_proto", "otlp_json"):
        for per_trace in (False, True):
            recs = [
                v
                for _, v in records(spans, encoding=encoding, per_trace=per_trace, batch=args.batch)
            ]
            run(recs[: max(1, len(recs) // 20)])  # warm-up
            n_spans, n_events, elapsed, per_record = run(recs)
            shape = "per trace" if per_trace else "per batch"
            q = statistics.quantiles(per_record, n=100) if len(per_record) > 1 else [0.0] * 99
            print(
                f"{encoding:10s} {shape:9s} {len(recs):7,} records  {n_spans / elapsed:9,.0f} spans/s  "
                f"{n_events / elapsed:9,.0f} events/s  per record p50 {q[49] * 1e3:6.2f} ms  p99 {q[98] * 1e3:6.2f} ms"
            )


if __name__ == "__main__":
    main()
