"""Input events the harness makes itself: latency probes and mid-flight sessions (P3, P5, P6).

Everything is built as plain dicts and serialized with orjson (no validation on the hot path);
the shapes follow the contract (docs/contract.md), and the unit of each builder is one workflow.

* A **probe** is a workflow whose initiator calls a tool its grant does not list: the worker
  decides `tool_not_granted` on arrival (no grace period to wait for, whatever the watermark)
  and revokes the probe's own token, so the revocation's target id names the probe.
* A **state session** is a benign workflow caught mid-flight: started, one delegation, a call by
  the initiator and a call by the delegatee under the delegation (two tokens). Its completion and
  a `check` call (not granted: decided at once only if the session is known) come later.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

ISSUER = "https://sts.acme.example"
PROBE_AGENT = "spiffe://acme.example/agent/bench-probe"
_INITIATORS = tuple(
    f"spiffe://acme.example/agent/{name}"
    for name in ("planner", "researcher", "coder", "billing-bot", "sre-oncall", "etl-runner")
)
_DELEGATEES = tuple(
    f"spiffe://acme.example/agent/{name}"
    for name in ("summarizer", "retriever", "reviewer", "notifier", "crm-writer")
)
_SCOPES = ["crm:read", "docs:read", "llm:invoke", "mail:send"]
_TOOLS = ["crm.search", "docs.fetch", "llm.complete", "mail.send"]
_DESTINATIONS = ["crm.internal", "docs.internal", "llm.internal"]
_DUMPS = orjson.dumps


def iso(t: float) -> str:
    """An RFC 3339 UTC timestamp with milliseconds, as the fleet writes them."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_time(line: bytes) -> float:
    """The `occurred_at` of one JSON line, as epoch seconds."""
    return datetime.fromisoformat(orjson.loads(line)["occurred_at"]).timestamp()


def _cred(token_id: str, subject: str, scopes: list[str], issued: float, expires: float) -> dict:
    return {
        "token_id": token_id,
        "issuer": ISSUER,
        "subject": subject,
        "scopes": scopes,
        "issued_at": iso(issued),
        "expires_at": iso(expires),
    }


def _event(kind: str, event_id: str, t: float, wf: str, agent: str, cred: dict | None) -> dict:
    doc = {
        "schema_version": 1,
        "event_type": kind,
        "event_id": event_id,
        "occurred_at": iso(t),
        "workflow_id": wf,
        "agent": {"workload_id": agent},
    }
    if cred is not None:
        doc["credential"] = cred
    return doc


def _grant(task: str, not_after: float, tools: list[str]) -> dict:
    return {
        "task_type": task,
        "purpose": "benchmark workload",
        "scopes": _SCOPES,
        "tools": tools,
        "max_sensitivity": "confidential",
        "destinations": _DESTINATIONS,
        "not_after": iso(not_after),
        "autonomy": "medium",
    }


def _action(tool: str, destination: str = "crm.internal") -> dict:
    return {
        "tool": tool,
        "operation": "read",
        "resource": "crm://accounts/42",
        "destination": destination,
        "data_sensitivity": "internal",
    }


# -- probes (P3) -----------------------------------------------------------------------------


def probe_token(probe_id: str) -> str:
    """The token a probe presents, and so the id its revocation targets."""
    return f"jti-probe-{probe_id}"


def probe(probe_id: str, t: float, live_until: float) -> tuple[bytes, bytes, bytes]:
    """A probe workflow: `(key, workflow.started, violating tool_call.intent)`.

    ``t`` is its event time (the stream's, so the probe fits the worker's watermark);
    ``live_until`` (wall-clock epoch seconds, later than now) is when its token and grant end,
    so the revocation is still live when gateways receive it.
    """
    wf = f"wf-probe-{probe_id}"
    cred = _cred(probe_token(probe_id), PROBE_AGENT, ["crm:read"], t - 60, live_until)
    started = _event("workflow.started", f"probe-{probe_id}-s", t, wf, PROBE_AGENT, cred)
    started["grant"] = {**_grant("bench_probe", live_until, ["crm.search"]), "scopes": ["crm:read"]}
    call = _event("tool_call.intent", f"probe-{probe_id}-c", t + 0.001, wf, PROBE_AGENT, cred)
    call["action"] = _action("crm.bulk_export")  # not in the grant's tools: tool_not_granted
    return wf.encode(), _DUMPS(started), _DUMPS(call)


# -- state sessions (P5, P6) -----------------------------------------------------------------


