"""tether gateway: the request mapping, the verdict, and both front ends (forward-auth over HTTP,
Envoy ext_authz over gRPC with a client built from the published protos), against a real
RevocationSet fed signed SETs."""

from __future__ import annotations

# token_id values are credential ids (jti), not secrets
import asyncio
import base64
import socket
from datetime import timedelta

import grpc
import orjson
import pytest
from aiohttp import ClientSession, web
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from hypothesis import given, settings
from hypothesis import strategies as st

from sdk_helpers import T0, FakeClock, heartbeat, revocation
from tether.gateway import GatewayConfig, Route, decide, request_facts
from tether.gateway.ext_authz import add_to_server
from tether.gateway.http import check_app
from tether.gateway.mapping import baggage_values, jwt_claim, mcp_tools, xfcc_uris
from tether.gateway.service import Gateway
from tether.sdk.revocation_set import RevocationSet
from tether.security import SetSigner, SetVerifier, StaticKeys, generate_key

ISSUER = "urn:tether:monitor"
SPIFFE = "spiffe://acme.example/agent/coder"


def jwt(claims: dict) -> str:
    def b64(d: bytes) -> str:
        return base64.urlsafe_b64encode(d).rstrip(b"=").decode()

    header = b64(orjson.dumps({"alg": "RS256"}))
    return f"{header}.{b64(orjson.dumps(claims))}.c2ln"


def bearer(jti: str) -> str:
    return f"Bearer {jwt({'jti': jti, 'sub': 'agent'})}"


@pytest.fixture(scope="module")
def signer():
    return SetSigner(generate_key("RS256"), issuer=ISSUER)


@pytest.fixture
def clock():
    return FakeClock(T0 + timedelta(seconds=1))


@pytest.fixture
def revset(signer, clock):
    verifier = SetVerifier(StaticKeys([signer.public_jwk()]), issuer=ISSUER, clock=clock)
    rs = RevocationSet(staleness_s=5.0, verifier=verifier, clock=clock)
    rs.apply(b"heartbeat:w1", signer.heartbeat(heartbeat(T0)))
    rs.mark_ready()
    return rs


def revoke(rs, signer, kind, ident, rid):
    rev = revocation(kind, ident, rid=rid)
    assert rs.apply(rev.target.key.encode(), signer.revocation(rev)) is not None


CONFIG = GatewayConfig(
    routes=(
        Route(match=r"/tools/(?P<tool>[^/]+)", tier="high", tool="path"),
        Route(match=r"/mcp", tier="default", tool="mcp"),
        Route(match=r"/public", tier="low", require=()),
        Route(match=r"/", tier="default"),
    ),
    tool_tiers={"shell.exec": "high"},
    fail_closed_tiers=frozenset({"default", "high"}),
)


def verdict(rs, path="/api", headers=None, body=None, config=CONFIG):
    gw = Gateway(config, rs)
    return gw.check(path, headers or {}, body, trust_uri_headers=True)


# -- the mapping ------------------------------------------------------------------------------


def test_xfcc_every_uri_of_every_element():
    value = (
        "By=spiffe://acme.example/proxy;Hash=abc;URI=spiffe://acme.example/agent/a,"
        'By=spiffe://x;URI="spiffe://acme.example/agent/b";Subject="CN=a,O=b"'
    )
    assert xfcc_uris(value) == {"spiffe://acme.example/agent/a", "spiffe://acme.example/agent/b"}


def test_baggage_members_percent_decoded_properties_dropped():
    value = "userId=alice, tether.workflow=wf%2042;prop=1 , other=x"
    assert baggage_values(value, "tether.workflow") == {"wf 42"}


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (jwt({"jti": "j1"}), "j1"),
        (jwt({"jti": 7}), None),
        (jwt({"sub": "x"}), None),
        ("not-a-jwt", None),
        ("a.!!!.c", None),
        ("a." + "A" * 30000 + ".c", None),
    ],
)
def test_jwt_claim(token, expected):
    assert jwt_claim(token, "jti") == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"crm.search"}}',
            {"crm.search"},
        ),
        (
            b'[{"method":"tools/call","params":{"name":"a"}},{"method":"tools/call","params":{"name":"b"}}]',
            {"a", "b"},
        ),
        (b'{"method":"tools/list"}', set()),
        (b'{"method":"tools/call","params":{}}', None),
        (b"not json", None),
        (b"[1]", None),
    ],
)
def test_mcp_tools(body, expected):
    assert mcp_tools(body, 1 << 20) == expected


