"""The pure OTel mapping, table-driven: spans (as decoded) → tether events and coverage."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_spans import Collect, fleet, otlp_proto
from tether.otel.config import GrantSpec, MappingConfig, ToolDefaults
from tether.otel.decode import SpanView, decode
from tether.otel.join import TraceJoiner
from tether.otel.mapping import Mapped, TraceContext, map_trace

TRACE = "0af7651916cd43dd8448eb211c80319c"
ORG = "spiffe://acme.example/agent/"
S = 1_000_000_000
T0 = 1_795_874_400 * S

CRED = {
    "tether.credential.id": "jti-1",
    "tether.credential.issuer": "https://sts.acme.example",
    "tether.credential.subject": ORG + "planner",
    "tether.credential.scopes": ("crm:read",),
    "tether.credential.issued_at": 1_795_874_000,
    "tether.credential.expires_at": "2026-11-28T15:00:00+00:00",
}
GRANT = {"tether.grant.task_type": "triage", "tether.grant.tools": ("crm.search",)}
AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": ORG + "planner"}
TOOL = {
    "gen_ai.operation.name": "execute_tool",
    "gen_ai.tool.name": "crm.search",
    "tether.action.data_sensitivity": "internal",
}


def sp(span_id: str, parent: str = "", attrs: dict[str, Any] | None = None, **kw: Any) -> SpanView:
    n = int(span_id, 16)
    return SpanView(
        trace_id=kw.pop("trace_id", TRACE),
        span_id=span_id,
        parent_span_id=parent,
        name=kw.pop("name", "span"),
        start_ns=kw.pop("start_ns", T0 + n * S),
        end_ns=kw.pop("end_ns", T0 + (n + 100) * S),
        attributes=attrs or {},
        resource=kw.pop("resource", {}),
        error=kw.pop("error", False),
    )


A1, T1, T2, B1 = "00000000000000a1", "00000000000000b1", "00000000000000b2", "00000000000000c1"


@dataclass
class Case:
    name: str
    spans: list[SpanView]
    types: list[str]  # event types in order
    config: MappingConfig = field(default_factory=MappingConfig)
    check: dict[str, Any] = field(default_factory=dict)  # dotted path in the last tool event
    reasons: dict[str, int] = field(default_factory=dict)  # coverage not_applied, summed


def _wf(attrs: dict[str, Any]) -> dict[str, Any]:
    return {**attrs, "gen_ai.conversation.id": "conv-1"}


CASES = [
    Case(
        "tool attributed to the invoke_agent above it; workflow = trace; completed",
        [sp(A1, "", {**AGENT, **GRANT, **CRED}), sp(T1, A1, {**TOOL, **CRED})],
        ["workflow.started", "tool_call.intent", "workflow.completed"],
        check={"agent.workload_id": ORG + "planner", "workflow_id": TRACE},
    ),
    Case(
        "conversation id of the agent span is the workflow; no completion per trace",
        [sp(A1, "", {**_wf(AGENT), **GRANT, **CRED}), sp(T1, A1, {**TOOL, **CRED})],
        ["workflow.started", "tool_call.intent"],
        check={"workflow_id": "conv-1"},
    ),
    Case(
        "a stamped tether.agent.id on the tool span wins over the ancestry",
        [sp(A1, "", {**AGENT, **GRANT, **CRED}), sp(T1, A1, {**TOOL, "tether.agent.id": "w"})],
        ["workflow.started", "tool_call.intent", "workflow.completed"],
        check={"agent.workload_id": "w"},
        reasons={"no_credential": 1},
    ),
    Case(
        "no agent anywhere: no event, counted",
        [sp(T1, "", TOOL)],
        [],
        reasons={"no_agent": 1},
    ),
    Case(
        "an agent from a resource attribute; agent_id_template applied",
        [sp(T1, "", {**TOOL, **CRED}, resource={"k8s.deployment.name": "planner"})],
        ["tool_call.intent"],
        config=MappingConfig(
            agent_sources=["resource:k8s.deployment.name"], agent_id_template=ORG + "{value}"
        ),
        check={"agent.workload_id": ORG + "planner"},
    ),
    Case(
        "MCP tools/call: resource from mcp.resource.uri, destination from server.address",
        [
            sp(A1, "", {**AGENT, **GRANT, **CRED}),
            sp(
                T1,
                A1,
                {
                    "mcp.method.name": "tools/call",
                    "mcp.resource.uri": "crm://a/1",
                    "server.address": "crm.internal",
                    **CRED,
                },
                name="tools/call crm.search",
            ),
        ],
        ["workflow.started", "tool_call.intent", "workflow.completed"],
        check={
            "action.tool": "crm.search",
            "action.resource": "crm://a/1",
            "action.destination": "crm.internal",
        },
        reasons={"no_sensitivity": 1},
    ),
    Case(
        "OpenInference TOOL span; its tool.name",
        [
            sp(A1, "", {**AGENT, **GRANT, **CRED}),
            sp(T1, A1, {"openinference.span.kind": "TOOL", "tool.name": "mail.send", **CRED}),
        ],
        ["workflow.started", "tool_call.intent", "workflow.completed"],
        check={"action.tool": "mail.send", "action.operation": "execute"},
        reasons={"no_sensitivity": 1},
    ),
    Case(
        "an MCP span under the execute_tool span of the same call is one call",
        [
            sp(A1, "", {**AGENT, **GRANT, **CRED}),
            sp(T1, A1, {**TOOL, **CRED}),
            sp(T2, T1, {"mcp.method.name": "tools/call", "gen_ai.tool.name": "crm.search"}),
        ],
        ["workflow.started", "tool_call.intent", "workflow.completed"],
    ),
    Case(
        "no credential anywhere: an unattested one, and coverage says so",
        [sp(A1, "", {**AGENT, **GRANT}), sp(T1, A1, TOOL)],
        ["workflow.started", "tool_call.intent", "workflow.completed"],
        check={
            "credential.issuer": "urn:tether:otel:unattested",
            "credential.subject": ORG + "planner",
            "credential.scopes": [],
        },
        reasons={"no_credential": 2},
    ),
    Case(
        "the credential of the agent span is used by its own tool spans",
        [sp(A1, "", {**AGENT, **GRANT, **CRED}), sp(T1, A1, TOOL)],
        ["workflow.started", "tool_call.intent", "workflow.completed"],
        check={"credential.token_id": "jti-1"},
    ),
    Case(
        "a credential without subject: the actor stands in, and coverage says so",
        [
            sp(
                T1,
                "",
                {**TOOL, "tether.agent.id": "w", "tether.credential.id": "j"},
            )
        ],
        ["tool_call.intent"],
        check={"credential.subject": "w"},
        reasons={
            "credential_without_subject": 1,
            "credential_without_scopes": 1,
            "credential_without_expiry": 1,
        },
    ),
    Case(
        "a fixed tool entry wins over the span's own (self-asserted) sensitivity",
        [
            sp(
                T1,
                "",
                {
                    **TOOL,
                    **CRED,
                    "tether.agent.id": "w",
                    "tether.action.data_sensitivity": "public",
                },
            )
        ],
        ["tool_call.intent"],
        config=MappingConfig(
            tools={"crm.search": ToolDefaults(data_sensitivity="restricted", fixed=True)}
        ),
        check={"action.data_sensitivity": "restricted"},
    ),
    Case(
        "a tool entry fills what the span lacks, and only that",
        [sp(T1, "", {**TOOL, **CRED, "tether.agent.id": "w", "tether.action.operation": "write"})],
        ["tool_call.intent"],
        config=MappingConfig(
            tools={"crm.search": ToolDefaults(operation="read", destination="crm.internal")}
        ),
        check={"action.operation": "write", "action.destination": "crm.internal"},
    ),
    Case(
        "an invalid enum value falls back to the default: the call is still checked",
        [
            sp(
                T1,
                "",
                {**TOOL, **CRED, "tether.agent.id": "w", "tether.action.data_sensitivity": "meh"},
            )
        ],
        ["tool_call.intent"],
        check={"action.data_sensitivity": "public"},
        reasons={"invalid_attribute": 1, "no_sensitivity": 1},
    ),
    Case(
        "a root without a grant starts nothing (unknown_workflow will say so)",
        [sp(A1, "", {**AGENT, **CRED}), sp(T1, A1, TOOL)],
        ["tool_call.intent", "workflow.completed"],
        reasons={"no_grant": 1},
    ),
    Case(
        "the mapping's grant for the agent name",
        [sp(A1, "", {**AGENT, **CRED, "gen_ai.agent.name": "planner"}), sp(T1, A1, TOOL)],
        ["workflow.started", "tool_call.intent", "workflow.completed"],
        config=MappingConfig(grants={"planner": GrantSpec(task_type="t", scopes=["crm:read"])}),
        reasons={"grant_from_mapping": 1},
    ),
    Case(
        "an agent span under another agent's is a delegation to it",
        [
            sp(A1, "", {**AGENT, **GRANT, **CRED}),
            sp(B1, A1, {**AGENT, "gen_ai.agent.id": ORG + "worker", "tether.delegation.id": "d"}),
            sp(T1, B1, TOOL, start_ns=T0 + 0xC2 * S),  # inside the worker's invocation
        ],
        ["workflow.started", "delegation.granted", "tool_call.intent", "workflow.completed"],
        check={"agent.workload_id": ORG + "worker"},
        reasons={"no_credential": 1, "delegation_scopes_inferred": 1},
    ),
    Case(
        "a root span stating tether.workflow.outcome completes its workflow, whatever the mode",
        [
            sp(A1, "", {**_wf(AGENT), **GRANT, **CRED}),
            sp(B1, "", {**_wf(AGENT), "tether.workflow.outcome": "cancelled"}),
        ],
        ["workflow.started", "workflow.completed"],
        check={},
    ),
    Case(
        "the same workload invoking a sub-agent hands nothing off",
        [sp(A1, "", {**AGENT, **GRANT, **CRED}), sp(B1, A1, {**AGENT, **CRED})],
        ["workflow.started", "workflow.completed"],
    ),
    Case(
        "a value over the contract's bound is rejected, not truncated",
        [sp(T1, "", {**TOOL, **CRED, "tether.agent.id": "w", "gen_ai.tool.name": "x" * 300})],
        [],
    ),
    Case(
        "a gap in the ancestry: the agent from a fallback, counted",
        [sp(T1, "00000000000000ff", {**TOOL, **CRED}, resource={"tether.agent.id": "r"})],
        ["tool_call.intent"],
        check={"agent.workload_id": "r"},
        reasons={"ancestry_incomplete": 1},
    ),
    Case(
        "a parent cycle is walked a bounded number of steps",
        [
            sp(T1, T2, {**TOOL, **CRED, "tether.agent.id": "w"}),
            sp(T2, T1, {"x": 1}),
        ],
        ["tool_call.intent"],
        reasons={"ancestry_incomplete": 1},
    ),
]


def _get(doc: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        doc = doc[part]
    return doc


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_mapping(case: Case) -> None:
    out = map_trace(case.spans, case.config)
    assert [e.event_type for e in out.events] == case.types
    tools = [e for e in out.events if e.event_type == "tool_call.intent"]
    if case.check:
        doc = tools[-1].model_dump(mode="json")
        for path, want in case.check.items():
            assert _get(doc, path) == want, path
    got: dict[str, int] = {}
    for cov in out.coverage:
        for reason, n in cov.not_applied.items():
            got[reason] = got.get(reason, 0) + n
    assert got == case.reasons


def test_rejected_spans_are_reported_with_their_workflow() -> None:
    spans = [sp(T1, "", {**TOOL, **CRED, "tether.agent.id": "w", "gen_ai.tool.name": "x" * 300})]
    out = map_trace(spans, MappingConfig())
    assert len(out.rejected) == 1
    assert out.rejected[0].workflow_id == TRACE
    assert "action.tool" in out.rejected[0].error


def test_event_ids_derive_from_trace_and_span_ids() -> None:
    spans = [sp(A1, "", {**AGENT, **GRANT, **CRED}), sp(T1, A1, {**TOOL, **CRED})]
    ids = [e.event_id for e in map_trace(spans, MappingConfig()).events]
    assert ids == [
        f"otel:{TRACE}:{A1}:started",
        f"otel:{TRACE}:{T1}",
        f"otel:{TRACE}:{A1}:completed",
    ]
    assert ids == [e.event_id for e in map_trace(spans[::-1], MappingConfig()).events]


def test_coverage_summary_names_what_was_not_applied() -> None:
    spans = [sp(A1, "", {**AGENT, **GRANT}), sp(T1, A1, TOOL), sp(T2, A1, TOOL)]
    (cov,) = map_trace(spans, MappingConfig(), now=1.0).coverage
    assert cov.tool_calls == 2
    assert cov.tool_calls_with_credential == 0
    assert cov.summary.startswith("2 tool calls, 0 with a credential: credential and identity")


# --- the join --------------------------------------------------------------------------------------
def _events(released: list[Any]) -> list[Any]:
    return [e for r in released for e in r.mapped.events]


def test_a_tool_span_waits_for_its_agent_span_in_a_later_record() -> None:
    joiner = TraceJoiner(MappingConfig(trace_idle_s=10))
    first, second = object(), object()
    assert joiner.add([sp(T1, A1, TOOL)], first, now=0.0) == 1
    assert joiner.release(now=1.0) == []
    assert joiner.add([sp(A1, "", {**AGENT, **GRANT, **CRED})], second, now=2.0) == 1
    (released,) = joiner.release(now=2.0)
    assert released.why == "root"
    assert released.origins == []  # settled once no late span can need its ancestry
    (settled,) = joiner.release(now=12.0)
    assert settled.origins == [first, second]
    tool = next(e for e in released.mapped.events if e.event_type == "tool_call.intent")
    assert tool.agent.workload_id == ORG + "planner"


def test_a_trace_without_root_is_released_when_idle() -> None:
    joiner = TraceJoiner(MappingConfig(trace_idle_s=5))
    joiner.add([sp(T1, "00000000000000ff", {**TOOL, "tether.agent.id": "w"})], 1, now=0.0)
    assert joiner.release(now=4.9) == []
    (released,) = joiner.release(now=5.0)
    assert released.why == "idle"
    assert len(released.mapped.events) == 1


def test_the_oldest_trace_is_evicted_beyond_max_traces_and_coverage_says_so() -> None:
    joiner = TraceJoiner(MappingConfig(max_traces=2))
    for n in range(3):
        span = sp(
            T1, "00000000000000ff", {**TOOL, "tether.agent.id": "w"}, trace_id=f"{n + 1:032x}"
        )
        joiner.add([span], n, now=0.0)
    (evicted,) = joiner.release(now=0.0)
    assert evicted.why == "evicted"
    assert evicted.trace_id == f"{1:032x}"
    assert evicted.mapped.coverage[0].not_applied["evicted"] == 1
    assert len(joiner) == 2


def test_a_late_span_is_attributed_through_the_remembered_ancestry() -> None:
    joiner = TraceJoiner(MappingConfig())
    joiner.add([sp(A1, "", {**_wf(AGENT), **GRANT, **CRED})], 1, now=0.0)
    joiner.release(now=0.0)
    joiner.add([sp(T1, A1, TOOL)], 2, now=1.0)
    (tool,) = [e for r in joiner.release(now=100.0) for e in r.mapped.events]
    assert tool.agent.workload_id == ORG + "planner"
    assert tool.workflow_id == "conv-1"
    assert tool.credential.token_id == "jti-1"


def test_context_absorbs_only_ancestry() -> None:
    ctx = TraceContext()
    ctx.absorb([sp(A1, "", AGENT), sp(T1, A1, TOOL), sp(T2, T1, {"x": 1})])
    assert set(ctx.agents) == {A1}
    assert ctx.tools == {T1: "crm.search"}
    assert ctx.parents == {A1: "", T1: A1, T2: T1}


# --- order and split invariance over real SDK spans -------------------------------------------------
def _fleet_spans() -> list[SpanView]:
    sink = Collect()
    fleet(sink, tag="prop")
    return decode(otlp_proto(sink.spans)).spans


FLEET = _fleet_spans()


def _run(spans: list[SpanView], cuts: list[int]) -> Mapped:
    joiner = TraceJoiner(MappingConfig())
    out = Mapped()
    bounds = [0, *sorted(set(cuts)), len(spans)]
    for n, (lo, hi) in enumerate(pairwise(bounds)):
        joiner.add(spans[lo:hi], n, now=0.0)
    for r in joiner.drain(now=0.0):
        out.events += r.mapped.events
    return out


@settings(max_examples=60, deadline=None)
@given(
    order=st.permutations(range(len(FLEET))),
    cuts=st.lists(st.integers(0, len(FLEET)), max_size=6),
)
def test_events_do_not_depend_on_span_order_or_record_boundaries(
    order: list[int], cuts: list[int]
) -> None:
    """Whatever the exporter's batching and the arrival order, as long as a trace's spans
    all arrive before it is released, the same events come out."""
    spans = [FLEET[i] for i in order]
    want = sorted(e.model_dump_json() for e in _run(FLEET, []).events)
    assert sorted(e.model_dump_json() for e in _run(spans, cuts).events) == want
    assert len(want) == 21


# --- the adversary: spans are what the agent's process says ------------------------------------------
def test_a_trickled_trace_cannot_hold_its_records_uncommitted_forever() -> None:
    """A sender that keeps adding spans to a rootless trace would keep it 'not idle' and its
    first record's offset uncommitted forever (a stall). A trace is released at the latest
    trace_max_hold_s after its first span."""
    joiner = TraceJoiner(MappingConfig(trace_idle_s=5, trace_max_hold_s=30))
    first = object()
    joiner.add([sp(T1, "00000000000000ff", {**TOOL, "tether.agent.id": "w"})], first, now=0.0)
    released = []
    for n in range(1, 61):  # held at most trace_max_hold_s, then settled at most as long again
        joiner.add([sp(f"{0x100 + n:016x}", "00000000000000ff", {"x": n})], n, now=float(n))
        released += joiner.release(now=float(n))
    assert any(first in r.origins for r in released)
    assert {r.why for r in released} <= {"max_hold", "settled"}


def test_held_spans_are_bounded_in_total_not_only_per_trace() -> None:
    joiner = TraceJoiner(MappingConfig(max_held_spans=100, max_spans_per_trace=50))
    for t in range(10):
        spans = [
            sp(f"{s + 1:016x}", "00000000000000ff", {"x": 1}, trace_id=f"{t + 1:032x}")
            for s in range(40)
        ]
        joiner.add(spans, t, now=0.0)
        assert joiner.held_spans <= 100 + 40  # at most one record over, until the next release
        joiner.release(now=0.0)
        assert joiner.held_spans <= 100


def test_a_span_from_another_process_does_not_inherit_an_agent_identity() -> None:
    """Attribution through ancestry trusts only the process that emitted the agent span: a span
    from another resource that names a victim's agent span as its parent is not that agent."""
    victim = {"service.name": "planner", "k8s.pod.uid": "p1"}
    intruder = {"service.name": "intruder", "k8s.pod.uid": "p9"}
    spans = [
        sp(A1, "", {**AGENT, **GRANT, **CRED}, resource=victim),
        sp(T1, A1, {**TOOL, "gen_ai.tool.name": "shell.exec"}, resource=intruder),
        sp(T2, A1, TOOL, resource=victim),
    ]
    out = map_trace(spans, MappingConfig())
    tools = [e for e in out.events if e.event_type == "tool_call.intent"]
    assert [(e.action.tool, e.credential.token_id) for e in tools] == [("crm.search", "jti-1")]
    assert out.coverage[0].not_applied["no_agent"] == 1
    trusting = map_trace(spans, MappingConfig(inherit_across_resources=True))
    assert len([e for e in trusting.events if e.event_type == "tool_call.intent"]) == 2


