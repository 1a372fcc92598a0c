"""``tether demo --otel``: the demo fleet arriving as OpenTelemetry spans, every attack caught.

The fleet of ``tether demo`` (the same workflows, attacks, duplicates and disorder) is rendered
as the spans an instrumented agent with ``TetherSpanProcessor`` would export: one trace per
workflow, an ``invoke_agent`` root span carrying the grant when the workflow starts, an
``execute_tool`` span per tool call, an ``invoke_agent`` span of the delegatee under one of the
delegator's for each hand-off, and a root span stating ``tether.workflow.outcome`` when it
completes. The spans are serialised in arrival order as the Collector's Kafka exporter writes
them (``otlp_proto``, one ``ExportTraceServiceRequest`` per batch of up to 64 spans), then
decoded, joined and mapped exactly as ``tether ingest otlp`` does, and judged by the same core
as ``tether replay``. In process: no Collector, Kafka or OpenTelemetry SDK is needed.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Final

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, TracesData

from tether.bootstrap import monitor
from tether.demo.fleet import FleetConfig, generate, ground_truth
from tether.demo.scorecard import score
from tether.models.codec import encode
from tether.otel import attributes as A
from tether.otel.config import MappingConfig
from tether.otel.decode import decode
from tether.otel.join import TraceJoiner
from tether.replay import Replayer
from tether.settings import Settings

BATCH: Final = 64  # spans per exported record


def _id(text: str, size: int) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=size).digest()


def _ns(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp).timestamp() * 1_000_000_000)


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, list):
        array = ArrayValue(values=[AnyValue(string_value=str(v)) for v in value])
        return KeyValue(key=key, value=AnyValue(array_value=array))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def _credential(cred: dict[str, Any] | None) -> dict[str, Any]:
    if not cred:
        return {}
    return {
        A.CREDENTIAL_ID: cred["token_id"],
        A.CREDENTIAL_ISSUER: cred["issuer"],
        A.CREDENTIAL_SUBJECT: cred["subject"],
        A.CREDENTIAL_SCOPES: cred["scopes"],
        A.CREDENTIAL_ISSUED_AT: cred["issued_at"],
        A.CREDENTIAL_EXPIRES_AT: cred["expires_at"],
    }


def spans_of(event: dict[str, Any]) -> list[Span]:
    """The spans an instrumented agent would export for one fleet event (deterministic ids:
    a duplicate delivery is the same span)."""
    wf, eid = event["workflow_id"], event["event_id"]
    trace = _id(wf, 16)
    root = _id(f"{wf}\x00root", 8)
    # The workflow's agent spans name a parent that is never exported here (a caller in another
    # service): as in a real trace, only the span that ends the workflow is the trace's root, so
    # the adapter holds the workflow's spans until it completes and maps them in event-time order.
    remote = _id(f"{wf}\x00remote", 8)
    at = _ns(event["occurred_at"])
    agent = event["agent"]["workload_id"]
    common = {A.WORKFLOW_ID: wf, A.AGENT_ID: agent, **_credential(event.get("credential"))}

    def span(name: str, span_id: bytes, parent: bytes, attrs: dict[str, Any]) -> Span:
        return Span(
            trace_id=trace,
            span_id=span_id,
            parent_span_id=parent,
            name=name,
            kind=Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=at,
            end_time_unix_nano=at,
            attributes=[_kv(k, v) for k, v in attrs.items()],
        )

    kind = event["event_type"]
    if kind == "workflow.started":
        g = event["grant"]
        grant = {
            A.GRANT_TASK_TYPE: g["task_type"],
            A.GRANT_PURPOSE: g["purpose"],
            A.GRANT_SCOPES: g["scopes"],
            A.GRANT_TOOLS: g["tools"],
            A.GRANT_MAX_SENSITIVITY: g["max_sensitivity"],
            A.GRANT_DESTINATIONS: g["destinations"],
            A.GRANT_NOT_AFTER: g["not_after"],
            A.GRANT_AUTONOMY: g["autonomy"],
        }
        attrs = {A.GEN_AI_OPERATION_NAME: A.OP_INVOKE_AGENT, **common, **grant}
        return [span(f"invoke_agent {agent}", root, remote, attrs)]
    if kind == "tool_call.intent":
        a = event["action"]
        attrs = {
            A.GEN_AI_OPERATION_NAME: A.OP_EXECUTE_TOOL,
            A.GEN_AI_TOOL_NAME: a["tool"],
            A.ACTION_OPERATION: a["operation"],
            A.ACTION_RESOURCE: a["resource"],
            A.ACTION_DESTINATION: a["destination"],
            A.ACTION_DATA_SENSITIVITY: a["data_sensitivity"],
            **common,
        }
        return [span(f"execute_tool {a['tool']}", _id(eid, 8), root, attrs)]
    if kind == "delegation.granted":
        d = event["delegation"]
        # the delegator's own agent span (outermost: it hands over only its own authority, not
        # the initiator's), and the delegatee's under it
        delegator = _id(f"{eid}\x00delegator", 8)
        upper = {A.GEN_AI_OPERATION_NAME: A.OP_INVOKE_AGENT, **common}
        lower = {
            A.GEN_AI_OPERATION_NAME: A.OP_INVOKE_AGENT,
            A.WORKFLOW_ID: wf,
            A.AGENT_ID: d["to_workload_id"],
            A.DELEGATION_ID: d["delegation_id"],
            A.DELEGATION_SCOPES: d["scopes"],
            A.DELEGATION_EXPIRES_AT: d["expires_at"],
        }
        return [
            span(f"invoke_agent {agent}", delegator, remote, upper),
            span(f"invoke_agent {d['to_workload_id']}", _id(eid, 8), delegator, lower),
        ]
    attrs = {
        A.GEN_AI_OPERATION_NAME: A.OP_INVOKE_WORKFLOW,
        A.WORKFLOW_OUTCOME: event["outcome"],
        **common,
    }
    return [span("invoke_workflow", _id(eid, 8), b"", attrs)]


def records(config: FleetConfig) -> Iterator[tuple[int, bytes]]:
    """(arrival ms, exporter record) for the fleet, batches of up to ``BATCH`` spans."""
    batch: list[Span] = []
    last = 0
    for fe in generate(config):
        batch += spans_of(fe.event)
        last = fe.arrival
        if len(batch) >= BATCH:
            yield last, _record(batch)
            batch = []
    if batch:
        yield last, _record(batch)


def _record(spans: list[Span]) -> bytes:
    rs = ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])
    rs.resource.attributes.append(_kv(A.SERVICE_NAME, "tether-demo-fleet"))
    return bytes(TracesData(resource_spans=[rs]).SerializeToString())


def run_otel_demo(
    *, workflows: int, seed: int, attack_rate: float, echo: Callable[[str], None] = print
) -> int:
    """Run the fleet through OTel ingest and the detectors; 0 when every attack was caught."""
    config = FleetConfig(seed=seed, workflows=workflows, attack_rate=attack_rate)
    # long batch jobs run for many minutes: hold a workflow's spans until it completes
    joiner = TraceJoiner(MappingConfig(source="otel-demo", trace_max_hold_s=3600))
    lines: list[bytes] = []
    not_applied: Counter[str] = Counter()
    n_records = n_spans = 0
    for arrival, data in records(config):
        decoded = decode(data, "otlp_proto")
        n_records += 1
        n_spans += len(decoded.spans)
        joiner.add(decoded.spans, n_records, arrival / 1000)
        for item in joiner.release(arrival / 1000):
            lines += [encode(e) for e in item.mapped.events]
            for cov in item.mapped.coverage:
                not_applied.update(cov.not_applied)
    for item in joiner.drain(float("inf")):
        lines += [encode(e) for e in item.mapped.events]
    out = io.BytesIO()
    mon = monitor(Settings(), decisions=False)
    Replayer(mon, out.write).run(lines)
    found: dict[str, set[str]] = defaultdict(set)
    codes: Counter[str] = Counter()
    dead: Counter[str] = Counter()
    revocations = 0
    for raw in out.getvalue().splitlines():
        doc = orjson.loads(raw)
        if doc["kind"] == "finding":
            found[doc["workflow_id"]].add(doc["code"])
            codes[doc["code"]] += 1
        elif doc["kind"] == "revocation":
            revocations += 1
        elif doc["kind"] == "deadletter":
            dead[doc["reason"]] += 1
    card = score(ground_truth(config), found)
    echo(f"fleet as OpenTelemetry spans: {n_spans:,} spans in {n_records:,} otlp_proto records")
    echo(f"mapped by tether ingest otlp: {len(lines):,} tether events")
    if not_applied:
        echo(
            "coverage (checks not applied): "
            + ", ".join(f"{k} {v}" for k, v in sorted(not_applied.items()))
        )
    echo("findings: " + (", ".join(f"{k} {v}" for k, v in sorted(codes.items())) or "none"))
    echo(f"revocations: {revocations:,}; dead letters: {dict(dead) or 'none'}")
    echo(
        f"attacks caught: {card.caught}/{card.injected}; benign workflows with findings: {len(card.benign)}"
    )
    for kind in card.kinds:
        if kind.caught != kind.injected:
            echo(f"  missed {kind.kind}: {kind.injected - kind.caught} ({', '.join(kind.missed)})")
    for wf, wcodes in list(card.benign.items())[:5]:
        echo(f"  benign {wf}: {sorted(wcodes)}")
    return 0 if card.passed else 1
