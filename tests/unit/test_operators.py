"""Operators' signed actions (docs/operators.md): who may reinstate, and what a reinstatement
lifts in a gateway's revocation set (earlier revocations, never later ones; order and duplicates
change nothing)."""

from __future__ import annotations

import ast
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdk_helpers import T0, FakeClock, heartbeat, revocation
from tether.models.outputs import Reinstatement, Revocation, Target
from tether.sdk.revocation_set import RevocationSet
from tether.security import SetRejected, SetSigner, SetVerifier, StaticKeys, generate_key
from tether.security.operators import (
    OperatorSigner,
    generate_operator_files,
    load_operator_signer,
    parse_target,
)
from tether.security.sets import DEFAULT_OPERATOR_ISSUER, unverified_parts
from tether.settings import Settings

ISSUER = "urn:tether:monitor"
OPS = DEFAULT_OPERATOR_ISSUER
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def worker():
    return SetSigner(generate_key("RS256", issuer=ISSUER), issuer=ISSUER)


@pytest.fixture(scope="module")
def operator():
    key = generate_key("ES256", issuer=OPS)
    return OperatorSigner(SetSigner(key, issuer=OPS), name="alice", window_s=7 * 86400)


@pytest.fixture(scope="module")
def stranger():
    """An operator key nobody configured."""
    key = generate_key("ES256", issuer=OPS)
    return OperatorSigner(SetSigner(key, issuer=OPS), name="mallory", window_s=7 * 86400)


def verifier(worker, operator, clock) -> SetVerifier:
    return SetVerifier(
        StaticKeys([worker.public_jwk()]),
        issuer=ISSUER,
        clock=clock,
        operator_keys=StaticKeys([operator.signer.public_jwk()]),
        operator_issuer=OPS,
    )


def make_set(worker, operator, clock) -> RevocationSet:
    s = RevocationSet(
        clock=clock, staleness_s=float("inf"), verifier=verifier(worker, operator, clock)
    )
    s.mark_ready()
    return s


def reinstatement(operator, ident="jti-1", at: datetime = T0, kind="token") -> Reinstatement:
    return operator.reinstatement(Target(kind=kind, id=ident), reason="false positive", now=at)


def forge_reinstatement(signer: SetSigner, item: Reinstatement, iss: str) -> bytes:
    """The SET of ``item`` signed by ``signer`` with ``iss`` whatever its key is bound to (what
    a thief holding the key can do by hand)."""
    from tether.security import caep

    event_type, body = caep.reinstatement_event(item)
    claims = {
        "iss": iss,
        "aud": signer.audience,
        "iat": int(item.issued_at.timestamp()),
        "jti": item.reinstatement_id,
        "sub_id": caep.subject(item.target),
        "events": {event_type: body},
        "tether": item.model_dump(mode="json", exclude_none=True),
    }
    return signer.sign_payload(orjson.dumps(claims))


# -- who may reinstate -----------------------------------------------------------------------


def test_an_operator_signed_reinstatement_verifies(worker, operator):
    clock = FakeClock()
    item = reinstatement(operator)
    assert verifier(worker, operator, clock).verify(operator.sign(item)) == item


def test_an_operator_signed_revocation_verifies_and_says_who(worker, operator):
    clock = FakeClock()
    rev = operator.revocation(
        parse_target("workload:spiffe://acme/agent"),
        reason="stolen laptop",
        now=T0,
        until=T0 + timedelta(hours=1),
    )
    got = verifier(worker, operator, clock).verify(operator.sign(rev))
    assert isinstance(got, Revocation)
    assert (got.by, got.note, got.reason) == ("alice", "stolen laptop", "operator")
    _h, claims = unverified_parts(operator.sign(rev))
    (body,) = claims["events"].values()
    assert body["initiating_entity"] == "admin"


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("worker key, worker issuer", "not_operator"),
        ("worker key, operator issuer", "wrong_issuer"),
        ("unknown operator key", "unknown_kid"),
        ("unsigned", "unsigned"),
    ],
)
def test_a_reinstatement_not_from_a_configured_operator_is_rejected(
    worker, operator, stranger, how, reason
):
    clock = FakeClock()
    item = reinstatement(operator)
    data = {
        "worker key, worker issuer": lambda: forge_reinstatement(worker, item, ISSUER),
        "worker key, operator issuer": lambda: forge_reinstatement(worker, item, OPS),
        "unknown operator key": lambda: stranger.sign(item),
        "unsigned": lambda: orjson.dumps(item.model_dump(mode="json")),
    }[how]()
    with pytest.raises(SetRejected) as exc:
        verifier(worker, operator, clock).verify(data)
    assert exc.value.reason == reason


