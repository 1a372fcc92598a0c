"""The demo's telemetry sources: its fleet signs every record, and tether runs in ``enforce``.

The fleet reports through one gateway (``fleet-gateway``: it speaks for the fleet's trust
domain, checks the tokens it reports, and may start and complete workflows). Its HS256 key and
the registry live in a temporary directory for the length of the run. A few forged records are
injected besides the malformed ones: an impersonation with no proof, and one signed by a source
the registry does not know. Both must end as ``unauthenticated_source`` dead letters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from tether.core.config import DetectionConfig
from tether.demo.catalog import TRUST_DOMAIN
from tether.security.gate import SourceGate
from tether.security.keys import write_jwks
from tether.security.proof import SourceKey
from tether.security.sources import load_registry

FLEET_SOURCE = "fleet-gateway"
IMPOSTOR = f"spiffe://{TRUST_DOMAIN}/agent/planner"


def fleet_sources(directory: Path, cfg: DetectionConfig) -> tuple[SourceKey, SourceGate]:
    """The fleet's signing key and the gate that enforces its registry (files in ``directory``)."""
    key = SourceKey.generate(FLEET_SOURCE)
    write_jwks(directory / f"{FLEET_SOURCE}.jwks.json", [key.jwk()])
    registry = directory / "sources.yaml"
    registry.write_text(
        "mode: enforce\n"
        "sources:\n"
        f"  - name: {FLEET_SOURCE}\n"
        f"    keys: {FLEET_SOURCE}.jwks.json\n"
        f'    workloads: ["spiffe://{TRUST_DOMAIN}/*"]\n'
        "    start: true\n"
        "    complete: any\n"
        "    trusted_credentials: true\n"
    )
    return key, SourceGate(load_registry(registry), None, cfg)


def forged_lines(event: dict[str, Any]) -> list[bytes]:
    """Two forgeries of a fleet event: unsigned as another workload, and signed by a stranger."""
    unsigned = dict(event, event_id=f"{event['event_id']}-forged", agent={"workload_id": IMPOSTOR})
    stranger = SourceKey.generate("rogue-agent")
    signed = dict(event, event_id=f"{event['event_id']}-rogue")
    return [orjson.dumps(unsigned), stranger.sign(orjson.dumps(signed))]