def test_every_candidate_is_collected():
    headers = {
        "authorization": [bearer("j1"), bearer("j2")],
        "x-tether-workflow": ["wf-1, wf-2"],
        "baggage": ["tether.workflow=wf-3"],
        "x-forwarded-client-cert": [f"URI={SPIFFE}"],
        "x-tether-delegation": ["d-1"],
    }
    facts, tiers = request_facts(CONFIG, "/api", headers)
    assert facts.ids == {
        "token": {"j1", "j2"},
        "workflow": {"wf-1", "wf-2", "wf-3"},
        "workload": {SPIFFE},
        "delegation": {"d-1"},
    }
    assert tiers == {"default"}


def test_tool_from_path_and_tool_tier():
    facts, tiers = request_facts(CONFIG, "/tools/shell.exec?x=1", {})
    assert facts.tools == {"shell.exec"}
    assert tiers == {"high"}


def test_unreadable_mcp_body_takes_the_strict_tier():
    facts, tiers = request_facts(CONFIG, "/mcp", {}, b"{not json")
    assert "high" in tiers
    assert facts.unreadable


@pytest.mark.parametrize(
    "path",
    [
        "/tools/shell.exec",
        "//tools/shell.exec",
        "/%74ools/shell.exec",
        "/public/../tools/shell.exec",
        "/./tools/./shell.exec?x=/public",
        "/tools/shell%2eexec#frag",
    ],
)
def test_a_path_spelled_differently_takes_the_same_route(path):
    facts, tiers = request_facts(CONFIG, path, {})
    assert facts.route is not None
    assert facts.route.match.startswith("/tools/")
    assert facts.tools == {"shell.exec"}
    assert tiers == {"high"}


def test_an_oversized_mcp_body_is_unreadable_not_toolless():
    config = CONFIG.model_copy(update={"max_body_bytes": 64})
    body = b'{"method":"tools/call","params":{"name":"shell.exec"},"pad":"' + b"x" * 100 + b'"}'
    facts, tiers = request_facts(config, "/mcp", {}, body)
    assert "high" in tiers
    assert facts.unreadable


def test_original_uri_header_names_the_path_for_forward_auth():
    facts, _ = request_facts(CONFIG, "/auth", {"x-original-uri": ["/tools/db.drop"]})
    assert facts.path == "/tools/db.drop"
    assert facts.tools == {"db.drop"}


# -- the verdict -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "ident", "headers"),
    [
        ("token", "j-bad", {"authorization": [bearer("j-bad")]}),
        ("workload", SPIFFE, {"x-forwarded-client-cert": [f"By=x;URI={SPIFFE}"]}),
        ("workflow", "wf-bad", {"x-tether-workflow": ["wf-bad"]}),
        ("workflow", "wf-bad", {"baggage": ["a=b,tether.workflow=wf-bad"]}),
        ("delegation", "d-bad", {"x-tether-delegation": ["d-bad"]}),
    ],
)
def test_a_revoked_identity_is_denied_wherever_it_appears(revset, signer, kind, ident, headers):
    revoke(revset, signer, kind, ident, f"r-{kind}")
    headers = {"authorization": [bearer("j-ok")], **headers}
    if kind == "token":
        headers["authorization"] = [bearer("j-ok"), bearer("j-bad")]  # hidden behind a clean one
    v = verdict(revset, headers=headers)
    assert (v.status, v.reason) == (403, f"{kind}_revoked")


def test_a_clean_request_is_allowed(revset, signer):
    revoke(revset, signer, "token", "j-bad", "r1")
    v = verdict(revset, headers={"authorization": [bearer("j-ok")]})
    assert (v.status, v.reason) == (200, "ok")


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing_token"),
        ({"authorization": ["Basic dXNlcjpwdw=="]}, "unreadable_token"),
        ({"authorization": ["Bearer opaque-token"]}, "unreadable_token"),
        ({"authorization": [bearer("j-ok"), "Bearer opaque"]}, "unreadable_token"),
    ],
)
def test_a_request_it_cannot_identify_is_denied(revset, headers, reason):
    v = verdict(revset, headers=headers)
    assert (v.status, v.reason) == (403, reason)


def test_a_route_that_requires_nothing_allows_anonymous(revset):
    assert verdict(revset, path="/public").status == 200


def test_no_route_is_denied(revset):
    config = GatewayConfig(routes=(Route(match="/only"),))
    v = verdict(revset, path="/else", headers={"authorization": [bearer("j")]}, config=config)
    assert (v.status, v.reason) == (403, "no_route")