def test_without_operator_keys_no_reinstatement_verifies(worker, operator):
    plain = SetVerifier(StaticKeys([worker.public_jwk()]), issuer=ISSUER, clock=FakeClock())
    item = reinstatement(operator)
    with pytest.raises(SetRejected) as exc:
        plain.verify(operator.sign(item))
    assert exc.value.reason == "wrong_issuer"
    with pytest.raises(SetRejected) as exc:
        plain.verify(forge_reinstatement(worker, item, ISSUER))
    assert exc.value.reason == "not_operator"


def test_an_operator_key_cannot_sign_heartbeats(worker, operator):
    clock = FakeClock()
    data = operator.signer.heartbeat(heartbeat())
    with pytest.raises(SetRejected) as exc:
        verifier(worker, operator, clock).verify(data)
    assert exc.value.reason == "not_operator"


def test_only_an_operator_may_sign_a_revocation_that_names_one(worker, operator):
    """A stolen worker key must not put words in an operator's mouth (the audit trail)."""
    rev = revocation().model_copy(update={"by": "alice", "note": "she said so"})
    with pytest.raises(SetRejected) as exc:
        verifier(worker, operator, FakeClock()).verify(worker.revocation(rev))
    assert exc.value.reason == "not_operator"


def test_a_replayed_reinstatement_is_rejected(worker, operator):
    clock = FakeClock()
    v = verifier(worker, operator, clock)
    data = operator.sign(reinstatement(operator))
    v.verify(data)
    with pytest.raises(SetRejected) as exc:
        v.verify(data)
    assert exc.value.reason == "replayed"


def test_the_worker_key_cannot_be_loaded_as_an_operator_key(tmp_path):
    from tether.security.keys import generate_files

    files = generate_files(tmp_path / "worker", issuer=ISSUER)
    with pytest.raises(ValueError, match="bound to issuer"):
        load_operator_signer(Settings(home=tmp_path, operator_key=files.private_key))


def test_operator_key_files(tmp_path):
    files = generate_operator_files(tmp_path / "ops", name="bob", issuer=OPS)
    assert files.private_key.stat().st_mode & 0o777 == 0o600
    jwks = orjson.loads(files.jwks.read_bytes())
    assert [k["iss"] for k in jwks["keys"]] == [OPS]
    assert all("d" not in k for k in jwks["keys"])
    signer = load_operator_signer(Settings(home=tmp_path, operator_key=files.private_key))
    assert signer.name == "bob"
    assert signer.kid == files.kid


def test_reinstatement_needs_a_reason_and_a_name(operator):
    with pytest.raises(ValueError, match="reason"):
        operator.reinstatement(parse_target("token:x"), reason="  ", now=T0)
    with pytest.raises(ValueError, match="name"):
        operator.reinstatement(parse_target("token:x"), reason="fp", now=T0, by="")


@pytest.mark.parametrize("text", ["token", "tokens:x", "token:", "user:bob"])
def test_bad_targets_are_refused(text):
    with pytest.raises(ValueError, match="KIND:ID"):
        parse_target(text)


def test_nothing_but_the_operator_tools_builds_a_reinstatement():
    """The worker never emits a reinstatement: no module of the detection path names one."""
    allowed = {
        "src/tether/security/operators.py",  # the operator signer
        "src/tether/security/sets.py",  # SetSigner.reinstatement (refused unless an operator key)
        "src/tether/cli_operators.py",  # tether reinstate
    }
    for path in [*ROOT.glob("src/tether/**/*.py"), *ROOT.glob("streams/*.py")]:
        rel = str(path.relative_to(ROOT))
        if rel in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                name = getattr(func, "attr", None) or getattr(func, "id", None)
                assert name not in ("Reinstatement", "reinstatement"), f"{rel} builds one"


# -- what a reinstatement lifts --------------------------------------------------------------


