"""The harness's table: each figure beside its target with a verdict, and a quick run's verdicts
marked as such (its sizes, steps and rate search are smaller than the targets are defined on)."""

from __future__ import annotations

from typing import Any

import bench_report  # benchmarks/ is on the path through pyproject's pytest `pythonpath`
import pytest


def _results(*, quick: bool, p1_rate: int) -> dict[str, Any]:
    return {
        "run": {"quick": quick},
        "P1": {"events": 1_000_000, "events_per_s": p1_rate, "events_per_cpu_s": p1_rate},
    }


@pytest.mark.parametrize(
    ("quick", "rate", "status"),
    [
        (False, 58_000, "PASS"),
        (False, 33_000, "FAIL"),
        (True, 58_000, "PASS (quick)"),
        (True, 33_000, "FAIL (quick)"),
    ],
)
def test_p1_verdict(quick: bool, rate: int, status: str) -> None:
    rows = bench_report.rows(_results(quick=quick, p1_rate=rate))
    verdicts = [r.status for r in rows if r.figure == "P1" and r.target]
    assert verdicts == [status]


def test_info_rows_stay_info_in_a_quick_run() -> None:
    rows = bench_report.rows(_results(quick=True, p1_rate=58_000))
    assert [r.status for r in rows if not r.target] == ["info"]
    assert "PASS (quick)" in bench_report.table(rows)
