"""Running scenarios through the in-memory monitor, for detector tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from builders import ORG, parse
from tether.core import Context, DetectionConfig, Monitor, Outbox
from tether.core.ports import CallPolicy


@dataclass
class Result:
    """Everything one scenario produced."""

    out: Outbox

    @property
    def codes(self) -> set[tuple[str, str]]:
        """(code, workflow_id) pairs."""
        return {(f.code, f.workflow_id) for f in self.out.findings}

    @property
    def code_set(self) -> set[str]:
        """Finding codes only."""
        return {f.code for f in self.out.findings}

    @property
    def revoked(self) -> set[tuple[str, str, str]]:
        """(target kind, target id shortened, reason)."""
        return {
            (r.target.kind, r.target.id.removeprefix(ORG), r.reason) for r in self.out.revocations
        }

    @property
    def finding_ids(self) -> frozenset[str]:
        """Ids of findings."""
        return frozenset(f.finding_id for f in self.out.findings)

    @property
    def revocation_ids(self) -> frozenset[str]:
        """Ids of revocations."""
        return frozenset(r.revocation_id for r in self.out.revocations)


def run(
    events: list[dict[str, Any]],
    cfg: DetectionConfig | None = None,
    policy: CallPolicy | None = None,
) -> Result:
    """Feed ``events`` in list order (arrival order), then flush."""
    ctx = (
        Context(cfg or DetectionConfig())
        if policy is None
        else Context(cfg or DetectionConfig(), policy)
    )
    mon = Monitor(ctx)
    out = Outbox()
    for raw in events:
        out.extend(mon.process(parse(raw)))
    out.extend(mon.flush())
    return Result(out)
