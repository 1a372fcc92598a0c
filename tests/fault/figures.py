"""The figures every fault scenario prints and writes (``tests/fault/out/<scenario>-<variant>.json``)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "out"
RESULTS: list[dict[str, Any]] = []  # this session's figures, printed by conftest.py


@dataclass
class Figures:
    """What every fault scenario prints and writes."""

    scenario: str
    variant: str
    events_in: int = 0
    revocations_expected: int = 0
    revocations_seen: int = 0
    lost: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def machine() -> dict[str, Any]:
    """Notes on where the figures were measured."""
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "load_avg_1_5_15": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


FIGURE_COLUMNS = (
    ("events_in", "events in"),
    ("revocations_expected", "revocations expected"),
    ("revocations_seen", "revocations seen"),
    ("lost", "lost"),
    ("duplicates", "duplicates"),
    ("dead_letters", "dead letters"),
)


def format_figures(doc: dict[str, Any]) -> str:
    """One scenario's figures on a few lines."""
    head = f"[fault] {doc['scenario']} ({doc['variant']}, {doc['seconds']}s): "
    main = ", ".join(f"{label} {doc[key]}" for key, label in FIGURE_COLUMNS)
    extra = ", ".join(f"{k} {v}" for k, v in sorted(doc["extra"].items()))
    return f"{head}{main}\n[fault]   {extra}"
