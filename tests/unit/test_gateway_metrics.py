"""A gateway's answers, counted by answer and tier, as /metrics exports them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sdk_helpers import T0, FakeClock, heartbeat, revocation
from tether.gateway import GatewayConfig, Route
from tether.gateway.decide import Verdict
from tether.gateway.service import Gateway, answer
from tether.observe import gateway_answers
from tether.sdk.revocation_set import RevocationSet
from tether.security import SetSigner, SetVerifier, StaticKeys, generate_key

ISSUER = "urn:tether:test"
CONFIG = GatewayConfig(
    routes=(
        Route(match=r"/public", tier="low", require=()),
        Route(match=r"/", tier="high"),
    ),
    fail_closed_tiers=frozenset({"high"}),
)


@pytest.mark.parametrize(
    ("verdict", "expected"),
    [
        (Verdict("allow", "ok"), "not_revoked"),
        (Verdict("deny", "token_revoked"), "revoked"),
        (Verdict("deny", "workload_revoked"), "revoked"),
        (Verdict("allow", "stale_fail_open", degraded=True), "fail_open"),
        (Verdict("unavailable", "stale"), "fail_closed"),
        (Verdict("deny", "missing_token"), "refused"),
        (Verdict("deny", "no_route"), "refused"),
    ],
)
def test_answer(verdict: Verdict, expected: str) -> None:
    assert answer(verdict) == expected


def checks() -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        for s in family.samples:
            if s.name == "tether_gateway_checks_total":
                out[s.labels["answer"], s.labels["tier"]] = s.value
    return out


def test_answers_are_exported_by_answer_and_tier() -> None:
    signer = SetSigner(generate_key("RS256"), issuer=ISSUER)
    clock = FakeClock(T0 + timedelta(seconds=1))
    verifier = SetVerifier(StaticKeys([signer.public_jwk()]), issuer=ISSUER, clock=clock)
    rs = RevocationSet(staleness_s=5.0, verifier=verifier, clock=clock)
    rs.apply(b"heartbeat:w1", signer.heartbeat(heartbeat(T0)))
    rs.mark_ready()
    rev = revocation("token", "jti-bad", rid="r1")
    rs.apply(rev.target.key.encode(), signer.revocation(rev))
    gw = Gateway(CONFIG, rs)
    gateway_answers(gw)

    def ask(path: str, jti: str | None = None) -> None:
        headers = {"authorization": [f"Bearer {_jwt(jti)}"]} if jti else {}
        gw.check(path, headers, None, trust_uri_headers=True)

    ask("/api", "jti-ok")
    ask("/api", "jti-ok")
    ask("/api", "jti-bad")
    ask("/api")  # no token on a route that requires one
    clock.advance(60)  # the feed goes stale
    ask("/public")  # low tier fails open
    ask("/api", "jti-ok")  # high tier fails closed
    assert checks() == {
        ("not_revoked", "high"): 2,
        ("revoked", "high"): 1,
        ("refused", "high"): 1,
        ("fail_open", "low"): 1,
        ("fail_closed", "high"): 1,
    }


def _jwt(jti: str) -> str:
    import base64

    import orjson

    def b64(d: bytes) -> str:
        return base64.urlsafe_b64encode(d).rstrip(b"=").decode()

    header = b64(orjson.dumps({"alg": "RS256"}))
    return f"{header}.{b64(orjson.dumps({'jti': jti, 'sub': 'agent'}))}.c2ln"
