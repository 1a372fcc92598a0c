"""Operator actions on findings: signed with an operator key (never the worker's), and a
suppression that becomes a scoped, expiring exception in the tuning file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from builders import ORG, call, started
from scenarios import run
from tether.core import DetectionConfig
from tether.finding_actions import (
    FindingAction,
    action_id,
    find_in_lines,
    glob_escape,
    parse_until,
    sign_action,
    suppression,
    verify_action,
    verify_action_with,
    with_exception,
)
from tether.security import generate_key
from tether.security.keys import write_private_key
from tether.security.operators import (
    OperatorSigner,
    generate_operator_files,
    load_operator_signer,
)
from tether.security.sets import StaticKeys
from tether.settings import Settings
from tether.tuning import TuningError, load_tuning, parse

NOW = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)
OP = "urn:tether:operator"


def _key(tmp_path: Path, issuer: str | None, name: str = "k.jwk.json") -> Path:
    p = tmp_path / name
    write_private_key(p, generate_key("ES256", issuer=issuer))
    return p


def _action(**kw: object) -> FindingAction:
    values: dict[str, object] = {
        "action_id": action_id("ack", "f-1", "alice", NOW),
        "action": "ack",
        "finding_id": "f-1",
        "by": "alice",
        "reason": "on it",
        "at": NOW,
    }
    values.update(kw)
    return FindingAction.model_validate(values)


def _operator(tmp_path: Path, key: Path | None = None, **kw: object) -> OperatorSigner:
    """The operator signer ``tether revoke`` would load (the one way to load one)."""
    return load_operator_signer(
        Settings(home=tmp_path, operator_key=key or _key(tmp_path, OP), **kw)  # type: ignore[arg-type]
    )


def test_signed_by_an_operator_key_verifies(tmp_path: Path) -> None:
    signer = _operator(tmp_path)
    data = sign_action(signer, _action())
    got = verify_action(data, StaticKeys([signer.signer.public_jwk()]))
    assert got.by == "alice"
    assert got.finding_id == "f-1"


def test_verifies_with_the_operators_jwks_like_a_reinstatement(tmp_path: Path) -> None:
    """A reader trusts what TETHER_OPERATOR_JWKS lists, bound to TETHER_OPERATOR_ISSUER."""
    files = generate_operator_files(tmp_path / "ops", name="alice", issuer=OP, alg="ES256")
    other = generate_operator_files(tmp_path / "other", name="eve", issuer=OP, alg="ES256")
    settings = Settings(
        home=tmp_path, operator_key=files.private_key, operator_jwks=str(files.jwks)
    )
    signer = load_operator_signer(settings)
    assert signer.name == "alice", "--by defaults to the operator's configured name"
    got = verify_action_with(sign_action(signer, _action(by=signer.name)), settings)
    assert got.by == "alice"
    stranger = load_operator_signer(Settings(home=tmp_path, operator_key=other.private_key))
    with pytest.raises(ValueError, match="unknown key"):
        verify_action_with(sign_action(stranger, _action()), settings)
    with pytest.raises(ValueError, match="OPERATOR_JWKS"):
        verify_action_with(sign_action(signer, _action()), Settings(home=tmp_path / "none"))


@pytest.mark.parametrize("issuer", ["urn:tether:monitor", None, "urn:someone:else"])
def test_a_key_not_bound_to_the_operators_is_refused(tmp_path: Path, issuer: str | None) -> None:
    """The worker's key (bound to TETHER_ISSUER), an unbound key or another issuer's."""
    with pytest.raises(ValueError, match="operator"):
        _operator(tmp_path, _key(tmp_path, issuer))


def test_operators_issuer_must_differ_from_the_workers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="differ"):
        _operator(tmp_path, issuer=OP)


def test_verify_refuses_worker_signed_tampered_and_unknown(tmp_path: Path) -> None:
    from tether.security.sets import SetSigner

    op = _operator(tmp_path)
    worker = SetSigner(
        generate_key("ES256", issuer="urn:tether:monitor"), issuer="urn:tether:monitor"
    )
    keys = StaticKeys([op.signer.public_jwk(), worker.public_jwk()])
    # a worker key signing the same claims: not an operator's
    forged = worker.sign_payload(
        sign_action(op, _action()).split(b".")[1]
        and __import__("base64").urlsafe_b64decode(
            sign_action(op, _action()).split(b".")[1] + b"=="
        )
    )
    with pytest.raises(ValueError, match="not bound"):
        verify_action(forged, keys)
    data = sign_action(op, _action())
    head, body, sig = data.split(b".")
    with pytest.raises(ValueError, match=r"signature|JWS|payload"):
        verify_action(head + b"." + body[:-4] + b"AAAA" + b"." + sig, keys)
    with pytest.raises(ValueError, match="unknown key"):
        verify_action(data, StaticKeys([worker.public_jwk()]))
    with pytest.raises(ValueError, match="JWS"):
        verify_action(b"not a jws", keys)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        (None, NOW + timedelta(hours=24)),
        ("12h", NOW + timedelta(hours=12)),
        ("7d", NOW + timedelta(days=7)),
        ("2026-12-01T00:00:00Z", datetime(2026, 12, 1, tzinfo=UTC)),
    ],
)
def test_until(text: str | None, ok: datetime) -> None:
    assert parse_until(text, NOW) == ok


@pytest.mark.parametrize("text", ["2026-11-01T00:00:00Z", "2026-12-01T00:00:00", "91d", "soon"])
def test_until_refused(text: str) -> None:
    with pytest.raises(ValueError, match="until"):
        parse_until(text, NOW)


def test_glob_escape_matches_only_itself() -> None:
    from fnmatch import fnmatchcase

    for wf in ["wf-1", "wf-*", "a[b]c?", "[x"]:
        pat = glob_escape(wf)
        assert fnmatchcase(wf, pat)
        assert not fnmatchcase(wf + "x", pat)
    assert not fnmatchcase("wf-2", glob_escape("wf-*"))


def _finding_of(events: list[dict[str, object]]) -> object:
    r = run(events)
    (f,) = r.out.findings
    return f


def test_suppression_is_scoped_to_the_findings_pattern_only(tmp_path: Path) -> None:
    """The exception covers this code, actor, workflow and tool; a different workflow, actor or
    tool still revokes."""
    ev = [
        started("wf-*", "planner", "tok-p"),
        call("wf-*", "planner", "tok-p", tool="shell.exec", t=2),
    ]
    f = _finding_of(ev)
    exc = suppression(f, action="fa-0123456789ab", reason="ok", until=NOW + timedelta(days=1))  # type: ignore[arg-type]
    p = tmp_path / "tuning.yaml"
    p.write_text(with_exception("", exc, str(p)))
    p.chmod(0o644)
    cfg = load_tuning(p, DetectionConfig())
    again = run(
        [
            started("wf-*", "planner", "tok-q", t=10),
            call("wf-*", "planner", "tok-q", tool="shell.exec", t=12),
        ],
        cfg,
    )
    # same workflow id: a grant_conflict may also fire, but tool_not_granted is excepted
    (tng,) = [x for x in again.out.findings if x.code == "tool_not_granted"]
    assert tng.exception == exc.id
    assert not [r for r in again.out.revocations if r.reason == "tool_not_granted"]
    for other in (
        [
            started("wf-9", "planner", "tok-p"),
            call("wf-9", "planner", "tok-p", tool="shell.exec", t=2),
        ],
        [
            started("wf-*", "billing", "tok-b"),
            call("wf-*", "billing", "tok-b", tool="shell.exec", t=2),
        ],
        [
            started("wf-*", "planner", "tok-p"),
            call("wf-*", "planner", "tok-p", tool="net.send", t=2),
        ],
    ):
        r = run(other, cfg)
        assert any(x.code == "tool_not_granted" and x.exception is None for x in r.out.findings)
        assert r.out.revocations
    assert exc.workload == ORG + "planner"


EXC_LINE = "  - id: keep\n    workload: w\n    expires: 2027-01-01T00:00:00Z\n    reason: r\n"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only a comment\n",
        "codes:\n  unknown_workflow:\n    enabled: false\n",
        "codes:\n  unknown_workflow:\n    enabled: false",
        "exceptions: []\n",
        "exceptions:\n",
        "exceptions:\n" + EXC_LINE,
        "exceptions:\n" + EXC_LINE + "codes:\n  unknown_workflow: {enabled: false}  # keep me\n",
        "codes: {}\nexceptions:\n" + EXC_LINE.rstrip("\n"),
        "exceptions: [{id: keep, workload: w, expires: '2027-01-01T00:00:00Z', reason: r}]\n",
        "exceptions:\n- id: keep\n  workload: w\n  expires: 2027-01-01T00:00:00Z\n  reason: r\n# end\n",
    ],
)
def test_with_exception_keeps_the_file_and_adds_one(text: str) -> None:
    from tether.core.config import TuningException

    exc = TuningException(id="new", workload="spiffe://a/b", expires=NOW, reason='say "hi": ok')
    new = with_exception(text, exc, "t.yaml")
    before, after = parse(text, "t.yaml"), parse(new, "t.yaml")
    assert after.exceptions == [*before.exceptions, exc]
    assert after.codes == before.codes
    for line in text.splitlines():
        if line.strip().startswith("#"):
            assert line in new, "comments are kept"


def test_with_exception_refuses_an_invalid_file() -> None:
    from tether.core.config import TuningException

    exc = TuningException(id="new", workload="w", expires=NOW, reason="r")
    with pytest.raises(TuningError):
        with_exception("codes:\n  nope: {}\n", exc, "t.yaml")


def test_find_in_lines_reads_only_findings() -> None:
    f = _finding_of(
        [started("wf-1", "planner", "tok-p"), call("wf-1", "planner", "tok-p", tool="x", t=2)]
    )
    line = f.model_dump_json().encode()  # type: ignore[attr-defined]
    fid = f.finding_id  # type: ignore[attr-defined]
    decoy = b'{"kind":"decision","finding_id":"' + fid.encode() + b'"}'
    assert find_in_lines([b"garbage " + fid.encode(), decoy, line], fid) == f
    assert find_in_lines([decoy], fid) is None
