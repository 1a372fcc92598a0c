"""A small fleet with a source registry, for the attack tests: keys, sources.yaml, signing.

Workloads (tests/builders.py names): ``victim`` and ``helper`` (the victim's delegatee) run
under the source ``victim-agents``; ``attacker`` under ``attacker-agents`` (an agent class that
may not start workflows); ``orch`` under ``orchestrator`` (starts and completes any workflow).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from builders import wl
from tether.core import Context, DetectionConfig, Monitor
from tether.replay import Replayer
from tether.security.gate import SourceGate
from tether.security.keys import write_jwks
from tether.security.proof import SourceKey
from tether.security.sources import load_registry

SOURCES: dict[str, dict[str, Any]] = {
    "orchestrator": {"workloads": [wl("orch")], "start": True, "complete": "any"},
    "victim-agents": {"workloads": [wl("victim"), wl("helper")], "start": True},
    "attacker-agents": {"workloads": [wl("attacker")]},
}


@dataclass
class World:
    """Keys and a registry on disk; ``sign`` a builder event as a source would."""

    root: Path
    mode: str = "enforce"
    keys: dict[str, SourceKey] = field(default_factory=dict)
    sources: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(SOURCES))

    def __post_init__(self) -> None:
        lines = [f"mode: {self.mode}", "sources:"]
        for name, spec in self.sources.items():
            key = SourceKey.generate(name)
            self.keys[name] = key
            write_jwks(self.root / f"{name}.jwks.json", [key.jwk()])
            lines.append(f"  - name: {name}")
            lines.append(f"    keys: {name}.jwks.json")
            for k, v in spec.items():
                lines.append(f"    {k}: {orjson.dumps(v).decode()}")
        self.registry_path.write_text("\n".join(lines) + "\n")

    @property
    def registry_path(self) -> Path:
        return self.root / "sources.yaml"

    def sign(self, source: str, event: dict[str, Any]) -> bytes:
        """The record ``source`` would emit for ``event``."""
        return self.keys[source].sign(orjson.dumps(event))

    def gate(self) -> SourceGate:
        return SourceGate(load_registry(self.registry_path), None, DetectionConfig(grace_s=5))

    def replay(self, lines: Iterable[bytes]) -> Outputs:
        """Run ``lines`` through the core with this registry, as `tether replay --sources`."""
        buf = io.BytesIO()
        mon = Monitor(Context(DetectionConfig(grace_s=5)))
        Replayer(mon, buf.write, decisions=True, gate=self.gate()).run(lines)
        return Outputs([orjson.loads(x) for x in buf.getvalue().splitlines()])


def plain_replay(lines: Iterable[bytes]) -> Outputs:
    """The same without a registry (today's behaviour)."""
    buf = io.BytesIO()
    mon = Monitor(Context(DetectionConfig(grace_s=5)))
    Replayer(mon, buf.write, decisions=True).run(lines)
    return Outputs([orjson.loads(x) for x in buf.getvalue().splitlines()])


@dataclass
class Outputs:
    """What a replay wrote, with the questions the attack tests ask of it."""

    records: list[dict[str, Any]]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["kind"] == kind]

    @property
    def findings(self) -> list[dict[str, Any]]:
        return self.of("finding")

    @property
    def revocations(self) -> list[dict[str, Any]]:
        return self.of("revocation")

    @property
    def deadletters(self) -> list[dict[str, Any]]:
        return self.of("deadletter")

    def harmed(self, *, workloads: set[str], tokens: set[str], workflows: set[str]) -> list[Any]:
        """Revocations (and findings with a response) that fall on the victim."""
        hits: list[Any] = []
        for r in self.revocations:
            kind, ident = r["target"]["kind"], r["target"]["id"]
            if (
                (kind == "workload" and ident in workloads)
                or (kind == "token" and ident in tokens)
                or (kind == "workflow" and ident in workflows)
            ):
                hits.append(r)
        return hits

    def against(self, workload: str) -> list[dict[str, Any]]:
        return [f for f in self.findings if f["workload_id"] == workload]

    def reasons(self) -> list[str]:
        return [d["reason"] for d in self.deadletters]
