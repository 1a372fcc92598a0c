"""`tether demo --otel`: the demo fleet as OTel spans, every attack caught, nothing benign flagged."""

from __future__ import annotations

import pytest

from tether.otel.demo import run_otel_demo


@pytest.mark.parametrize("seed", [7, 11])
def test_every_attack_is_caught_when_the_fleet_arrives_as_spans(seed: int) -> None:
    lines: list[str] = []
    assert run_otel_demo(workflows=300, seed=seed, attack_rate=0.1, echo=lines.append) == 0, lines
    caught = next(line for line in lines if line.startswith("attacks caught"))
    assert "benign workflows with findings: 0" in caught
