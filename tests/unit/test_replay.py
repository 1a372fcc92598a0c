"""`tether replay`: lines in, one JSON object per line out; nothing lost, nothing crashes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from builders import call, completed, delegate, started
from tether.cli import main
from tether.core import Context, DetectionConfig, Monitor
from tether.replay import Replayer


def jsonl(events: list[dict[str, Any]], extra: bytes = b"") -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events) + extra


SCENARIO = [
    started("wf-1", "planner", "tok-p"),
    delegate("wf-1", "planner", "researcher", "tok-p"),
    call("wf-1", "researcher", "tok-r", t=2),
    call("wf-1", "summarizer", "tok-s", t=3),
    completed("wf-1", "planner", "tok-p", t=10),
]


def replay_bytes(data: bytes, **kw: Any) -> list[dict[str, Any]]:
    out = io.BytesIO()
    rep = Replayer(Monitor(Context(DetectionConfig())), out.write, **kw)
    rep.run(io.BytesIO(data))
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_every_line_is_a_kinded_json_object() -> None:
    records = replay_bytes(jsonl(SCENARIO, b"\n\nnot json\n"), decisions=True)
    kinds = {r["kind"] for r in records}
    assert kinds == {"finding", "revocation", "decision", "deadletter"}
    (dead,) = [r for r in records if r["kind"] == "deadletter"]
    assert dead["source"]["line"] == 8
    assert dead["reason"] == "invalid_json"
    assert [r["code"] for r in records if r["kind"] == "finding"] == ["undelegated_actor"]


def test_same_input_same_output_bytes() -> None:
    data = jsonl(SCENARIO, b"{oops\n")
    assert replay_bytes(data) == replay_bytes(data)


def test_pending_checks_decided_at_end_of_input() -> None:
    records = replay_bytes(jsonl([started("wf-1", "planner", "t"), call("wf-1", "x", "t2", t=1)]))
    assert [r["code"] for r in records if r["kind"] == "finding"] == ["undelegated_actor"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=300),
            st.sampled_from([jsonl([e]) for e in SCENARIO]),
            st.builds(
                lambda e, cut: jsonl([e])[:cut], st.sampled_from(SCENARIO), st.integers(0, 400)
            ),
        ),
        max_size=20,
    )
)
def test_no_input_crashes_replay(chunks: list[bytes]) -> None:
    data = b"\n".join(chunks)
    records = replay_bytes(data)
    lines = [ln for ln in data.split(b"\n") if ln.strip()]
    dead = [r for r in records if r["kind"] == "deadletter"]
    assert len(dead) <= len(lines)


def test_cli_replay_file_and_summary(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(jsonl(SCENARIO, b"[]\n"))
    result = CliRunner().invoke(main, ["replay", str(path)])
    assert result.exit_code == 0, result.output
    kinds = [orjson.loads(ln)["kind"] for ln in result.stdout.splitlines()]
    assert kinds.count("deadletter") == 1
    assert "undelegated_actor" in result.stderr


def test_cli_replay_stdin_quiet() -> None:
    result = CliRunner().invoke(main, ["replay", "-", "-q", "--no-policy"], input=jsonl(SCENARIO))
    assert result.exit_code == 0
    assert result.stderr == ""


def test_cli_replay_missing_file_is_a_clear_error() -> None:
    result = CliRunner().invoke(main, ["replay", "/nonexistent/events.jsonl"])
    assert result.exit_code != 0
    assert "cannot read" in result.output or "does not exist" in result.output


def test_a_byte_order_mark_and_crlf_line_ends_are_tolerated() -> None:
    data = b"\xef\xbb\xbf" + jsonl(SCENARIO).replace(b"\n", b"\r\n")
    records = replay_bytes(data)
    assert not [r for r in records if r["kind"] == "deadletter"]
    assert [r["code"] for r in records if r["kind"] == "finding"] == ["undelegated_actor"]