def test_remembered_ancestry_is_bounded_in_spans_too() -> None:
    """Released traces are remembered for late spans; many large traces must not make that
    memory grow past the held-spans bound."""
    joiner = TraceJoiner(MappingConfig(max_held_spans=100, remembered_traces=1000))
    for t in range(20):
        spans = [sp(f"{s + 1:016x}", "", {"x": 1}, trace_id=f"{t + 1:032x}") for s in range(40)]
        joiner.add(spans, t, now=0.0)
        joiner.release(now=0.0)
        assert joiner.remembered_spans <= 100


def test_records_stay_uncommitted_while_their_trace_may_still_get_late_spans() -> None:
    """At least once across a restart: a released trace's ancestry lives in memory only, so its
    records must stay uncommitted until no late span can need it (trace_idle_s without activity
    after the release). Otherwise a restart that re-reads only the late span maps it without
    its agent span: the event is lost (found by the SIGKILL integration test)."""
    joiner = TraceJoiner(MappingConfig(trace_idle_s=5))
    root_record, late_record = object(), object()
    joiner.add([sp(A1, "", {**AGENT, **GRANT, **CRED})], root_record, now=0.0)
    released = joiner.release(now=0.0)
    assert [e.event_type for r in released for e in r.mapped.events] == [
        "workflow.started",
        "workflow.completed",
    ]
    assert all(not r.origins for r in released)  # mapped and produced, not yet committable
    joiner.add([sp(T1, A1, TOOL)], late_record, now=3.0)
    assert joiner.release(now=4.0) == []
    late = joiner.release(now=8.0)  # the late span, idle for 5 s
    assert [e.event_type for r in late for e in r.mapped.events] == ["tool_call.intent"]
    assert all(not r.origins for r in late)
    settled = joiner.release(now=13.0)
    assert [o for r in settled for o in r.origins] == [root_record, late_record]
    assert all(not r.mapped.events for r in settled)


def test_drain_gives_back_every_origin() -> None:
    joiner = TraceJoiner(MappingConfig())
    joiner.add([sp(A1, "", AGENT)], 1, now=0.0)
    joiner.add([sp(T1, "00000000000000ff", TOOL, trace_id=f"{7:032x}")], 2, now=0.0)
    joiner.release(now=0.0)
    assert sorted(o for r in joiner.drain(now=0.0) for o in r.origins) == [1, 2]