def test_stale_feed_fails_closed_with_503_on_strict_tiers_and_open_on_low(revset, clock):
    clock.advance(60)  # no heartbeat for a minute
    ok = {"authorization": [bearer("j-ok")]}
    v = verdict(revset, headers=ok)
    assert (v.status, v.reason) == (503, "stale")
    low = verdict(revset, path="/public", headers=ok)
    assert (low.status, low.degraded) == (200, True)


def test_stale_feed_still_denies_a_known_revocation_with_403(revset, signer, clock):
    revoke(revset, signer, "token", "j-bad", "r1")
    clock.advance(60)
    v = verdict(revset, path="/public", headers={"authorization": [bearer("j-bad")]})
    assert (v.status, v.reason) == (403, "token_revoked")


def test_a_revocation_expires(revset, signer, clock):
    revoke(revset, signer, "token", "j-bad", "r1")  # lasts 600 s from T0
    clock.advance(700)
    revset.apply(b"heartbeat:w1", signer.heartbeat(heartbeat(T0 + timedelta(seconds=700))))
    assert verdict(revset, headers={"authorization": [bearer("j-bad")]}).status == 200


def test_not_bootstrapped_is_in_doubt(signer, clock):
    verifier = SetVerifier(StaticKeys([signer.public_jwk()]), issuer=ISSUER, clock=clock)
    rs = RevocationSet(staleness_s=5.0, verifier=verifier, clock=clock)
    assert verdict(rs, headers={"authorization": [bearer("j")]}).status == 503


def test_decide_is_importable_as_a_pure_function(revset):
    facts, tiers = request_facts(CONFIG, "/api", {"authorization": [bearer("j")]})
    assert decide(facts, tiers, revset, CONFIG.fail_closed_tiers).outcome == "allow"


# -- the front ends ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_forward_auth_over_http(revset, signer):
    revoke(revset, signer, "token", "j-bad", "r1")

    async def scenario():
        runner = web.AppRunner(check_app(Gateway(CONFIG, revset)))
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with ClientSession() as http:
                url = f"http://127.0.0.1:{port}/auth"
                out = []
                for auth, uri in (
                    (bearer("j-ok"), "/api/x"),
                    (bearer("j-bad"), "/api/x"),
                    (None, "/api/x"),
                    (None, "/public/page"),
                ):
                    headers = {"x-original-uri": uri}
                    if auth:
                        headers["Authorization"] = auth
                    async with http.get(url, headers=headers) as r:
                        out.append((r.status, r.headers.get("x-tether-reason")))
                body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}'
                async with http.post(
                    f"http://127.0.0.1:{port}/mcp",
                    data=body,
                    headers={"Authorization": bearer("j-bad")},
                ) as r:
                    out.append((r.status, r.headers.get("x-tether-reason")))
                return out
        finally:
            await runner.cleanup()

    assert asyncio.run(scenario()) == [
        (200, "ok"),
        (403, "token_revoked"),
        (403, "missing_token"),
        (200, "ok"),
        (403, "token_revoked"),
    ]


def check_request(path, headers, body=b""):
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.method = "POST"
    http.path = path
    http.headers.update(headers)
    if body:
        http.raw_body = body
    return req


def test_envoy_ext_authz_over_grpc(revset, signer):
    revoke(revset, signer, "workload", SPIFFE, "r1")
    revoke(revset, signer, "token", "j-bad", "r2")
    gw = Gateway(CONFIG, revset)

    async def scenario():
        server = grpc.aio.server()
        add_to_server(server, gw)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = external_auth_pb2_grpc.AuthorizationStub(channel)
                ok = await stub.Check(check_request("/api", {"authorization": bearer("j-ok")}))
                bad = await stub.Check(
                    check_request(
                        "/api",
                        {
                            "authorization": bearer("j-ok"),
                            "x-forwarded-client-cert": f"By=spiffe://proxy;URI={SPIFFE}",
                        },
                    )
                )
                mcp = await stub.Check(
                    check_request(
                        "/mcp",
                        {"authorization": bearer("j-bad")},
                        b'{"method":"tools/call","params":{"name":"a"}}',
                    )
                )
                # a client-sent x-original-uri must not pick the route on the gRPC path
                sneaky = await stub.Check(check_request("/api", {"x-original-uri": "/public"}))
                return ok, bad, mcp, sneaky
        finally:
            await server.stop(0)

    ok, bad, mcp, sneaky = asyncio.run(scenario())
    assert ok.status.code == 0
    assert ok.HasField("ok_response")
    assert bad.status.code == 7
    assert bad.denied_response.status.code == 403
    reasons = {h.header.key: h.header.value for h in bad.denied_response.headers}
    assert reasons["x-tether-reason"] == "workload_revoked"
    assert mcp.status.code == 7
    assert sneaky.status.code == 7  # no token on a default route
    assert {h.header.key: h.header.value for h in sneaky.denied_response.headers}[
        "x-tether-reason"
    ] == "missing_token"


