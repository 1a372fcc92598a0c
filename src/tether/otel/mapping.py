"""Spans of one trace → tether input events, and what could not be checked (pure).

The GenAI conventions put the acting agent and the conversation on the ``invoke_agent`` span,
not on ``execute_tool``; so a tool call is attributed through its ancestry: the nearest agent
(or workflow) span above it in the same trace. :func:`map_trace` takes the spans to map plus a
*context* (the ancestry of spans already mapped, for late arrivals) and returns events, rejects
and one :class:`~tether.otel.coverage.Coverage` per workflow. It reads no clock: event times are
span times, and ``now`` is passed in for coverage records only.

Event ids derive from trace and span ids (``otel:<trace>:<span>[:suffix]``), so a record read
twice (at-least-once delivery, a restart) yields the same events, which the worker ignores as
duplicates.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pydantic import ValidationError

from tether.models.codec import describe_errors
from tether.models.common import SENSITIVITY_LEVEL
from tether.models.events import (
    DelegationGranted,
    ToolCallIntent,
    WorkflowCompleted,
    WorkflowStarted,
)
from tether.otel import attributes as A
from tether.otel.config import GrantSpec, MappingConfig
from tether.otel.coverage import Coverage, CoverageRecord, Reason
from tether.otel.decode import Attributes, AttrValue, SpanView

Event = WorkflowStarted | ToolCallIntent | DelegationGranted | WorkflowCompleted
MAX_DEPTH: Final = 64  # ancestry walked per span: a cycle or a deep chain costs a bounded walk
UNATTESTED_ISSUER: Final = "urn:tether:otel:unattested"
UNKNOWN_ISSUER: Final = "urn:tether:otel:issuer-not-stated"
_OPERATIONS: Final = frozenset({"read", "write", "delete", "execute", "transfer", "admin"})
_AUTONOMY: Final = frozenset({"low", "medium", "high"})
_OUTCOMES: Final = frozenset({"success", "failure", "cancelled"})


# --- span kinds -----------------------------------------------------------------------------------
TOOL: Final = "tool"
AGENT: Final = "agent"
WORKFLOW: Final = "workflow"
OTHER: Final = "other"


def span_kind(span: SpanView) -> str:  # noqa: PLR0911  # one return per convention
    """What a span is to tether: a tool call, an agent or workflow invocation, or other."""
    attrs = span.attributes
    op = attrs.get(A.GEN_AI_OPERATION_NAME)
    if op == A.OP_EXECUTE_TOOL:
        return TOOL
    if op == A.OP_INVOKE_AGENT:
        return AGENT
    if op == A.OP_INVOKE_WORKFLOW:
        return WORKFLOW
    if attrs.get(A.MCP_METHOD_NAME) == A.MCP_TOOLS_CALL:
        return TOOL
    oi = attrs.get(A.OPENINFERENCE_SPAN_KIND)
    if oi == A.OPENINFERENCE_TOOL:
        return TOOL
    if oi == A.OPENINFERENCE_AGENT:
        return AGENT
    return OTHER


def tool_name(span: SpanView) -> str:
    """The tool: ``gen_ai.tool.name``, OpenInference ``tool.name``, else from the span name."""
    for key in (A.GEN_AI_TOOL_NAME, A.OPENINFERENCE_TOOL_NAME):
        value = span.attributes.get(key)
        if isinstance(value, str) and value:
            return value
    name = span.name
    for prefix in (f"{A.MCP_TOOLS_CALL} ", f"{A.OP_EXECUTE_TOOL} "):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


# --- context: what is remembered of a trace between flushes ---------------------------------------
@dataclass(slots=True)
class TraceContext:
    """Ancestry of a trace's spans already mapped: parents of every span, agent/workflow spans
    in full, and tool names (for merging nested tool spans)."""

    parents: dict[str, str] = field(default_factory=dict)
    agents: dict[str, SpanView] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)

    def absorb(self, spans: Iterable[SpanView]) -> None:
        """Remember ``spans`` as ancestry for later spans of the same trace."""
        for span in spans:
            self.parents[span.span_id] = span.parent_span_id
            kind = span_kind(span)
            if kind in (AGENT, WORKFLOW):
                self.agents[span.span_id] = span
            elif kind == TOOL:
                self.tools[span.span_id] = tool_name(span)


@dataclass(slots=True)
class Rejected:
    """A span that maps to an event the contract refuses (e.g. a 300-character tool name)."""

    span: SpanView
    workflow_id: str | None
    event_id: str
    error: str


@dataclass(slots=True)
class Mapped:
    """The result of mapping one trace (or the part of it that arrived)."""

    events: list[Event] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    coverage: list[CoverageRecord] = field(default_factory=list)


# --- attribute readers ------------------------------------------------------------------------------
def _str(attrs: Attributes, key: str, reasons: Counter[str] | None = None) -> str | None:
    value = attrs.get(key)
    if value is None:
        return None
    if isinstance(value, str) and value:
        return value
    if reasons is not None:
        reasons[Reason.INVALID_ATTRIBUTE] += 1
    return None


def _strs(attrs: Attributes, key: str, reasons: Counter[str]) -> list[str] | None:
    value = attrs.get(key)
    if value is None:
        return None
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    if isinstance(value, str):  # a single scope, or a space-separated OAuth scope string
        return value.split()
    reasons[Reason.INVALID_ATTRIBUTE] += 1
    return None


def _time(attrs: Attributes, key: str, reasons: Counter[str]) -> datetime | None:
    value: AttrValue = attrs.get(key)
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, int | float):
            return datetime.fromtimestamp(float(value), UTC)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is not None:
                return parsed
    except (TypeError, ValueError, OverflowError, OSError):
        pass
    reasons[Reason.INVALID_ATTRIBUTE] += 1
    return None


def _enum(value: str | None, allowed: Iterable[str], reasons: Counter[str]) -> str | None:
    if value is None:
        return None
    if value in allowed:
        return value
    reasons[Reason.INVALID_ATTRIBUTE] += 1  # fall back to the defaults: the call is still checked
    return None


def _ts(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


# --- the mapping ------------------------------------------------------------------------------------
class _Trace:
    """Index of the spans visible while mapping one flush of a trace."""

    def __init__(self, spans: list[SpanView], context: TraceContext) -> None:
        self.spans = spans
        self.parents = dict(context.parents)
        self.agents = dict(context.agents)
        self.tools = dict(context.tools)
        for span in spans:
            self.parents[span.span_id] = span.parent_span_id
            kind = span_kind(span)
            if kind in (AGENT, WORKFLOW):
                self.agents[span.span_id] = span
            elif kind == TOOL:
                self.tools[span.span_id] = tool_name(span)

    def ancestors(self, span: SpanView) -> Iterator[str]:
        """Span ids above ``span`` (nearest first), bounded and cycle-safe."""
        seen = {span.span_id}
        current = span.parent_span_id
        for _ in range(MAX_DEPTH):
            if not current or current in seen:
                return
            seen.add(current)
            yield current
            current = self.parents.get(current, "")

    def agent_above(
        self, span: SpanView, *, same_resource: bool = False
    ) -> tuple[SpanView | None, bool]:
        """The nearest agent/workflow span above ``span`` (with ``same_resource``: emitted by
        the same process, i.e. with an equal resource), and whether the ancestry was whole
        (reached a root or an agent span without a gap)."""
        last = span.span_id
        for sid in self.ancestors(span):
            agent = self.agents.get(sid)
            if agent is not None:
                if same_resource and agent.resource != span.resource:
                    return None, True  # another process's agent: no identity to inherit
                return agent, True
            last = sid
        whole = last == span.span_id or (last in self.parents and not self.parents[last])
        return None, whole


def map_trace(
    spans: list[SpanView],
    config: MappingConfig,
    *,
    context: TraceContext | None = None,
    now: float = 0.0,
    evicted: bool = False,
) -> Mapped:
    """Map the spans of one trace (``context``: its spans mapped earlier, for ancestry only).

    Args:
        spans: spans of one trace to turn into events (any order).
        config: the mapping file.
        context: ancestry remembered from earlier flushes of the same trace.
        now: POSIX seconds, stamped on the coverage records (the caller's clock).
        evicted: the trace was flushed early (bounds): its ancestry may be incomplete.
    """
    trace = _Trace(spans, context or TraceContext())
    mapper = _Mapper(trace, config)
    for span in sorted(spans, key=lambda s: (s.start_ns, s.span_id)):
        kind = span_kind(span)
        mapper.cov(mapper.workflow_of(span)).spans += 1
        if kind == TOOL:
            mapper.tool_call(span)
        elif kind in (AGENT, WORKFLOW):
            mapper.agent_span(span)
    out = mapper.out
    out.events.sort(key=lambda e: (e.occurred_at, _ORDER[e.event_type], e.event_id))
    for cov in mapper.coverage.values():
        if cov.workflow_started:  # another outermost span (a completion, a hand-off) had none
            cov.not_applied.pop(Reason.NO_GRANT, None)
        if evicted:
            cov.not_applied[Reason.EVICTED] += 1
        out.coverage.append(cov.finish(now))
    return out


_ORDER: Final = {
    "workflow.started": 0,
    "delegation.granted": 1,
    "tool_call.intent": 2,
    "workflow.completed": 3,
}


class _Mapper:
    def __init__(self, trace: _Trace, config: MappingConfig) -> None:
        self.trace = trace
        self.config = config
        self.out = Mapped()
        self.coverage: dict[str, Coverage] = {}
        self._workflows: dict[str, str] = {}  # span id -> workflow id (asked more than once)

    def cov(self, workflow_id: str) -> Coverage:
        cov = self.coverage.get(workflow_id)
        if cov is None:
            cov = self.coverage[workflow_id] = Coverage(
                source=self.config.source, workflow_id=workflow_id
            )
        if len(cov.trace_ids) < Coverage.MAX_TRACES and self.trace.spans:
            trace_id = self.trace.spans[0].trace_id
            if trace_id not in cov.trace_ids:
                cov.trace_ids.append(trace_id)
        return cov

    # -- who, which workflow ----------------------------------------------------------------------
    def workflow_of(self, span: SpanView) -> str:
        """``tether.workflow.id`` or ``gen_ai.conversation.id`` of the span or its nearest
        agent span that has one; the resource's ``tether.workflow.id``; else the trace id."""
        known = self._workflows.get(span.span_id)
        if known is None:
            known = self._workflows[span.span_id] = self._workflow_of(span)
        return known

    def _workflow_of(self, span: SpanView) -> str:
        for candidate in self._self_and_agents_above(span):
            for key in (A.WORKFLOW_ID, A.GEN_AI_CONVERSATION_ID):
                value = candidate.attributes.get(key)
                if isinstance(value, str) and value:
                    return value
        value = span.resource.get(A.WORKFLOW_ID)
        if isinstance(value, str) and value:
            return value
        return span.trace_id

    def _self_and_agents_above(self, span: SpanView) -> Iterator[SpanView]:
        yield span
        for sid in self.trace.ancestors(span):
            agent = self.trace.agents.get(sid)
            if agent is not None:
                yield agent

    def actor(self, span: SpanView, agent_span: SpanView | None) -> str | None:
        """The acting workload: the first of ``agent_sources`` that the span gives."""
        for item in self.config.agent_sources:
            where, _, key = item.partition(":")
            if where == "span":
                attrs = span.attributes
            elif where == "agent_span":
                if agent_span is None:
                    continue
                attrs = agent_span.attributes
            else:
                attrs = span.resource
            value = attrs.get(key)
            if isinstance(value, str) and value:
                return self.config.agent_id_template.replace("{value}", value)
        return None

    def credential(
        self,
        span: SpanView,
        agent_span: SpanView | None,
        actor: str,
        workflow_id: str,
        at: datetime,
        reasons: Counter[str],
    ) -> dict[str, Any]:
        """The ``tether.credential.*`` of the span, else of its agent span when that agent is
        the actor, else of the resource; all fields from the one place that has the id. None of
        them: an *unattested* credential that makes the credential checks vacuous (and says so
        in coverage) while the grant checks still run."""
        places: list[Attributes] = [span.attributes]
        if (
            agent_span is not None
            and agent_span is not span
            and self.actor(agent_span, agent_span) == actor
        ):
            places.append(agent_span.attributes)
        places.append(span.resource)
        for attrs in places:
            token_id = _str(attrs, A.CREDENTIAL_ID, reasons)
            if token_id is None:
                continue
            subject = _str(attrs, A.CREDENTIAL_SUBJECT, reasons)
            if subject is None:
                reasons[Reason.CREDENTIAL_WITHOUT_SUBJECT] += 1
            scopes = _strs(attrs, A.CREDENTIAL_SCOPES, reasons)
            if scopes is None:
                reasons[Reason.CREDENTIAL_WITHOUT_SCOPES] += 1
            issued = _time(attrs, A.CREDENTIAL_ISSUED_AT, reasons)
            expires = _time(attrs, A.CREDENTIAL_EXPIRES_AT, reasons)
            if expires is None:
                reasons[Reason.CREDENTIAL_WITHOUT_EXPIRY] += 1
            ttl = timedelta(seconds=self.config.unattested_credential_ttl_s)
            return {
                "token_id": token_id,
                "issuer": _str(attrs, A.CREDENTIAL_ISSUER, reasons) or UNKNOWN_ISSUER,
                "subject": subject or actor,
                "scopes": scopes or [],
                "issued_at": issued or at,
                "expires_at": expires or (at + ttl),
            }
        reasons[Reason.NO_CREDENTIAL] += 1
        digest = hashlib.blake2b(f"{workflow_id}\x00{actor}".encode(), digest_size=10).hexdigest()
        return {
            "token_id": f"otel-unattested:{digest}",
            "issuer": UNATTESTED_ISSUER,
            "subject": actor,
            "scopes": [],
            "issued_at": at,
            "expires_at": at + timedelta(seconds=self.config.unattested_credential_ttl_s),
        }

    # -- spans -------------------------------------------------------------------------------------
    def tool_call(self, span: SpanView) -> None:
        workflow_id = self.workflow_of(span)
        cov = self.cov(workflow_id)
        cov.tool_calls += 1
        reasons = cov.not_applied
        parent_tool = self.trace.tools.get(span.parent_span_id)
        tool = tool_name(span)
        if self.config.dedupe_nested_tool_spans and parent_tool == tool:
            cov.merged_tool_spans += 1  # an MCP span under the execute_tool span of one call
            cov.tool_calls -= 1
            return
        agent_span, whole = self.trace.agent_above(
            span, same_resource=not self.config.inherit_across_resources
        )
        actor = self.actor(span, agent_span)
        if actor is None:
            reasons[Reason.NO_AGENT] += 1
            return
        if agent_span is None and not whole:
            reasons[Reason.ANCESTRY_INCOMPLETE] += 1
        at = _ts(span.start_ns)
        credential = self.credential(span, agent_span, actor, workflow_id, at, reasons)
        if credential["issuer"] != UNATTESTED_ISSUER:
            cov.tool_calls_with_credential += 1
        event_id = f"otel:{span.trace_id}:{span.span_id}"
        doc = {
            "schema_version": 1,
            "event_type": "tool_call.intent",
            "event_id": event_id,
            "occurred_at": at,
            "workflow_id": workflow_id,
            "agent": {"workload_id": actor},
            "credential": credential,
            "action": self.action(span, tool, reasons),
        }
        self.emit(ToolCallIntent, doc, span, cov)

    def action(self, span: SpanView, tool: str, reasons: Counter[str]) -> dict[str, Any]:
        attrs = span.attributes
        entry = self.config.tools.get(tool)
        fixed = entry is not None and entry.fixed
        op = _enum(_str(attrs, A.ACTION_OPERATION, reasons), _OPERATIONS, reasons)
        sens = _enum(_str(attrs, A.ACTION_DATA_SENSITIVITY, reasons), SENSITIVITY_LEVEL, reasons)
        resource = _str(attrs, A.ACTION_RESOURCE, reasons) or _str(attrs, A.MCP_RESOURCE_URI)
        destination = _str(attrs, A.ACTION_DESTINATION, reasons) or _str(attrs, A.SERVER_ADDRESS)
        if entry is not None:
            if fixed or op is None:
                op = entry.operation or op
            if fixed or sens is None:
                sens = entry.data_sensitivity or sens
            if fixed or resource is None:
                resource = entry.resource if entry.resource is not None else resource
            if fixed or destination is None:
                destination = entry.destination if entry.destination is not None else destination
        if sens is None:
            reasons[Reason.NO_SENSITIVITY] += 1
        return {
            "tool": tool,
            "operation": op or self.config.default_action.operation,
            "resource": resource or "",
            "destination": destination or "",
            "data_sensitivity": sens or self.config.default_action.data_sensitivity,
        }

    def agent_span(self, span: SpanView) -> None:
        workflow_id = self.workflow_of(span)
        cov = self.cov(workflow_id)
        reasons = cov.not_applied
        parent, _ = self.trace.agent_above(span)
        actor = self.actor(span, span)
        if actor is None:
            reasons[Reason.NO_AGENT] += 1
            return
        cov.agents += 1
        if parent is None:
            self.root(span, actor, workflow_id, cov)
            return
        delegator = self.actor(parent, parent)
        if delegator is None or delegator == actor:
            return  # the same workload invoking a sub-agent of its own: no hand-off
        self.delegation(span, parent, delegator, actor, workflow_id, cov)

    def root(self, span: SpanView, actor: str, workflow_id: str, cov: Coverage) -> None:
        reasons = cov.not_applied
        start = _ts(span.start_ns)
        grant = self.grant(span, start, reasons)
        if grant is None:
            reasons[Reason.NO_GRANT] += 1
        else:
            credential = self.credential(span, span, actor, workflow_id, start, reasons)
            doc = {
                "schema_version": 1,
                "event_type": "workflow.started",
                "event_id": f"otel:{span.trace_id}:{span.span_id}:started",
                "occurred_at": start,
                "workflow_id": workflow_id,
                "agent": {"workload_id": actor},
                "credential": credential,
                "grant": grant,
            }
            if self.emit(WorkflowStarted, doc, span, cov):
                cov.workflow_started = True
        mode = self.config.complete_workflows
        stated = _enum(_str(span.attributes, A.WORKFLOW_OUTCOME, reasons), _OUTCOMES, reasons)
        if (
            stated is not None
            or mode == "always"
            or (mode == "trace" and workflow_id == span.trace_id)
        ):
            end = _ts(span.end_ns)
            doc = {
                "schema_version": 1,
                "event_type": "workflow.completed",
                "event_id": f"otel:{span.trace_id}:{span.span_id}:completed",
                "occurred_at": end,
                "workflow_id": workflow_id,
                "agent": {"workload_id": actor},
                "outcome": stated or ("failure" if span.error else "success"),
            }
            if _str(span.attributes, A.CREDENTIAL_ID) is not None:
                doc["credential"] = self.credential(span, span, actor, workflow_id, end, reasons)
            if self.emit(WorkflowCompleted, doc, span, cov):
                cov.workflow_completed = True

    def grant(
        self, span: SpanView, start: datetime, reasons: Counter[str]
    ) -> dict[str, Any] | None:
        """``tether.grant.*`` on the root span; else the mapping's grant for its workflow (or
        agent) name; else ``default_grant``; else None (no workflow.started is emitted)."""
        attrs = span.attributes
        task_type = _str(attrs, A.GRANT_TASK_TYPE, reasons)
        spec: GrantSpec | None = None
        if task_type is None:
            for key in (A.GEN_AI_WORKFLOW_NAME, A.GEN_AI_AGENT_NAME):
                name = _str(attrs, key)
                if name is not None and name in self.config.grants:
                    spec = self.config.grants[name]
                    break
            spec = spec or self.config.default_grant
            if spec is None:
                return None
            reasons[Reason.GRANT_FROM_MAPPING] += 1
            return {
                "task_type": spec.task_type,
                "purpose": spec.purpose,
                "scopes": list(spec.scopes),
                "tools": list(spec.tools),
                "max_sensitivity": spec.max_sensitivity,
                "destinations": list(spec.destinations),
                "not_after": start + timedelta(seconds=spec.window_s),
                "autonomy": spec.autonomy,
            }
        sens = _enum(_str(attrs, A.GRANT_MAX_SENSITIVITY, reasons), SENSITIVITY_LEVEL, reasons)
        autonomy = _enum(_str(attrs, A.GRANT_AUTONOMY, reasons), _AUTONOMY, reasons)
        not_after = _time(attrs, A.GRANT_NOT_AFTER, reasons)
        return {
            "task_type": task_type,
            "purpose": _str(attrs, A.GRANT_PURPOSE, reasons) or "",
            "scopes": _strs(attrs, A.GRANT_SCOPES, reasons) or [],
            "tools": _strs(attrs, A.GRANT_TOOLS, reasons) or [],
            # no stated ceiling means none, as an empty tools or destinations list does
            "max_sensitivity": sens or "restricted",
            "destinations": _strs(attrs, A.GRANT_DESTINATIONS, reasons) or [],
            "not_after": not_after or (start + timedelta(hours=1)),
            "autonomy": autonomy or "medium",
        }

    def delegation(
        self,
        span: SpanView,
        parent: SpanView,
        delegator: str,
        delegatee: str,
        workflow_id: str,
        cov: Coverage,
    ) -> None:
        reasons = cov.not_applied
        at = _ts(span.start_ns)
        credential = self.credential(parent, parent, delegator, workflow_id, at, reasons)
        scopes = _strs(span.attributes, A.DELEGATION_SCOPES, reasons)
        if scopes is None:
            # no stated scopes: the delegatee's own credential's (delegation_amplification
            # then compares what the delegatee holds with what its delegator held)
            own = self.credential(span, span, delegatee, workflow_id, at, Counter())
            scopes = list(own["scopes"])
            reasons[Reason.DELEGATION_SCOPES_INFERRED] += 1
        expires = _time(span.attributes, A.DELEGATION_EXPIRES_AT, reasons) or _ts(span.end_ns)
        doc = {
            "schema_version": 1,
            "event_type": "delegation.granted",
            "event_id": f"otel:{span.trace_id}:{span.span_id}:delegation",
            "occurred_at": at,
            "workflow_id": workflow_id,
            "agent": {"workload_id": delegator},
            "credential": credential,
            "delegation": {
                "delegation_id": _str(span.attributes, A.DELEGATION_ID, reasons)
                or f"otel:{span.trace_id}:{span.span_id}",
                "to_workload_id": delegatee,
                "scopes": scopes,
                "expires_at": expires,
            },
        }
        if self.emit(DelegationGranted, doc, span, cov):
            cov.delegations += 1

    def emit(self, model: type[Event], doc: dict[str, Any], span: SpanView, cov: Coverage) -> bool:
        try:
            event = model.model_validate(doc)
        except ValidationError as exc:
            cov.rejected += 1
            self.out.rejected.append(
                Rejected(span, doc.get("workflow_id"), doc["event_id"], describe_errors(exc))
            )
            return False
        self.out.events.append(event)
        return True
