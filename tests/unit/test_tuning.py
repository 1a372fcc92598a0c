"""Tuning without code: every finding code's enabled, severity, response, shadow and scoped
exceptions, from the tuning file and the environment (docs/tuning.md)."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from test_detections import CASES

from builders import ORG, call, started
from scenarios import run
from tether.core import DetectionConfig, Outbox
from tether.core.codes import RULES
from tether.core.config import TuningException
from tether.core.context import FindingContext
from tether.core.violations import Violation, emit
from tether.models.events import Trust
from tether.settings import Settings
from tether.tuning import TuningError, TuningWatch, load_tuning

T0 = datetime(2026, 11, 28, 14, 0, tzinfo=UTC).timestamp()
WL = ORG + "exporter"
ALL_CODES = sorted(RULES)


def violation(
    code: str,
    *,
    workload: str = WL,
    tool: str = "crm.export",
    t: float = T0,
    wf: str = "nightly-7",
    trust: Trust | None = None,
) -> Violation:
    """A violation of ``code`` with every target its responses could need."""
    return Violation(
        code=code,
        key=(wf, workload, code),
        workflow_id=wf,
        workload_id=workload,
        event_time=t,
        evidence=("e1",),
        summary="test",
        token_id="tok-1",
        token_expires=t + 600,
        delegation_id="d-1",
        delegation_expires=t + 600,
        workflow_not_after=t + 900,
        trust=trust,
        context=FindingContext(tool=tool),
    )


def fire(v: Violation, cfg: DetectionConfig, stamp: float | None = None) -> Outbox:
    out = Outbox()
    emit(v, cfg, v.event_time if stamp is None else stamp, out)
    return out


def exception(**kw: Any) -> TuningException:
    values: dict[str, Any] = {
        "id": "ex-1",
        "workload": WL,
        "expires": "2026-12-31T00:00:00Z",
        "reason": "nightly export is approved (CHG-42)",
    }
    values.update(kw)
    return TuningException.model_validate(values)


# ---- per code, table-driven -------------------------------------------------------------


@pytest.mark.parametrize("code", ALL_CODES)
def test_severity_override_per_code(code: str) -> None:
    sev = "low" if RULES[code].severity != "low" else "critical"
    (f,) = fire(violation(code), DetectionConfig(severity={code: sev})).findings
    assert f.severity == sev


@pytest.mark.parametrize("code", ALL_CODES)
def test_response_override_per_code(code: str) -> None:
    out = fire(violation(code), DetectionConfig(response={code: ("quarantine_workload",)}))
    assert [(r.target.kind, r.target.id) for r in out.revocations] == [("workload", WL)]
    assert out.findings[0].response == ["quarantine_workload"]


@pytest.mark.parametrize("code", ALL_CODES)
def test_empty_response_is_alert_only(code: str) -> None:
    out = fire(violation(code), DetectionConfig(response={code: ()}))
    assert out.revocations == []
    assert out.findings[0].response == ["alert"]


@pytest.mark.parametrize("code", ALL_CODES)
def test_per_code_shadow(code: str) -> None:
    cfg = DetectionConfig(shadow_codes=frozenset({code}))
    out = fire(violation(code), cfg)
    assert out.revocations == []
    assert out.findings[0].shadow is True
    other = next(c for c in ALL_CODES if c != code and "alert" not in RULES[c].response)
    assert fire(violation(other), cfg).revocations, "another code's response is untouched"


@pytest.mark.parametrize("code", ALL_CODES)
def test_exception_suppresses_response_but_reports(code: str) -> None:
    cfg = DetectionConfig(exceptions=(exception(codes=[code]),), tuning_revision="sha256:abc")
    out = fire(violation(code), cfg)
    (f,) = out.findings
    assert out.revocations == []
    assert f.exception == "ex-1"
    assert f.tuning_revision == "sha256:abc"
    assert f.code == code


@pytest.mark.parametrize("code", ALL_CODES)
def test_expired_exception_no_longer_applies(code: str) -> None:
    cfg_resp = {code: ("revoke_token",)} if "alert" in RULES[code].response else {}
    cfg = DetectionConfig(
        response=cfg_resp, exceptions=(exception(codes=[code], expires="2026-11-28T13:59:59Z"),)
    )
    out = fire(violation(code), cfg)
    assert out.revocations, "expired at the event time: enforced"
    assert out.findings[0].exception is None
    # backdated event, but detected after the expiry: the exception does not apply either
    late = fire(violation(code, t=T0 - 3600), cfg, stamp=T0)
    assert late.revocations
    assert late.findings[0].exception is None


@pytest.mark.parametrize("code", sorted(set(RULES)))
def test_disabled_per_code(code: str) -> None:
    assert not DetectionConfig(disabled=frozenset({code})).enabled(code)
    assert DetectionConfig().enabled(code)


DETECTED = sorted({c for _, _, expected in CASES for c in expected})


@pytest.mark.parametrize("code", DETECTED)
def test_disabled_code_never_fires_end_to_end(code: str) -> None:
    events = next(ev for _, ev, expected in CASES if code in expected)
    assert code in run(events).code_set
    r = run(events, DetectionConfig(disabled=frozenset({code})))
    assert code not in r.code_set
    assert all(code not in d.findings for d in r.out.decisions)


# ---- exception scope: only authoritative fields, never broadened ------------------------


@pytest.mark.parametrize(
    ("name", "exc", "v"),
    [
        ("other workload", exception(), violation("tool_not_granted", workload=ORG + "evil")),
        (
            "prefix is a path prefix, not a string prefix",
            exception(workload=None, workload_prefix=ORG + "ci/"),
            violation("tool_not_granted", workload=ORG + "ci-evil/x"),
        ),
        ("other tool", exception(tool="crm.export"), violation("tool_not_granted", tool="shell")),
        (
            "no tool on the finding",
            exception(tool="crm.export"),
            violation("credential_reuse", tool=None),
        ),  # type: ignore[arg-type]
        (
            "workflow glob",
            exception(workflow="nightly-*"),
            violation("tool_not_granted", wf="adhoc-1"),
        ),
        ("other code", exception(codes=["tool_not_granted"]), violation("scope_escalation")),
        (
            "unauthenticated cause",
            exception(),
            violation("tool_not_granted", trust=Trust(source="s", authenticated=False)),
        ),
    ],
)
def test_exception_does_not_match(name: str, exc: TuningException, v: Violation) -> None:
    out = fire(v, DetectionConfig(exceptions=(exc,)))
    assert out.findings[0].exception is None
    assert out.revocations


def test_exception_matches_prefix_tool_glob_and_authenticated() -> None:
    exc = exception(
        workload=None, workload_prefix=ORG + "ci/", tool="crm.export", workflow="nightly-*"
    )
    v = violation(
        "tool_not_granted",
        workload=ORG + "ci/exporter",
        trust=Trust(source="gw", authenticated=True),
    )
    out = fire(v, DetectionConfig(exceptions=(exc,)))
    assert out.findings[0].exception == "ex-1"
    assert out.revocations == []


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"reason": ""}, "reason"),
        ({"expires": None}, "expires"),
        ({"expires": "2026-12-31T00:00:00"}, "timezone"),
        ({"workload": None}, "workload"),
        ({"workload": None, "workload_prefix": ORG + "ci"}, "end with '/'"),
        ({"workload": None, "workload_prefix": "spiffe://"}, "workload_prefix"),
        ({"codes": ["tool_not_grantd"]}, "tool_not_granted"),
        ({"tenant": "x"}, "tenant"),
    ],
)
def test_exception_validation(bad: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as err:
        exception(**bad)
    assert words in str(err.value)


def test_unknown_code_lists_known_codes() -> None:
    with pytest.raises(ValidationError) as err:
        DetectionConfig(shadow_codes=frozenset({"tool_not_grantd"}))
    assert "tool_not_granted" in str(err.value)
    assert "known" in str(err.value)


# ---- the tuning file ---------------------------------------------------------------------


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tuning.yaml"


def test_example_covers_every_code() -> None:
    cfg = load_tuning(EXAMPLE, DetectionConfig())
    import yaml

    doc = yaml.safe_load(EXAMPLE.read_text())
    assert set(doc["codes"]) == set(RULES)
    assert cfg.tuning_revision
    assert "sha256:" in cfg.tuning_revision
    assert cfg.exceptions


def write(tmp_path: Path, text: str, name: str = "tuning.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    p.chmod(0o644)  # whatever the umask: a group-writable tuning file is refused
    return p


FILE = """\
revision: r1
codes:
  tool_not_granted:
    severity: high
    response: [alert]
  unknown_workflow:
    enabled: false
  credential_reuse:
    shadow: true
