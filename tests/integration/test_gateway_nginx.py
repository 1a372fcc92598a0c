"""tether gateway behind a real nginx (``auth_request``), against the real pipeline.

A `tether worker` on fresh topics, `tether gateway` following its revocations, Debian's nginx
in front of a test upstream. A call with a token is allowed through nginx; the agent then
escalates its scopes (an intent the worker revokes the token for); the same call is refused by
nginx with 403 and tether's reason. The time from producing that intent to nginx's first 403
is printed (a figure, not an assertion). The SET the worker published for it names the token's
own issuer and carries the configured audience.
"""

from __future__ import annotations

# token_id values are credential ids (jti), not secrets
import base64
import http.client
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import orjson
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from nginx_rig import Rig, free_port, nginx_binary
from pipeline import Pipeline
from prometheus_client.parser import text_string_to_metric_families

from tether.sdk.emitter import Emitter
from tether.security.sets import unverified_parts
from tether.settings import Settings

ORG = "spiffe://acme.example/agent/"
STS = "https://sts.acme.example"
AUDIENCE = "urn:acme:enforcement-points"

pytestmark = pytest.mark.skipif(
    nginx_binary() is None, reason="nginx is not installed (scripts/services.sh up installs it)"
)


def bearer(jti: str) -> str:
    def b64(d: bytes) -> str:
        return base64.urlsafe_b64encode(d).rstrip(b"=").decode()

    header = b64(orjson.dumps({"alg": "RS256", "typ": "JWT"}))
    return f"Bearer {header}.{b64(orjson.dumps({'jti': jti, 'iss': STS}))}.c2ln"


def get(port: int, path: str, token: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Authorization": bearer(token)})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("x-tether-reason") or ""
    finally:
        conn.close()


@pytest.fixture
def pipe(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    yield p
    p.stop_all()


def test_revoked_token_refused_by_nginx(pipe: Pipeline, tmp_path: Path, monkeypatch) -> None:
    settings = Settings(
        kafka_bootstrap=pipe.bootstrap, topic_prefix=pipe.prefix, partitions=4, staleness_s=5.0
    )
    monkeypatch.setenv("TETHER_SET_AUDIENCE", AUDIENCE)  # the worker's (Pipeline.env copies it)
    pipe.start_worker("w1")
    pipe.wait_heartbeat("w1")
    grpc_port, metrics_port = free_port(), free_port()
    rig = Rig(
        tmp_path,
        {
            **pipe.env("gateway"),
            "TETHER_STALENESS_S": "5",
            "TETHER_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
        },
        gateway_args=["--grpc", f"127.0.0.1:{grpc_port}"],
    ).start()
    try:
        now = datetime.now(UTC)
        token = f"jti-nginx-{pipe.prefix}"
        wf = f"wf-nginx-{pipe.prefix}"

        def cred(scopes: list[str]) -> dict[str, object]:
            return {
                "token_id": token,
                "issuer": STS,
                "subject": ORG + "coder",
                "scopes": scopes,
                "issued_at": now - timedelta(seconds=30),
                "expires_at": now + timedelta(minutes=10),
            }

        deadline = time.monotonic() + 30
        status = (0, "")
        while time.monotonic() < deadline:  # the gateway bootstraps, then allows
            status = get(rig.guarded, "/api/crm/search", token)
            if status[0] == 200:
                break
            time.sleep(0.2)
        assert status == (200, "ok"), (status, rig.log())

        with Emitter(settings, client_id="agent-test") as emitter:
            emitter.workflow_started(
                workflow_id=wf,
                agent=ORG + "coder",
                credential=cred(["crm:read"]),
                grant={
                    "task_type": "triage",
                    "purpose": "answer a ticket",
                    "scopes": ["crm:read"],
                    "tools": ["crm.search"],
                    "max_sensitivity": "internal",
                    "destinations": [],
                    "not_after": now + timedelta(hours=1),
                    "autonomy": "low",
                },
                occurred_at=now,
                wait=True,
            )
            assert get(rig.guarded, "/api/crm/search", token)[0] == 200
            produced = time.monotonic()
            emitter.tool_call_intent(  # scopes the grant never held: scope_escalation
                workflow_id=wf,
                agent=ORG + "coder",
                credential=cred(["crm:read", "crm:admin"]),
                action={
                    "tool": "crm.search",
                    "operation": "read",
                    "resource": "crm://a/1",
                    "destination": "crm.internal",
                    "data_sensitivity": "internal",
                },
                occurred_at=now + timedelta(seconds=1),
                wait=False,
            )
            emitter.flush(10)
        deadline = produced + 30
        while time.monotonic() < deadline:
            status = get(rig.guarded, "/api/crm/search", token)
            if status[0] == 403:
                break
            time.sleep(0.002)
        first_403_ms = (time.monotonic() - produced) * 1000
        assert status == (403, "token_revoked"), (status, pipe.log("w1"), rig.log())
        print(f"\nintent produced -> nginx's first 403: {first_403_ms:.1f} ms")
        # another token still passes; the revoked one stays refused
        assert get(rig.guarded, "/api/crm/search", "jti-someone-else")[0] == 200
        assert get(rig.guarded, "/api/crm/search", token) == (403, "token_revoked")
        # the same process answers Envoy's gRPC ext_authz, from the same feed
        assert envoy_check(grpc_port, token) == (7, 403, "token_revoked")
        assert envoy_check(grpc_port, "jti-someone-else")[0] == 0
        assert_published_set_is_standard(pipe, token)
        assert_gateway_metrics(metrics_port)
    finally:
        rig.stop()


def assert_gateway_metrics(port: int) -> None:
    """The gateway's /readyz is ready (feed read and fresh) and /metrics counted its answers."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:  # loopback
        assert orjson.loads(resp.read())["checks"] == {
            "feed_bootstrapped": True,
            "feed_fresh": True,
        }
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # loopback
        text = resp.read().decode()
    answers = {
        s.labels["answer"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "tether_gateway_checks_total"
    }
    assert answers["revoked"] >= 3, answers  # nginx twice, Envoy once
    assert answers["not_revoked"] >= 3, answers
    assert "tether_feed_staleness_seconds" in text


def envoy_check(port: int, token: str) -> tuple[int, int, str]:
    """One Authorization/Check, as Envoy sends it: (grpc status code, HTTP status, reason)."""
    req = external_auth_pb2.CheckRequest()
    http_attrs = req.attributes.request.http
    http_attrs.method, http_attrs.path = "GET", "/api/crm/search"
    http_attrs.headers["authorization"] = bearer(token)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        resp = external_auth_pb2_grpc.AuthorizationStub(channel).Check(req, timeout=5)
    if resp.HasField("ok_response"):
        headers = resp.ok_response.headers
        code = 200
    else:
        headers = resp.denied_response.headers
        code = resp.denied_response.status.code
    reason = {h.header.key: h.header.value for h in headers}.get("x-tether-reason", "")
    return resp.status.code, code, reason


def assert_published_set_is_standard(pipe: Pipeline, token: str) -> None:
    with pipe.consumer([pipe.topic("revocations")]) as consumer:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() or msg.key() != f"token:{token}".encode():
                continue
            header, claims = unverified_parts(msg.value())
            assert header["typ"] == "secevent+jwt"
            assert claims["aud"] == AUDIENCE
            assert claims["sub_id"] == {"format": "jwt_id", "iss": STS, "jti": token}
            return
    raise AssertionError("no token SET on the revocations topic")