def test_reinstate_lifts_an_earlier_revocation(worker, operator):
    clock = FakeClock(T0 + timedelta(seconds=30))
    s = make_set(worker, operator, clock)
    s.apply(b"token:jti-1", worker.sign(revocation(lasts=3600, start=T0)))
    assert s.is_revoked(token_id="jti-1")
    s.apply(b"token:jti-1", operator.sign(reinstatement(operator, at=T0 + timedelta(seconds=10))))
    assert not s.is_revoked(token_id="jti-1")
    assert s.stats.reinstatements == 1


def test_a_later_violation_revokes_again(worker, operator):
    clock = FakeClock(T0 + timedelta(seconds=30))
    s = make_set(worker, operator, clock)
    s.apply(b"token:jti-1", worker.sign(revocation(lasts=3600, start=T0)))
    s.apply(b"token:jti-1", operator.sign(reinstatement(operator, at=T0 + timedelta(seconds=10))))
    later = revocation(lasts=60, rid="rv-2", start=T0 + timedelta(seconds=20))
    s.apply(b"token:jti-1", worker.sign(later))
    assert s.is_revoked(token_id="jti-1")


def test_a_reinstatement_does_not_lift_a_later_revocation_read_before_it(worker, operator):
    clock = FakeClock(T0 + timedelta(seconds=30))
    s = make_set(worker, operator, clock)
    s.apply(b"token:jti-1", worker.sign(revocation(lasts=3600, start=T0)))
    later = revocation(lasts=60, rid="rv-2", start=T0 + timedelta(seconds=20))
    s.apply(b"token:jti-1", worker.sign(later))
    s.apply(b"token:jti-1", operator.sign(reinstatement(operator, at=T0 + timedelta(seconds=10))))
    assert s.revoked_until("token", "jti-1") == later.not_after.timestamp()


def test_a_lifted_revocation_read_again_stays_lifted(worker, operator):
    """A copy arriving late (another worker, the ledger) must not resurrect it."""
    clock = FakeClock(T0 + timedelta(seconds=30))
    s = make_set(worker, operator, clock)
    s.apply(b"token:jti-1", operator.sign(reinstatement(operator, at=T0 + timedelta(seconds=10))))
    s.apply(b"token:jti-1", worker.sign(revocation(lasts=3600, start=T0)))
    assert not s.is_revoked(token_id="jti-1")
    assert s.stats.lifted == 1


def test_a_reinstatement_lifts_only_its_target(worker, operator):
    clock = FakeClock(T0 + timedelta(seconds=30))
    s = make_set(worker, operator, clock)
    s.apply(b"token:jti-1", worker.sign(revocation(lasts=3600, start=T0)))
    s.apply(b"token:jti-2", worker.sign(revocation(ident="jti-2", rid="rv-9", start=T0)))
    s.apply(b"workflow:jti-1", worker.sign(revocation("workflow", rid="rv-w", start=T0)))
    s.apply(b"token:jti-1", operator.sign(reinstatement(operator, at=T0 + timedelta(seconds=10))))
    assert not s.is_revoked(token_id="jti-1")
    assert s.is_revoked(token_id="jti-2")
    assert s.is_revoked(workflow_id="jti-1")


@pytest.mark.parametrize("forger", ["worker", "stranger", "unsigned"])
def test_a_rejected_reinstatement_lifts_nothing(worker, operator, stranger, forger):
    clock = FakeClock(T0 + timedelta(seconds=30))
    s = RevocationSet(
        clock=clock,
        staleness_s=float("inf"),
        verifier=verifier(worker, operator, clock),
        hold_s=0.0,
    )
    s.mark_ready()
    s.apply(b"token:jti-1", worker.sign(revocation(lasts=3600, start=T0)))
    item = reinstatement(operator, at=T0 + timedelta(seconds=10))
    data = {
        "worker": forge_reinstatement(worker, item, ISSUER),
        "stranger": stranger.sign(item),
        "unsigned": orjson.dumps(item.model_dump(mode="json")),
    }[forger]
    s.apply(b"token:jti-1", data)
    s.retry_held()
    assert s.is_revoked(token_id="jti-1")
    assert s.stats.reinstatements == 0
    assert s.stats.bad_records == 1


# -- order and duplicates --------------------------------------------------------------------