exceptions:
  - id: nightly-export
    codes: [tool_not_granted]
    workload: spiffe://acme.example/agent/exporter
    workflow: "nightly-*"
    expires: 2026-12-31T00:00:00Z
    reason: approved export (CHG-42)
"""


def test_file_maps_into_detection_config(tmp_path: Path) -> None:
    cfg = load_tuning(write(tmp_path, FILE), DetectionConfig(grace_s=2))
    assert cfg.grace_s == 2
    assert cfg.severity == {"tool_not_granted": "high"}
    assert cfg.response == {"tool_not_granted": ("alert",)}
    assert not cfg.enabled("unknown_workflow")
    assert cfg.shadow_codes == {"credential_reuse"}
    assert cfg.exceptions[0].id == "nightly-export"
    assert cfg.tuning_revision is not None
    assert cfg.tuning_revision.startswith("r1@sha256:")


def test_file_wins_over_environment_for_the_codes_it_names(tmp_path: Path) -> None:
    base = DetectionConfig(disabled=frozenset({"unknown_workflow", "tool_not_granted"}))
    text = "codes:\n  tool_not_granted:\n    enabled: true\n"
    cfg = load_tuning(write(tmp_path, text), base)
    assert cfg.enabled("tool_not_granted")
    assert not cfg.enabled("unknown_workflow")


def test_revision_ignores_comments_and_layout(tmp_path: Path) -> None:
    a = load_tuning(write(tmp_path, FILE, "a.yaml"), DetectionConfig()).tuning_revision
    b = load_tuning(
        write(
            tmp_path, "# reviewed by alice\n" + FILE.replace("[alert]", "\n      - alert"), "b.yaml"
        ),
        DetectionConfig(),
    ).tuning_revision
    c = load_tuning(write(tmp_path, FILE.replace("high", "low"), "c.yaml"), DetectionConfig())
    assert a == b != c.tuning_revision


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "codes:\n  tool_not_grantd:\n    enabled: false\n",
            ["line 2", "tool_not_grantd", "tool_not_granted"],
        ),
        ("codes:\n  tool_not_granted:\n    enabld: false\n", ["line 3", "enabld"]),
        ("codes:\n  tool_not_granted:\n    severity: huge\n", ["line 3", "severity"]),
        ("codes:\n  tool_not_granted:\n    response: [revoke_tokn]\n", ["line 3", "revoke_tokn"]),
        (
            "exceptions:\n  - id: x\n    workload: w\n    expires: 2026-12-31T00:00:00Z\n",
            ["line 2", "reason"],
        ),
        ("codes: [1, 2\n", ["yaml"]),
        ("- just a list\n", ["mapping"]),
        ("shadoww: true\n", ["line 1", "shadoww"]),
    ],
)
def test_invalid_file_is_a_clear_error(tmp_path: Path, text: str, words: list[str]) -> None:
    p = write(tmp_path, text)
    with pytest.raises(TuningError) as err:
        load_tuning(p, DetectionConfig())
    msg = str(err.value)
    assert str(p) in msg
    for w in words:
        assert w.lower() in msg.lower(), msg


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TuningError, match="cannot read"):
        load_tuning(tmp_path / "nope.yaml", DetectionConfig())


# ---- reload ------------------------------------------------------------------------------


def test_watch_reloads_on_change_and_keeps_previous_on_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = write(tmp_path, "codes:\n  unknown_workflow:\n    enabled: false\n")
    watch = TuningWatch(p, DetectionConfig(), interval_s=0)
    first = watch.cfg
    assert not first.enabled("unknown_workflow")
    assert watch.poll() is None, "unchanged: nothing new"
    p.write_text("codes:\n  unknown_workflow:\n    enabled: true\n")
    os.utime(p, (1, 1))  # a new mtime even within the file system's granularity
    new = watch.poll()
    assert new is not None
    assert new.enabled("unknown_workflow")
    assert new.tuning_revision != first.tuning_revision
    p.write_text("codes:\n  unknown_workflw:\n    enabled: false\n")
    os.utime(p, (2, 2))
    with caplog.at_level(logging.ERROR, logger="tether.tuning"):
        assert watch.poll() is None
    assert "unknown_workflw" in caplog.text
    assert "keeping" in caplog.text
    assert watch.cfg is new, "an invalid file never replaces the tuning in force"
    p.unlink()
    with caplog.at_level(logging.ERROR, logger="tether.tuning"):
        assert watch.poll() is None
    assert watch.cfg is new


def test_watch_polls_at_most_every_interval(tmp_path: Path) -> None:
    p = write(tmp_path, "codes: {}\n")
    clock = [0.0]
    watch = TuningWatch(p, DetectionConfig(), interval_s=2, clock=lambda: clock[0])
    p.write_text("codes:\n  unknown_workflow:\n    enabled: false\n")
    os.utime(p, (5, 5))
    clock[0] = 1.0
    assert watch.poll() is None
    clock[0] = 2.5
    assert watch.poll() is not None


# ---- environment -------------------------------------------------------------------------


def test_env_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_DISABLED", "unknown_workflow, tool_not_granted")
    monkeypatch.setenv("TETHER_SEVERITY", "scope_escalation=low,credential_reuse=high")
    monkeypatch.setenv("TETHER_RESPONSE", "identity_mismatch=revoke_token;tool_not_granted=")
    monkeypatch.setenv("TETHER_SHADOW_CODES", "credential_reuse")
    cfg = Settings().detection()
    assert cfg.disabled == {"unknown_workflow", "tool_not_granted"}
    assert cfg.severity == {"scope_escalation": "low", "credential_reuse": "high"}
    assert cfg.response == {"identity_mismatch": ("revoke_token",), "tool_not_granted": ()}
    assert cfg.shadow_codes == {"credential_reuse"}
    assert cfg.tuning_revision is not None
    assert cfg.tuning_revision.startswith("env@sha256:")


def test_env_json_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_DISABLED", '["unknown_workflow"]')
    monkeypatch.setenv("TETHER_SEVERITY", '{"scope_escalation": "low"}')
    monkeypatch.setenv("TETHER_RESPONSE", '{"identity_mismatch": ["revoke_token"]}')
    cfg = Settings().detection()
    assert cfg.disabled == {"unknown_workflow"}
    assert cfg.severity == {"scope_escalation": "low"}
    assert cfg.response == {"identity_mismatch": ("revoke_token",)}


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("TETHER_DISABLED", "unknown_workflw", ["unknown_workflw", "unknown_workflow"]),
        ("TETHER_SEVERITY", "scope_escalation=hgh", ["hgh"]),
        ("TETHER_SEVERITY", "scope_escalation", ["CODE=SEVERITY"]),
        ("TETHER_RESPONSE", "scope_escalation=revoke_tokn", ["revoke_tokn"]),
        ("TETHER_SHADOW_CODES", "nope", ["nope"]),
    ],
)
def test_env_typo_is_an_error(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: list[str]
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises((ValidationError, ValueError)) as err:
        Settings().detection()
    for w in words:
        assert w in str(err.value)


def test_default_has_no_tuning_revision() -> None:
    assert Settings().detection().tuning_revision is None


def test_env_tuning_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    p = write(tmp_path, "codes:\n  unknown_workflow:\n    enabled: false\n")
    monkeypatch.setenv("TETHER_TUNING", str(p))
    cfg = Settings().detection()
    assert not cfg.enabled("unknown_workflow")


def test_decisions_and_findings_carry_the_revision() -> None:
    cfg = DetectionConfig(tuning_revision="r9@sha256:0123")
    r = run(
        [
            started("wf-1", "planner", "tok-p"),
            call("wf-1", "planner", "tok-p", tool="shell.exec", t=2),
        ],
        cfg,
    )
    assert r.out.findings
    assert all(f.tuning_revision == "r9@sha256:0123" for f in r.out.findings)
    assert r.out.decisions
    assert all(d.tuning_revision == "r9@sha256:0123" for d in r.out.decisions)


# ---- worker: reload without restart ------------------------------------------------------


def test_worker_applies_a_changed_tuning_file_to_later_events(tmp_path: Path) -> None:
    """A real file edited under a running worker: the next events are judged by the new
    revision; an invalid edit keeps it."""
    import asyncio

    from streams.outputs import Publisher
    from streams.tables import TableStore
    from streams.worker import Worker
    from tether.bootstrap import context, tuning_watch
    from tether.models.state_codec import dump_session, dump_token
    from tether.security import SetSigner, generate_key
    from worker_doubles import FakeTable, records

    p = write(tmp_path, "revision: a\ncodes:\n  tool_not_granted:\n    severity: low\n")
    settings = Settings(
        grace_s=0.0, state_epoch_ms=0, signing_processes=0, tuning=p, tuning_poll_s=0.001
    )
    watch = tuning_watch(settings)
    assert watch is not None
    sent: list[Any] = []

    async def publish_many(entries: list[Any]) -> list[Any]:
        sent.extend(entries)
        return []

    worker = Worker(
        settings,
        context(settings, watch.cfg),
        TableStore(FakeTable("sessions"), dump_session),
        TableStore(FakeTable("tokens"), dump_token),
        Publisher(publish_many),
        SetSigner(generate_key("RS256"), issuer="https://t.test"),
        worker_id="w",
        tuning=watch,
    )

    def findings() -> list[dict[str, Any]]:
        import orjson

        return [orjson.loads(e[2]) for e in sent if e[0] == "tether.findings"]

    def step(wf: str, first: int) -> None:
        evs = records(
            started(wf, "planner", "tok-" + wf, t=0),
            call(wf, "planner", "tok-" + wf, tool="shell.exec", t=1),
            first=first,
        )
        asyncio.run(_run(worker, evs))

    step("wf-a", 0)
    (f,) = findings()
    assert f["severity"] == "low"
    assert f["tuning_revision"].startswith("a@sha256:")
    p.write_text(
        "revision: b\ncodes:\n  tool_not_granted:\n    severity: critical\n    response: []\n"
    )
    os.utime(p, (10, 10))
    import time

    time.sleep(0.01)
    sent.clear()
    step("wf-b", 2)
    (f,) = findings()
    assert f["severity"] == "critical"
    assert f["tuning_revision"].startswith("b@sha256:")
    assert not [e for e in sent if e[0] == "tether.revocations"], "alert only now"
    decisions = [e for e in sent if e[0] == "tether.decisions"]
    assert decisions
    assert all(b"b@sha256:" in e[2] for e in decisions)
    p.write_text("codes:\n  tool_not_grantd: {}\n")
    os.utime(p, (20, 20))
    time.sleep(0.01)
    sent.clear()
    step("wf-c", 4)
    (f,) = findings()
    assert f["tuning_revision"].startswith("b@sha256:"), "the invalid edit is not applied"


async def _run(worker: Any, evs: Any) -> None:
    await worker.on_intents(evs)


def test_ocsf_reports_an_excepted_finding_as_not_enforced() -> None:
    from tether.ocsf import DISPOSITION_REVOKED, detection_finding, enforced

    cfg = DetectionConfig(exceptions=(exception(),), tuning_revision="r@sha256:1")
    (f,) = fire(violation("tool_not_granted"), cfg).findings
    assert enforced(f) == []
    doc = detection_finding(f)
    assert doc["disposition_id"] != DISPOSITION_REVOKED
    assert doc["unmapped"]["tether"]["exception"] == "ex-1"


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("TETHER_DISABLE", "TETHER_DISABLED"),
        ("TETHER_DISABLED_CODES", "TETHER_DISABLED"),
        ("TETHER_SEVERITIES", "TETHER_SEVERITY"),
        ("TETHER_RESPONSES", "TETHER_RESPONSE"),
        ("TETHER_SHADOW_CODE", "TETHER_SHADOW_CODES"),
        ("TETHER_TUNING_FILE", "TETHER_TUNING"),
    ],
)
def test_misspelt_tuning_variable_stops_replay(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, meant: str
) -> None:
    from click.testing import CliRunner

    from tether.cli import main

    events = tmp_path / "e.jsonl"
    events.write_text("")
    monkeypatch.setenv(name, "unknown_workflow")
    res = CliRunner().invoke(main, ["replay", "-q", str(events)])
    assert res.exit_code == 1
    assert name in res.output
    assert meant in res.output


def test_unrelated_variables_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TETHER_KAFKA_PORT", "TETHER_REDIS_PORT", "TETHER_OTLP_TOPIC", "TETHER_SOAK"):
        monkeypatch.setenv(name, "1")
    assert Settings.misspelt_tuning() == []


def _replay(tmp_path: Path, env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    import orjson
    from click.testing import CliRunner

    from builders import call as c
    from builders import started as s
    from tether.cli import main

    events = tmp_path / "events.jsonl"
    events.write_bytes(
        b"".join(
            orjson.dumps(e) + b"\n"
            for e in [
                s("wf-1", "planner", "tok-p"),
                c("wf-1", "planner", "tok-p", tool="shell.exec", t=2),
                c("wf-ghost", "planner", "tok-g", t=3),
            ]
        )
    )
    res = CliRunner().invoke(main, ["replay", "-q", "--decisions", *args, str(events)], env=env)
    assert res.exit_code == 0, res.output
    return [orjson.loads(line) for line in res.stdout.splitlines()]


def test_replay_cli_honours_env_and_file(tmp_path: Path) -> None:
    """The README's claims from the command line: disable, severity, response per code."""
    plain = _replay(tmp_path, {})
    codes = {r["code"] for r in plain if r["kind"] == "finding"}
    assert codes == {"tool_not_granted", "unknown_workflow"}
    assert any(r["kind"] == "revocation" for r in plain)
    out = _replay(
        tmp_path,
        {
            "TETHER_DISABLED": "unknown_workflow",
            "TETHER_SEVERITY": "tool_not_granted=critical",
            "TETHER_RESPONSE": "tool_not_granted=",
        },
    )
    (f,) = [r for r in out if r["kind"] == "finding"]
    assert f["code"] == "tool_not_granted"
    assert f["severity"] == "critical"
    assert f["tuning_revision"].startswith("env@sha256:")
    assert not [r for r in out if r["kind"] == "revocation"]
    tuning = write(tmp_path, "revision: t1\ncodes:\n  tool_not_granted:\n    shadow: true\n")
    out = _replay(tmp_path, {}, "--tuning", str(tuning))
    f = next(r for r in out if r["kind"] == "finding" and r["code"] == "tool_not_granted")
    assert f["shadow"] is True
    assert not [r for r in out if r["kind"] == "revocation"]
    decisions = [r for r in out if r["kind"] == "decision"]
    assert decisions
    assert all(d["tuning_revision"].startswith("t1@sha256:") for d in decisions)


