"""What each kind of sink receives: pure functions of a finding (or a storm summary)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tether.core.rules import rule_doc
from tether.models.outputs import Finding
from tether.ocsf import detection_finding
from tether.soc.alert_config import SinkConfig

_EMOJI = {"critical": ":red_circle:", "high": ":large_orange_circle:", "medium": ":warning:"}


@dataclass(slots=True)
class Summary:
    """Findings held back by a sink's rate limit, told in one message."""

    count: int = 0
    by_code: dict[str, int] = field(default_factory=dict)
    by_severity: dict[str, int] = field(default_factory=dict)
    workflows: list[str] = field(default_factory=list)  # a sample, not all of them
    first_id: str | None = None
    last_id: str | None = None

    def add(self, f: Finding) -> None:
        """Count one more finding held back."""
        self.count += 1
        self.by_code[f.code] = self.by_code.get(f.code, 0) + 1
        self.by_severity[f.severity] = self.by_severity.get(f.severity, 0) + 1
        if len(self.workflows) < 10 and f.workflow_id not in self.workflows:  # noqa: PLR2004
            self.workflows.append(f.workflow_id)
        self.first_id = self.first_id or f.finding_id
        self.last_id = f.finding_id

    def doc(self) -> dict[str, Any]:
        """The summary as JSON."""
        return {
            "kind": "finding_summary",
            "count": self.count,
            "by_code": self.by_code,
            "by_severity": self.by_severity,
            "workflows_sample": self.workflows,
            "first_finding_id": self.first_id,
            "last_finding_id": self.last_id,
        }

    def text(self) -> str:
        """The summary as one chat line."""
        codes = ", ".join(f"{c} x{n}" for c, n in sorted(self.by_code.items()))
        workflows = ", ".join(slack_escape(w) for w in self.workflows)
        return (
            f":rotating_light: tether: {self.count} more findings held back by the rate limit "
            f"({slack_escape(codes)}); workflows include {workflows}"
        )


def slack_escape(text: str) -> str:
    """Text an agent chose, made inert in Slack mrkdwn: ``&``, ``<`` and ``>`` escaped as Slack
    asks, so a workload id or destination cannot mention ``<!channel>``, ping a user
    (``<@U123>``) or hide a link (``<https://evil|docs>``); backticks dropped so that it cannot
    leave its code span."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "'")


def slack_text(f: Finding) -> str:
    """The finding as a Slack message (mrkdwn); every value from the finding is escaped."""
    doc = rule_doc(f.code)
    e = slack_escape
    lines = [
        f"{_EMOJI.get(f.severity, ':information_source:')} *[{f.severity.upper()}] "
        f"{e(f.title or doc.title)}* — {e(f.summary)}",
        f"workflow `{e(f.workflow_id)}` · workload `{e(f.workload_id)}`"
        + (f" · tool `{e(f.tool)}` {e(f.operation or '')}" if f.tool else "")
        + (f" → `{e(f.destination)}`" if f.destination else ""),
    ]
    if f.delegation_chain:
        lines.append("chain: " + " → ".join(f"`{e(w)}`" for w in f.delegation_chain))
    remediation = f.remediation or doc.remediation
    if remediation:
        lines.append(f"_What to do:_ {remediation}")
    lines.append(f"finding `{e(f.finding_id)}` · response {', '.join(f.response)}")
    return "\n".join(lines)


def finding_body(sink: SinkConfig, f: Finding) -> dict[str, Any]:
    """The JSON body a sink receives for one finding."""
    event: dict[str, Any] = (
        detection_finding(f)
        if sink.format == "ocsf"
        else f.model_dump(mode="json", exclude_none=True)
    )
    if sink.type == "slack":
        return {"text": slack_text(f)}
    if sink.type == "splunk_hec":
        return {
            "time": f.detected_at.timestamp(),
            "host": "tether",
            "source": "tether",
            "sourcetype": "ocsf:detection_finding" if sink.format == "ocsf" else "tether:finding",
            "event": event,
        }
    return event


def summary_body(sink: SinkConfig, s: Summary, at: float) -> dict[str, Any]:
    """The JSON body a sink receives for a storm summary."""
    if sink.type == "slack":
        return {"text": s.text()}
    if sink.type == "splunk_hec":
        return {
            "time": at,
            "host": "tether",
            "source": "tether",
            "sourcetype": "tether:finding_summary",
            "event": s.doc(),
        }
    return s.doc()
