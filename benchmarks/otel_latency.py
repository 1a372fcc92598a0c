"""The detection latency `tether ingest otlp` adds: OTel probes against native probes, end to end.

Run: `python benchmarks/otel_latency.py [--probes 100] [--rate 5]` (needs `make services`, or
TETHER_KAFKA_BOOTSTRAP). It starts a `tether worker` and a `tether ingest otlp` on fresh topics
and sends probe workflows alternately as native events (to `intents`) and as one OTLP record of
the trace's spans (made by the OpenTelemetry SDK, to the OTLP topic, as the Collector's Kafka
exporter with partition_traces_by_id writes it). A probe's initiator calls a tool outside its
grant: `tool_not_granted` is decided on arrival. Latency: producing the probe → its finding on
`findings`. The difference between the two is what the adapter's hop adds (a second broker
round trip, decoding, the join, mapping).

Not measured, because it is structural: OpenTelemetry exports a span when it ends, so in
production a tool call reaches Kafka only with its trace's root span (the end of the agent's
run), or trace_idle_s after the trace's last span (docs/otel.md, "Latency"). The run's topics
are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from otel_spans import SEC, Collect, Otel, cred_attrs, grant_attrs, otlp_proto, span
from tether.adapters.kafka_admin import create_topics
from tether.adapters.kafka_config import admin_config, consumer_config, producer_config
from tether.settings import Settings
from tether.topics import TopicSpec, topic_specs

ORG = "spiffe://acme.example/agent/"


def native_probe(n: int, now: float) -> tuple[str, list[bytes]]:
    wf = f"probe-native-{n}"
    cred = {
        "token_id": f"jti-native-{n}-{uuid.uuid4().hex[:6]}",
        "issuer": "https://sts.acme.example",
        "subject": ORG + "probe",
        "scopes": ["crm:read"],
        "issued_at": _iso(now - 30),
        "expires_at": _iso(now + 600),
    }
    base = {"schema_version": 1, "workflow_id": wf, "agent": {"workload_id": ORG + "probe"}}
    started = {
        **base,
        "event_type": "workflow.started",
        "event_id": f"{wf}-s",
        "occurred_at": _iso(now),
        "credential": cred,
        "grant": {
            "task_type": "probe",
            "purpose": "",
            "scopes": ["crm:read"],
            "tools": ["crm.search"],
            "max_sensitivity": "confidential",
            "destinations": [],
            "not_after": _iso(now + 3600),
            "autonomy": "low",
        },
    }
    call = {
        **base,
        "event_type": "tool_call.intent",
        "event_id": f"{wf}-c",
        "occurred_at": _iso(now + 0.001),
        "credential": cred,
        "action": {
            "tool": "shell.exec",
            "operation": "execute",
            "resource": "",
            "destination": "",
            "data_sensitivity": "internal",
        },
    }
    return wf, [orjson.dumps(started), orjson.dumps(call)]


def otel_probe(otel: Otel, n: int, now: float) -> tuple[str, bytes]:
    sink = Collect()
    otel.sink = sink
    tracer = otel.tracer("probe", **{"tether.agent.id": ORG + "probe"})
    t0 = int(now * SEC)
    root = {
        "gen_ai.operation.name": "invoke_agent",
        **grant_attrs(["crm:read"], ["crm.search"], now),
        **cred_attrs("probe", f"jti-otel-{n}-{uuid.uuid4().hex[:6]}", ["crm:read"], now),
    }
    with span(tracer, "invoke_agent probe", t0, t0 + 2_000_000, root) as r:
        trace = format(r.get_span_context().trace_id, "032x")
        tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "shell.exec"}
        with span(tracer, "execute_tool shell.exec", t0 + 1_000, t0 + 1_000_000, tool):
            pass
    return trace, otlp_proto(sink.spans)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def main() -> None:  # noqa: PLR0915  # one linear script
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--probes", type=int, default=100, help="probes of each kind")
    parser.add_argument("--rate", type=float, default=5.0, help="probes per second")
    args = parser.parse_args()
    prefix = f"bench-otel-{uuid.uuid4().hex[:8]}."
    env = {
        **os.environ,
        "TETHER_TOPIC_PREFIX": prefix,
        "TETHER_APP_ID": f"{prefix}monitor",
        "TETHER_PARTITIONS": "4",
    }
    settings = Settings(topic_prefix=prefix, partitions=4)
    otlp_topic = f"{prefix}otlp_spans"
    specs = topic_specs(prefix, 4)
    create_topics(settings, [*specs, TopicSpec(otlp_topic, "trace id", 4)])  # coverage among specs
    logdir = Path(tempfile.mkdtemp(prefix="otel-latency-"))
    procs = [
        subprocess.Popen(  # noqa: S603  # our own CLI, fixed arguments
            [sys.executable, "-m", "tether.cli", *cmd],
            env=env,
            stdout=open(logdir / f"{name}.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        for name, cmd in (
            ("worker", ["worker"]),
            ("ingest", ["ingest", "otlp", "--topic", otlp_topic, "--no-create-topics"]),
        )
    ]
    producer = Producer(producer_config(settings, client_id="bench-otel-latency"))
    consumer = Consumer(consumer_config(settings, group_id=f"{prefix}bench", client_id="bench"))
    consumer.subscribe([settings.topic("findings")])
    otel = Otel(Collect())
    sent: dict[str, tuple[str, float]] = {}
    got: dict[str, list[float]] = {"native": [], "otel": []}

    def drain(until: float) -> None:
        while time.monotonic() < until:
            msg = consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            wf = orjson.loads(msg.value())["workflow_id"]
            if wf in sent:
                kind, t = sent.pop(wf)
                got[kind].append(time.monotonic() - t)

    try:
        print(f"warming up (worker and adapter starting; logs in {logdir}) ...")
        deadline = time.monotonic() + 120
        warm = 0
        while time.monotonic() < deadline and not (got["native"] and got["otel"]):
            now = time.time()
            wf, lines = native_probe(10_000 + warm, now)
            for line in lines:
                producer.produce(settings.topic("intents"), value=line, key=wf.encode())
            sent[wf] = ("native", time.monotonic())
            trace, record = otel_probe(otel, 10_000 + warm, now)
            producer.produce(otlp_topic, value=record, key=trace.encode())
            sent[trace] = ("otel", time.monotonic())
            producer.flush(10)
            warm += 1
            drain(time.monotonic() + 2.0)
        got = {"native": [], "otel": []}
        sent.clear()
        for n in range(args.probes):
            now = time.time()
            wf, lines = native_probe(n, now)
            start = time.monotonic()
            for line in lines:
                producer.produce(settings.topic("intents"), value=line, key=wf.encode())
            producer.flush(10)
            sent[wf] = ("native", start)
            trace, record = otel_probe(otel, n, now)
            start = time.monotonic()
            producer.produce(otlp_topic, value=record, key=trace.encode())
            producer.flush(10)
            sent[trace] = ("otel", start)
            drain(time.monotonic() + 1.0 / args.rate)
        drain(time.monotonic() + 10.0)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        consumer.close()
        names = [s.name for s in specs] + [settings.topic("coverage"), otlp_topic]
        AdminClient(admin_config(settings)).delete_topics(names)  # the run's topics go
    for kind in ("native", "otel"):
        values = sorted(got[kind])
        if len(values) < 2:
            print(f"{kind:6s}: {len(values)} findings of {args.probes} probes")
            continue
        q = statistics.quantiles(values, n=100)
        print(
            f"{kind:6s}: {len(values)}/{args.probes} probes  p50 {q[49] * 1e3:7.1f} ms  "
            f"p90 {q[89] * 1e3:7.1f} ms  p99 {q[98] * 1e3:7.1f} ms"
        )
    if len(got["native"]) > 1 and len(got["otel"]) > 1:
        added = statistics.median(got["otel"]) - statistics.median(got["native"])
        print(f"added by tether ingest otlp (median): {added * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
