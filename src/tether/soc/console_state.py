"""What the console shows, kept in memory and bounded: recent findings and revocations, each
workflow's timeline, the workers' heartbeats and the dead letters by reason.

Fed by one reader of the pipeline's topics (``console.KafkaFeed``) and read by the web handlers,
on the same event loop: no locks. Every collection is bounded, because what is on the topics is
chosen in part by the agents tether watches (a storm of findings, a workflow with a million
events): the oldest goes first, and a timeline says how much it dropped.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

MAX_FEED: Final = 5_000
MAX_WORKFLOWS: Final = 2_000
MAX_TIMELINE: Final = 300
MAX_DETAIL: Final = 300  # characters of a timeline entry's detail kept
MAX_DELEGATIONS: Final = 200
LATENCY_WINDOW_S: Final = 300.0


@dataclass(slots=True)
class WorkflowView:
    """One workflow as the console knows it."""

    workflow_id: str
    grant: dict[str, Any] | None = None
    initiator: str | None = None
    timeline: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0
    delegations: list[dict[str, str]] = field(default_factory=list)
    findings: int = 0

    def add(self, item: dict[str, Any]) -> None:
        """One timeline entry (``t``: event time, ISO 8601; ``what``; ``detail``)."""
        detail = item.get("detail")
        if isinstance(detail, str) and len(detail) > MAX_DETAIL:
            item["detail"] = detail[:MAX_DETAIL] + "…"
        if len(self.timeline) >= MAX_TIMELINE:
            self.timeline.pop(0)
            self.dropped += 1
        self.timeline.append(item)

    def ordered(self) -> list[dict[str, Any]]:
        """The timeline in event time (arrival order breaks ties)."""
        return sorted(self.timeline, key=lambda e: _epoch(e.get("t")))  # ISO text misorders .5


@dataclass(slots=True)
class WorkerHealth:
    """A worker's last heartbeat, as seen by the console."""

    source: str
    sequence: int = 0
    received: float = 0.0
    emitted_at: str = ""
    watermark: str | None = None
    input_lag_s: float | None = None
    input_lag_records: int | None = None
    interval_s: float = 1.0