class StateSessions:
    """Mid-flight benign workflows ``0..n-1`` of one tag, dated from ``base`` (epoch seconds).

    Event times: session ``i`` starts at ``base + i % 600`` and acts over the next 3 s; its
    tokens and delegation expire at ``base + 100 min``, its grant at ``base + 110 min``. A check
    call is dated ``+20 min`` and the completion ``+30 min``. ``base`` must lie far enough in
    the past that every one of these times is (the worker dead-letters events dated more than
    5 minutes ahead of its clock).
    """

    EVENTS_PER_SESSION = 4

    def __init__(self, tag: str, n: int, base: float) -> None:
        self.tag, self.n, self.base = tag, n, base
        self.expires = base + 6000
        self.not_after = base + 6600

    def workflow_id(self, i: int) -> str:
        return f"wf-{self.tag}-{i:07d}"

    def _who(self, i: int) -> tuple[str, str, float]:
        return (
            _INITIATORS[i % len(_INITIATORS)],
            _DELEGATEES[i % len(_DELEGATEES)],
            self.base + i % 600,
        )

    def _token(self, i: int, who: str, scopes: list[str], t0: float) -> dict:
        return _cred(f"jti-{self.tag}-{i:07d}-{who}", "", scopes, t0 - 30, self.expires)

    def active(self, i: int) -> list[tuple[bytes, bytes]]:
        """The four events of session ``i`` so far: started, delegation, two calls."""
        wf = self.workflow_id(i)
        a, b, t0 = self._who(i)
        tok_a = {**self._token(i, "a", _SCOPES, t0), "subject": a}
        tok_b = {**self._token(i, "b", _SCOPES[:2], t0), "subject": b}
        started = _event("workflow.started", f"{wf}-s", t0, wf, a, tok_a)
        started["grant"] = _grant("bench_state", self.not_after, _TOOLS)
        dlg = _event("delegation.granted", f"{wf}-d", t0 + 1, wf, a, tok_a)
        dlg["delegation"] = {
            "delegation_id": f"dlg-{self.tag}-{i:07d}",
            "to_workload_id": b,
            "scopes": _SCOPES[:2],
            "expires_at": iso(self.expires),
        }
        call_a = _event("tool_call.intent", f"{wf}-c1", t0 + 2, wf, a, tok_a)
        call_a["action"] = _action("llm.complete", "llm.internal")
        call_b = _event("tool_call.intent", f"{wf}-c2", t0 + 3, wf, b, tok_b)
        call_b["action"] = _action("crm.search")
        call_b["delegation_id"] = f"dlg-{self.tag}-{i:07d}"
        key = wf.encode()
        return [(key, _DUMPS(e)) for e in (started, dlg, call_a, call_b)]

    def check(self, i: int) -> tuple[bytes, bytes, str]:
        """A call by the initiator with a tool outside the grant: `(key, value, event_id)`.

        With the session known it is decided on arrival (deny, `tool_not_granted`); without it
        the worker would wait a grace period for the workflow's start, then allow it and report
        `unknown_workflow`.
        """
        wf = self.workflow_id(i)
        a, _, t0 = self._who(i)
        event_id = f"{wf}-check"
        call = _event(
            "tool_call.intent",
            event_id,
            t0 + 1200,
            wf,
            a,
            {**self._token(i, "a", _SCOPES, t0), "subject": a},
        )
        call["action"] = _action("crm.bulk_export")
        return wf.encode(), _DUMPS(call), event_id

    def completed(self, i: int) -> tuple[bytes, bytes]:
        """`workflow.completed` of session ``i``."""
        wf = self.workflow_id(i)
        a, _, t0 = self._who(i)
        done = _event(
            "workflow.completed",
            f"{wf}-done",
            t0 + 1800,
            wf,
            a,
            {**self._token(i, "a", _SCOPES, t0), "subject": a},
        )
        done["outcome"] = "success"
        return wf.encode(), _DUMPS(done)


def clock_ticks(tag: str, t: float, count: int = 256) -> list[tuple[bytes, bytes]]:
    """`count` one-event workflows dated ``t``, on distinct keys (so on every partition): they
    move the worker's event time to ``t`` everywhere, which lets retention run."""
    out = []
    for i in range(count):
        wf = f"wf-{tag}-{i:04d}"
        agent = _INITIATORS[i % len(_INITIATORS)]
        started = _event(
            "workflow.started",
            f"{wf}-s",
            t,
            wf,
            agent,
            _cred(f"jti-{tag}-{i:04d}", agent, _SCOPES, t - 30, t + 600),
        )
        started["grant"] = _grant("bench_tick", t + 900, _TOOLS)
        out.append((wf.encode(), _DUMPS(started)))
    return out