# -- properties ---------------------------------------------------------------------------------

_ids = st.text(alphabet="abcdefghij0123456789-", min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    clean_tokens=st.lists(_ids, max_size=4),
    clean_workflows=st.lists(_ids, max_size=4),
    where=st.sampled_from(["token", "workflow-header", "baggage", "xfcc"]),
    position=st.integers(min_value=0, max_value=8),
    duplicate=st.booleans(),
)
def test_one_revoked_identity_anywhere_among_clean_ones_is_always_denied(
    signer, clean_tokens, clean_workflows, where, position, duplicate
):
    clock = FakeClock(T0 + timedelta(seconds=1))
    verifier = SetVerifier(StaticKeys([signer.public_jwk()]), issuer=ISSUER, clock=clock)
    rs = RevocationSet(staleness_s=5.0, verifier=verifier, clock=clock)
    rs.apply(b"heartbeat:w1", signer.heartbeat(heartbeat(T0)))
    rs.mark_ready()
    bad = "zz-revoked"
    kind = {"token": "token", "xfcc": "workload"}.get(where, "workflow")
    ident = f"spiffe://acme.example/{bad}" if kind == "workload" else bad
    revoke(rs, signer, kind, ident, "r-prop")
    tokens = [bearer(t) for t in clean_tokens] or [bearer("j-ok")]
    workflows = [w for w in clean_workflows if w != bad]
    headers: dict[str, list[str]] = {"authorization": tokens}
    if workflows:
        headers["x-tether-workflow"] = [", ".join(workflows)]
    if where == "token":
        tokens.insert(position % (len(tokens) + 1), bearer(bad))
    elif where == "workflow-header":
        values = [*workflows]
        values.insert(position % (len(values) + 1), bad)
        headers["x-tether-workflow"] = [", ".join(values)]
    elif where == "baggage":
        members = [f"k{i}=v{i}" for i in range(position)] + [f"tether.workflow={bad}"]
        headers["baggage"] = [",".join(members)]
    else:
        elements = [
            f"By=spiffe://proxy{i};URI=spiffe://acme.example/clean{i}" for i in range(position)
        ]
        elements.insert(position // 2, f"By=spiffe://p;URI={ident}")
        headers["x-forwarded-client-cert"] = [",".join(elements)]
    if duplicate:
        headers = {k: [*v, *v] for k, v in headers.items()}
    v = verdict(rs, headers=headers)
    assert (v.status, v.reason) == (403, f"{kind}_revoked")


def test_envoy_http_mode_path_prefix_is_stripped_before_routing():
    config = CONFIG.model_copy(update={"path_prefix": "/check"})
    facts, tiers = request_facts(config, "/check/tools/shell.exec?q=1", {})
    assert facts.path == "/tools/shell.exec"
    assert facts.tools == {"shell.exec"}
    assert tiers == {"high"}
    other, _ = request_facts(config, "/checkout/x", {})
    assert other.path == "/checkout/x"  # a prefix ends at a segment boundary


def test_forward_auth_reads_an_oversized_body_as_unreadable(revset, clock):
    """Padding a body past the limit must not shed its tool's tier (HTTP front end)."""
    config = GatewayConfig(
        routes=(Route(match="/mcp", tier="low", tool="mcp"),),
        tool_tiers={"shell.exec": "high"},
        fail_closed_tiers=frozenset({"high"}),
        max_body_bytes=64,
    )
    clock.advance(60)  # stale: the tier decides
    body = b'{"method":"tools/call","params":{"name":"shell.exec"},"pad":"' + b"x" * 200 + b'"}'

    async def scenario():
        runner = web.AppRunner(check_app(Gateway(config, revset)))
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with ClientSession() as http:
                out = []
                for data in (body, body[:40]):  # oversized; small but not JSON
                    async with http.post(
                        f"http://127.0.0.1:{port}/mcp",
                        data=data,
                        headers={"Authorization": bearer("j-ok")},
                    ) as r:
                        out.append(r.status)
                return out
        finally:
            await runner.cleanup()

    assert asyncio.run(scenario()) == [503, 503]