class ConsoleState:
    """Everything the pages and the live feed read."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.feed: deque[dict[str, Any]] = deque(maxlen=MAX_FEED)
        self.workflows: OrderedDict[str, WorkflowView] = OrderedDict()
        self.workers: dict[str, WorkerHealth] = {}
        self.deadletters: Counter[str] = Counter()
        self.latencies: deque[tuple[float, float]] = deque(maxlen=10_000)  # (received, seconds)
        self.finding_times: OrderedDict[str, float] = OrderedDict()  # finding id -> event time
        # revocations read before their finding (a worker publishes them first): id -> issued
        self.early_revocations: OrderedDict[str, float] = OrderedDict()
        self.counts: Counter[str] = Counter()

    def workflow(self, workflow_id: str) -> WorkflowView:
        """The view of ``workflow_id``, created (and the oldest evicted) as needed."""
        wf = self.workflows.get(workflow_id)
        if wf is None:
            wf = self.workflows[workflow_id] = WorkflowView(workflow_id)
            if len(self.workflows) > MAX_WORKFLOWS:
                self.workflows.popitem(last=False)
        else:
            self.workflows.move_to_end(workflow_id)
        return wf

    # -- inputs ------------------------------------------------------------------------------

    def on_event(self, ev: dict[str, Any]) -> None:
        """An input event (from the intents topic)."""
        wf_id = ev.get("workflow_id")
        if not isinstance(wf_id, str):
            return
        wf = self.workflow(wf_id)
        agent = (ev.get("agent") or {}).get("workload_id", "?")
        etype = str(ev.get("event_type", "?"))
        detail = agent
        if etype == "workflow.started":
            wf.grant = ev.get("grant")
            wf.initiator = agent
        elif etype == "tool_call.intent":
            a = ev.get("action") or {}
            detail = f"{agent}: {a.get('operation')} {a.get('tool')} {a.get('resource')}"
            if a.get("destination"):
                detail += f" -> {a.get('destination')}"
        elif etype == "delegation.granted":
            d = ev.get("delegation") or {}
            detail = f"{agent} delegates {d.get('scopes')} to {d.get('to_workload_id')}"
            if len(wf.delegations) < MAX_DELEGATIONS:
                wf.delegations.append(
                    {
                        "id": str(d.get("delegation_id", "")),
                        "from": str(agent),
                        "to": str(d.get("to_workload_id", "")),
                    }
                )
        wf.add({"t": ev.get("occurred_at"), "what": etype, "detail": detail})
        self.counts["events"] += 1

    def on_decision(self, d: dict[str, Any]) -> None:
        """A per-call decision."""
        wf_id = d.get("workflow_id")
        if isinstance(wf_id, str) and wf_id in self.workflows:
            self.workflows[wf_id].add(
                {
                    "t": d.get("evaluated_at"),
                    "what": f"decision: {d.get('decision')}",
                    "detail": f"{d.get('tool')} {', '.join(d.get('findings') or [])}",
                }
            )

    def on_finding(self, f: dict[str, Any]) -> dict[str, Any]:
        """A finding: into the feed, its workflow's timeline; returns the feed item."""
        item = {"kind": "finding", **f}
        self.feed.append(item)
        self.counts["findings"] += 1
        wf = self.workflow(str(f.get("workflow_id")))
        wf.findings += 1
        wf.add(
            {
                "t": f.get("event_time"),
                "what": f"finding: {f.get('code')} ({f.get('severity')})",
                "detail": f.get("summary", ""),
                "finding_id": f.get("finding_id"),
            }
        )
        if f.get("delegation_chain") and not wf.initiator:
            wf.initiator = f.get("initiator")
        fid = f.get("finding_id")
        if isinstance(fid, str):
            caused = self.finding_times[fid] = _epoch(f.get("event_time"))
            if len(self.finding_times) > MAX_FEED:
                self.finding_times.popitem(last=False)
            issued = self.early_revocations.pop(fid, None)
            if issued is not None:
                self._latency(caused, issued)
        return item

    def on_revocation(self, r: dict[str, Any]) -> dict[str, Any]:
        """A revocation: into the feed and its workflow's timeline; latency when it is known."""
        item = {"kind": "revocation", **r}
        self.feed.append(item)
        self.counts["revocations"] += 1
        target = r.get("target") or {}
        wf_id = r.get("workflow_id")
        if isinstance(wf_id, str):
            self.workflow(wf_id).add(
                {
                    "t": r.get("issued_at"),
                    "what": f"revocation: {target.get('kind')}",
                    "detail": f"{target.get('id')} ({r.get('reason')})",
                }
            )
        fid = r.get("finding_id")
        if isinstance(fid, str):
            issued = _epoch(r.get("issued_at"))
            caused = self.finding_times.get(fid)
            if caused is not None:
                self._latency(caused, issued)
            elif fid not in self.early_revocations:  # the first revocation of a finding counts
                self.early_revocations[fid] = issued
                if len(self.early_revocations) > MAX_FEED:
                    self.early_revocations.popitem(last=False)
        return item

    def _latency(self, caused: float, issued: float) -> None:
        if caused and issued >= caused:
            self.latencies.append((self.clock(), issued - caused))

    def on_heartbeat(self, h: dict[str, Any]) -> None:
        """A worker's heartbeat (one per partition: the freshest wins)."""
        src = str(h.get("source", "?"))
        w = self.workers.get(src) or WorkerHealth(src)
        w.sequence = int(h.get("sequence") or 0)
        w.received = self.clock()
        w.emitted_at = str(h.get("emitted_at", ""))
        w.watermark = h.get("watermark")
        w.input_lag_s = h.get("input_lag_s")
        w.input_lag_records = h.get("input_lag_records")
        w.interval_s = float(h.get("interval_s") or 1.0)
        self.workers[src] = w

    def on_deadletter(self, d: dict[str, Any]) -> None:
        """A dead letter: counted by reason."""
        self.deadletters[str(d.get("reason", "?"))] += 1

    # -- outputs -----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Pipeline health as JSON: workers, revocation latency of the last minutes, dead letters."""
        now = self.clock()
        recent = sorted(s for at, s in self.latencies if now - at <= LATENCY_WINDOW_S)
        return {
            "workers": [
                {
                    "source": w.source,
                    "sequence": w.sequence,
                    "seconds_since_heartbeat": round(now - w.received, 1),
                    "alive": now - w.received <= max(3 * w.interval_s, 5.0),
                    "watermark": w.watermark,
                    "input_lag_s": w.input_lag_s,
                    "input_lag_records": w.input_lag_records,
                }
                for w in sorted(self.workers.values(), key=lambda w: w.source)
            ],
            "revocation_latency_s": {
                "window_s": LATENCY_WINDOW_S,
                "count": len(recent),
                "p50": _pct(recent, 0.5),
                "p99": _pct(recent, 0.99),
                "max": round(recent[-1], 4) if recent else None,
            },
            "deadletters": dict(self.deadletters.most_common()),
            "counts": dict(self.counts),
        }


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 4)


def _epoch(value: object) -> float:
    from datetime import datetime  # noqa: PLC0415

    if not isinstance(value, str):
        return 0.0
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def matches(item: dict[str, Any], filters: dict[str, str]) -> bool:
    """Whether a feed item passes the live feed's filters (severity, code, workload, workflow)."""
    sev = filters.get("severity")
    if sev and item.get("severity") != sev:
        return False
    code = filters.get("code")
    if code and item.get("code", item.get("reason")) != code:
        return False
    wl = filters.get("workload")
    if wl and wl not in str(item.get("workload_id", (item.get("target") or {}).get("id", ""))):
        return False
    wf = filters.get("workflow")
    return not (wf and item.get("workflow_id") != wf)