_REVS = [  # (rid, issued seconds after T0, lasts)
    ("a", 0, 3600),
    ("b", 5, 60),
    ("c", 15, 600),
    ("d", 25, 100_000),
]
_REINS = [5, 12, 20]  # a reinstatement issued that many seconds after T0


def _expected(events: list[tuple[str, int]]) -> float | None:
    lift = max((at for kind, at in events if kind == "x"), default=None)
    live = [
        (T0 + timedelta(seconds=start + lasts)).timestamp()
        for rid, start, lasts in _REVS
        if ("r", _REVS.index((rid, start, lasts))) in events and (lift is None or start > lift)
    ]
    return max(live, default=None)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    picks=st.lists(
        st.one_of(
            st.tuples(st.just("r"), st.integers(0, len(_REVS) - 1)),
            st.tuples(st.just("x"), st.sampled_from(_REINS)),
        ),
        max_size=12,
    ),
    data=st.data(),
)
def test_the_outcome_does_not_depend_on_order_or_duplicates(worker, operator, picks, data):
    clock = FakeClock(T0 + timedelta(seconds=30))
    records: dict[tuple[str, int], bytes] = {}
    for kind, i in set(picks):
        if kind == "r":
            rid, start, lasts = _REVS[i]
            rev = revocation(lasts=lasts, rid=rid, start=T0 + timedelta(seconds=start))
            records[(kind, i)] = worker.sign(rev)
        else:
            item = reinstatement(operator, at=T0 + timedelta(seconds=i))
            records[(kind, i)] = operator.sign(item)
    order = data.draw(st.permutations(picks))
    s = make_set(worker, operator, clock)
    for pick in order:
        s.apply(b"token:jti-1", records[pick])
    assert s.revoked_until("token", "jti-1") == _expected(list(set(picks)))


# -- the registry's semantics and the CLI ----------------------------------------------------


def test_the_memory_registry_lifts_earlier_revocations_and_keeps_later_ones(operator):
    from tether.adapters.memory_registry import MemoryRegistry

    clock = FakeClock(T0 + timedelta(seconds=30))
    registry = MemoryRegistry(clock=clock)
    registry.put_sync(revocation(lasts=3600, start=T0))
    assert registry.reinstate_sync(reinstatement(operator, at=T0 + timedelta(seconds=10)))
    assert registry.lookup_sync("token", "jti-1") is False
    registry.put_sync(revocation(lasts=3600, start=T0))  # the lifted one again: stays lifted
    assert registry.lookup_sync("token", "jti-1") is False
    registry.put_sync(revocation(lasts=60, rid="rv-2", start=T0 + timedelta(seconds=20)))
    assert registry.lookup_sync("token", "jti-1") is True


def test_until_accepts_durations_and_zoned_times():
    from click import BadParameter

    from tether.cli_operators import parse_until

    assert parse_until("90s", T0) == T0 + timedelta(seconds=90)
    assert parse_until("4h", T0) == T0 + timedelta(hours=4)
    assert parse_until("2026-11-29T09:00:00Z", T0) == T0.replace(day=29, hour=9)
    for bad in ("tomorrow", "2026-11-29T09:00:00", "4 hours"):
        with pytest.raises(BadParameter):
            parse_until(bad, T0)


def test_tether_reinstate_dry_run_prints_a_record_the_verifiers_accept(tmp_path, worker):
    from click.testing import CliRunner

    from tether.cli import main
    from tether.security.keys import verifier_from_settings, write_jwks

    files = generate_operator_files(tmp_path / "ops", name="carol", issuer=OPS)
    write_jwks(tmp_path / "jwks.json", [worker.public_jwk()])
    env = {"TETHER_OPERATOR_KEY": str(files.private_key), "TETHER_HOME": str(tmp_path)}
    args = ["reinstate", "workload:spiffe://acme/a", "--reason", "fp", "--dry-run"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    record = orjson.loads(result.stdout.splitlines()[0])
    token = result.stderr.strip().splitlines()[-1].encode()
    settings = Settings(
        home=tmp_path, jwks=str(tmp_path / "jwks.json"), operator_jwks=str(files.jwks)
    )
    got = verifier_from_settings(settings).verify(token)
    assert isinstance(got, Reinstatement)
    assert got.model_dump(mode="json", exclude_none=True) == record
    assert (got.by, got.reason) == ("carol", "fp")
