"""`tether demo`: the synthetic fleet through the real monitor catches every injected attack,
raises nothing on benign workflows, dead-letters the malformed lines, and prints plain text
when it is not on a terminal."""

from __future__ import annotations

import os
import re
import signal
import threading
from datetime import UTC, datetime
from io import StringIO

import orjson
import pytest
from click.testing import CliRunner
from rich.console import Console

from tether.cli import main
from tether.demo.board import Board
from tether.demo.fleet import FleetConfig, generate
from tether.demo.kinds import AttackKind
from tether.demo.run import Demo, run_demo
from tether.demo.scorecard import percentile, score
from tether.demo.view import render
from tether.settings import Settings

ANSI = re.compile(r"\x1b\[|\x1b\]|\x1b[()][0-9A-Za-z]")


@pytest.fixture(scope="module")
def demo_output() -> tuple[int, str]:
    out = StringIO()
    code = run_demo(workflows=120, seed=7, attack_rate=0.3, rate=0, live=False, out=out)
    return code, out.getvalue()


def test_demo_catches_every_attack(demo_output):
    code, text = demo_output
    assert code == 0, text[-3000:]
    assert "attack scorecard" in text
    assert "benign workflows with findings: 0" in text
    assert re.search(r"^PASS: (\d+) of \1 injected attacks caught", text, re.M)
    card = text.split("attack scorecard", 1)[1]
    rows = {
        m.group(1): (int(m.group(2)), int(m.group(3)))
        for m in re.finditer(r"^  (\w+) +(\d+) +(\d+)   \w", card, re.M)
    }
    assert set(rows) == set(AttackKind), "every attack kind is injected at this rate"
    assert all(injected == caught > 0 for injected, caught in rows.values()), rows
    total = re.search(r"all attacks\s+(\d+)\s+(\d+)", text)
    assert total is not None
    assert total.group(1) == total.group(2)


def test_demo_shows_findings_revocations_dead_letters_and_latency(demo_output):
    _, text = demo_output
    assert re.search(r"^\S+  finding +CRITICAL +credential_reuse ", text, re.M)
    assert re.search(r"^\S+  revocation +CRITICAL +workload:\S+ +identity_mismatch ", text, re.M)
    assert re.search(r"^\S+  deadletter ", text, re.M)
    dead = re.search(r"dead letters\s+(\d+):", text)
    assert dead is not None
    assert int(dead.group(1)) >= 3
    assert re.search(r"detection latency\s+p50 \S+ m?s\s+p99 \S+ m?s", text)
    assert re.search(r"processing latency\s+p50 [\d.]+ ms\s+p99 [\d.,]+ ms", text)


def test_plain_output_has_no_ansi_escapes(demo_output):
    _, text = demo_output
    assert "\x1b" not in text
    assert not ANSI.search(text)


def test_cli_demo_no_live_exits_zero():
    result = CliRunner().invoke(
        main, ["demo", "--workflows", "40", "--attack-rate", "0.5", "--rate", "0", "--no-live"]
    )
    assert result.exit_code == 0, result.output[-2000:]
    assert "PASS: " in result.output
    assert "\x1b" not in result.output


def test_empty_fleet_still_summarises():
    out = StringIO()
    assert run_demo(workflows=0, seed=1, attack_rate=0.0, rate=0, live=True, out=out) == 0
    assert "attack scorecard" in out.getvalue()


def test_scorecard_fails_on_a_miss_and_on_benign_noise():
    truth = {
        "wf-a": frozenset({"credential_reuse", "identity_mismatch"}),
        "wf-b": frozenset(),
        "wf-c": frozenset({"scope_escalation"}),
    }
    card = score(truth, {"wf-a": {"credential_reuse"}, "wf-c": {"scope_escalation"}})
    assert (card.injected, card.caught, card.passed) == (2, 1, False)
    stolen = next(k for k in card.kinds if k.kind == "stolen_token_replay")
    assert stolen.missed == ("wf-a",)
    noisy = score(truth, {**{k: set(v) for k, v in truth.items()}, "wf-b": {"tool_not_granted"}})
    assert noisy.caught == noisy.injected == 2
    assert not noisy.passed
    assert set(noisy.benign) == {"wf-b"}


def test_interrupted_scorecard_scores_only_decided_attacks():
    truth = {"wf-a": frozenset({"scope_escalation"}), "wf-b": frozenset({"tool_not_granted"})}
    card = score(truth, {"wf-a": {"scope_escalation"}}, scored=lambda wf: wf == "wf-a")
    assert (card.injected, card.caught, card.passed) == (1, 1, True)


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0


@pytest.mark.parametrize(("width", "height"), [(100, 40), (80, 24), (160, 50)])
def test_live_frame_fits_the_terminal(width, height):
    cfg = FleetConfig(seed=7, workflows=120, attack_rate=0.3, start=datetime.now(UTC))
    board = Board("tether demo", 0, None)
    demo = Demo(board, None, Settings())
    for fe in generate(cfg):
        demo.feed(fe.arrival, orjson.dumps(fe.event), fe)
    demo.board.dead_letter("invalid_json", "not valid JSON", None)
    console = Console(width=width, height=height, record=True, file=StringIO(), force_terminal=True)
    console.print(render(board, width, height))
    lines = console.export_text().splitlines()
    assert len(lines) < height, "a frame taller than the terminal scrolls and flickers"
    assert max(len(line) for line in lines) <= width
    text = "\n".join(lines)
    for expected in ("latest findings", "latest revocations", "findings by code", "DEAD"):
        assert expected in text


def test_ctrl_c_ends_with_the_summary_so_far():
    out = StringIO()
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        code = run_demo(workflows=120, seed=7, attack_rate=0.3, rate=400, live=False, out=out)
    finally:
        timer.cancel()
    text = out.getvalue()
    assert code == 130, text[-2000:]
    assert "tether demo: summary (interrupted)" in text
    assert "benign workflows with findings: 0" in text
    assert "INTERRUPTED" in text
    total = re.search(r"all attacks\s+(\d+)\s+(\d+)", text)
    assert total is not None
    assert total.group(1) == total.group(2), "attacks that had time to be decided were caught"
