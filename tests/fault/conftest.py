"""Fault-injection tests: markers, the broker fixtures, soak selection and the figures table.

Every test here is marked ``integration`` (it needs Kafka and Redis, like tests/integration) and
``fault``. The long variants are also marked ``soak`` and are skipped unless selected with
``-m soak`` (``make soak``) or ``TETHER_SOAK=1``, so ``make test`` runs only the fast ones.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent / "integration"))  # pipeline.py, the broker fixtures

from figures import FIGURE_COLUMNS, RESULTS  # noqa: E402

from integration.conftest import kafka_bootstrap, redis_url  # noqa: E402

__all__ = ["kafka_bootstrap", "redis_url"]


def _soak_selected(config: pytest.Config) -> bool:
    return "soak" in (config.getoption("markexpr") or "") or os.environ.get("TETHER_SOAK") == "1"


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m deselection sees the items
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    soak = _soak_selected(config)
    skip = pytest.mark.skip(reason="soak variant: run with `make soak` (pytest -m soak)")
    for item in items:
        if _HERE not in Path(item.path).resolve().parents:
            continue
        item.add_marker(pytest.mark.integration)
        item.add_marker(pytest.mark.fault)
        if item.get_closest_marker("soak") is not None and not soak:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures of every fault scenario that ran, as one table."""
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("fault injection figures (tests/fault/out/*.json)")
    head = ["scenario", "variant", "seconds", *(label for _, label in FIGURE_COLUMNS)]
    rows = [
        [r["scenario"], r["variant"], str(r["seconds"]), *(str(r[k]) for k, _ in FIGURE_COLUMNS)]
        for r in RESULTS
    ]
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        tr.write_line("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    for r in RESULTS:
        extra = ", ".join(f"{k}={v}" for k, v in sorted(r["extra"].items()))
        tr.write_line(f"  {r['scenario']}-{r['variant']}: {extra}")
