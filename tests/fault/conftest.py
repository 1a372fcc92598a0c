"""Fault-injection tests: markers, the broker fixtures, soak selection and the figures table.

Every test here is marked ``integration`` (it needs Kafka and Redis, like tests/integration) and
``fault``. The long variants are also marked ``soak`` and are skipped unless selected with
``-m soak`` (``make soak``) or ``TETHER_SOAK=1``, so ``make test`` runs only the fast ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# tests/integration (pipeline.py) and tests/ (integration.conftest, the broker fixtures) are on
# the path through pyproject's pytest `pythonpath`.
from figures import FIGURE_COLUMNS, RESULTS
from scenario import VARIANTS, Scenario

from integration.conftest import kafka_bootstrap, redis_url

_HERE = Path(__file__).resolve().parent

__all__ = ["kafka_bootstrap", "redis_url"]


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    """The scenario's size: fast (``make test``) or soak (``make soak``)."""
    return str(request.param)


@pytest.fixture
def open_scenario(
    variant: str, kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> Iterator[Callable[[str], Scenario]]:
    """Opens scenarios by name on the shared broker and Redis; closes them after the test."""
    opened: list[Scenario] = []

    def open_(name: str) -> Scenario:
        scenario = Scenario(name, variant, kafka_bootstrap, redis_url, tmp_path)
        opened.append(scenario)
        return scenario

    yield open_
    for scenario in opened:
        scenario.close()


@pytest.fixture
def run(request: pytest.FixtureRequest, open_scenario: Callable[[str], Scenario]) -> Scenario:
    """The test module's ``SCENARIO`` on the shared broker and Redis (modules that need private
    services override this fixture)."""
    return open_scenario(request.module.SCENARIO)


def _soak_selected(config: pytest.Config) -> bool:
    return "soak" in (config.getoption("markexpr") or "") or os.environ.get("TETHER_SOAK") == "1"


def _faults_net_selected(config: pytest.Config) -> bool:
    """The network and disk faults (issue 24) run only when asked for: ``make faults-net``."""
    markexpr = config.getoption("markexpr") or ""
    return "faults_net" in markexpr or os.environ.get("TETHER_FAULTS_NET") == "1"


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m deselection sees the items
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    soak, net = _soak_selected(config), _faults_net_selected(config)
    skip = pytest.mark.skip(reason="soak variant: run with `make soak` (pytest -m soak)")
    skip_net = pytest.mark.skip(reason="network/disk fault: run with `make faults-net`")
    for item in items:
        if _HERE not in Path(item.path).resolve().parents:
            continue
        item.add_marker(pytest.mark.integration)
        item.add_marker(pytest.mark.fault)
        if item.get_closest_marker("soak") is not None and not soak:
            item.add_marker(skip)
        if item.get_closest_marker("faults_net") is not None and not net:
            item.add_marker(skip_net)


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