def test_replay_cli_refuses_a_typo(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tether.cli import main

    events = tmp_path / "e.jsonl"
    events.write_text("")
    bad = write(tmp_path, "codes:\n  tool_not_grantd:\n    enabled: false\n")
    res = CliRunner().invoke(main, ["replay", "-q", "--tuning", str(bad), str(events)])
    assert res.exit_code == 1
    assert "line 2" in res.output
    assert "tool_not_granted" in res.output
    res = CliRunner().invoke(
        main, ["replay", "-q", str(events)], env={"TETHER_DISABLED": "tool_not_grantd"}
    )
    assert res.exit_code == 1
    assert "tool_not_grantd" in res.output


def test_too_many_exceptions_is_an_error(tmp_path: Path) -> None:
    item = "  - {id: x, workload: w, expires: '2027-01-01T00:00:00Z', reason: r}\n"
    p = write(tmp_path, "exceptions:\n" + item * 1001)
    with pytest.raises(TuningError, match="1000"):
        load_tuning(p, DetectionConfig())


_names = st.text(alphabet="abc/-*?[]:.", min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(mine=_names, actor=_names, wf=_names, glob=_names)
def test_an_exception_never_covers_another_workload(
    mine: str, actor: str, wf: str, glob: str
) -> None:
    """Whatever workflow id or tool the agent picks, an exception scoped to workload ``mine``
    never covers a finding of another actor (exact, or outside a path prefix)."""
    exc = exception(workload=ORG + mine, workflow=glob)
    v = violation("tool_not_granted", workload=ORG + actor, wf=wf)
    covered = fire(v, DetectionConfig(exceptions=(exc,))).findings[0].exception is not None
    assert not covered or actor == mine
    pre = exception(workload=None, workload_prefix=ORG + mine.rstrip("/") + "/")
    covered = fire(v, DetectionConfig(exceptions=(pre,))).findings[0].exception is not None
    assert not covered or (ORG + actor).startswith(ORG + mine.rstrip("/") + "/")


def test_tuning_check_cli(tmp_path: Path) -> None:
    import orjson
    from click.testing import CliRunner

    from tether.cli import main

    res = CliRunner().invoke(main, ["tuning", "check", str(EXAMPLE)])
    assert res.exit_code == 0, res.output
    doc = orjson.loads(res.stdout)
    assert set(doc["codes"]) == set(RULES)
    assert doc["tuning_revision"].startswith("example-1@sha256:")
    bad = write(tmp_path, "codes:\n  tool_not_granted:\n    severity: hgh\n")
    res = CliRunner().invoke(main, ["tuning", "check", str(bad)])
    assert res.exit_code == 1
    assert "line 3" in res.output


def test_a_tuning_file_others_can_write_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, "codes: {}\n")
    p.chmod(0o666)
    with pytest.raises(TuningError, match="chmod go-w"):
        load_tuning(p, DetectionConfig())
    p.chmod(0o644)
    assert load_tuning(p, DetectionConfig()).tuning_revision is None
