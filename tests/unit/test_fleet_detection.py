"""The synthetic fleet through the real core and the default Cedar pack: every injected attack is
found with the code the detection table names, benign workflows raise nothing at all, and every
malformed line is dead-lettered."""

from __future__ import annotations

from collections import defaultdict

import pytest

from tether.core import Context, DetectionConfig, Monitor
from tether.demo.fleet import FleetConfig, ground_truth, iter_json_lines
from tether.demo.malformed import malformed_lines
from tether.models.codec import Rejected, decode_event
from tether.policy.bind import CedarCallPolicy

POLICY = CedarCallPolicy.from_dir(None)


def detect(cfg: FleetConfig) -> dict[str, set[str]]:
    mon = Monitor(Context(DetectionConfig(emit_decisions=False), POLICY))
    found: dict[str, set[str]] = defaultdict(set)
    for line in iter_json_lines(cfg):
        event = decode_event(line)
        assert not isinstance(event, Rejected), event
        for f in mon.process(event).findings:
            found[f.workflow_id].add(f.code)
    for f in mon.flush().findings:
        found[f.workflow_id].add(f.code)
    return found


@pytest.mark.parametrize(("seed", "disorder"), [(7, 2.0), (3, 4.9), (5, 4.9), (11, 0.0)])
def test_fleet_findings_equal_ground_truth(seed: int, disorder: float) -> None:
    cfg = FleetConfig(
        seed=seed, workflows=600, attack_rate=0.3, disorder=disorder, duplicate_rate=0.02
    )
    truth = ground_truth(cfg)
    found = detect(cfg)
    benign_noise = {wf: codes for wf, codes in found.items() if not truth.get(wf)}
    assert benign_noise == {}, "benign workflows must raise nothing"
    wrong = {
        wf: (sorted(codes), sorted(found.get(wf, ())))
        for wf, codes in truth.items()
        if codes and found.get(wf, set()) != codes
    }
    assert wrong == {}, "attacks found with exactly the codes the table names"
    assert sum(1 for codes in truth.values() if codes) > 100


def test_malformed_lines_are_all_dead_letters() -> None:
    lines = malformed_lines(7, 500)
    assert all(isinstance(decode_event(line), Rejected) for line in lines)
