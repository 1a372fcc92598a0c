"""tether ssf against the real broker, with a push receiver (RFC 8935) and a poll receiver
(RFC 8936) written for the test from the RFCs, each verifying every SET with PyJWT.

Revocations are published to a fresh revocations topic as the worker publishes them (signed
SETs); the transmitter is killed (SIGKILL) and restarted mid-stream; at the end each receiver
holds every published revocation: delivered = published, 0 lost (duplicates are allowed,
at-least-once, and de-duplicated by ``jti``).
"""

from __future__ import annotations

# token_id values are credential ids (jti), not secrets
import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import json_http as rhttp
import jwt
import pytest
from aiohttp import web
from confluent_kafka import Producer
from nginx_rig import free_port, wait_port

from tether.adapters.kafka_admin import create_topics
from tether.adapters.kafka_config import producer_config
from tether.models.outputs import Revocation, Target
from tether.security import SetSigner, generate_key
from tether.security.keys import write_jwks, write_private_key
from tether.settings import Settings

ISSUER = "https://tether.example/ssf"
STS = "https://sts.acme.example"
PUSH_AUD = "https://push-receiver.example"
POLL_AUD = "https://poll-receiver.example"
PUSH_TOKEN = "push-receiver-token-0123456789"
POLL_TOKEN = "poll-receiver-token-0123456789"
PUSH_AUTH = "Bearer receiver-side-secret-abcdef"
SUBJECT_FORMATS = {"jwt_id", "complex", "opaque", "uri"}


class Keys:
    def __init__(self, tmp: Path) -> None:
        self.key = generate_key("RS256")
        self.private = tmp / "signing-key.json"
        self.jwks = tmp / "jwks.json"
        write_private_key(self.private, self.key)
        write_jwks(self.jwks, [dict(self.key.as_dict(private=False))])
        self.public = jwt.PyJWK(self.key.as_dict(private=False))


def check_set(token: str, keys: Keys, audience: str) -> dict[str, Any]:
    """Verify a SET as a receiver does: signature, typ, iss, aud, jti, subject format."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "secevent+jwt"
    assert header["kid"] == keys.key.kid
    claims = jwt.decode(
        token,
        keys.public,
        algorithms=["RS256"],
        issuer=ISSUER,
        audience=audience,
        options={"require": ["iss", "aud", "iat", "jti"]},
    )
    assert "sub" not in claims
    assert "exp" not in claims
    assert len(claims["events"]) == 1
    assert claims["sub_id"]["format"] in SUBJECT_FORMATS
    return claims


class PushReceiver:
    """RFC 8935: takes POSTed SETs (application/secevent+jwt), answers 202; the first attempt
    at every 5th SET fails with 503 so the transmitter's retries are exercised."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.port = free_port()
        self.received: list[str] = []
        self.verifications: list[dict[str, Any]] = []
        self.failed_once: set[str] = set()
        self.errors: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != PUSH_AUTH:
            return web.json_response({"err": "authentication_failed"}, status=401)
        if request.content_type != "application/secevent+jwt":
            return web.json_response({"err": "invalid_request"}, status=400)
        token = (await request.read()).decode()
        try:
            claims = check_set(token, self.keys, PUSH_AUD)
        except (AssertionError, jwt.PyJWTError) as exc:
            self.errors.append(repr(exc))
            return web.json_response({"err": "invalid_key"}, status=400)
        jti = claims["jti"]
        if jti.startswith("verification:"):
            self.verifications.append(claims)
        else:
            if hash(jti) % 5 == 0 and jti not in self.failed_once:
                self.failed_once.add(jti)
                return web.Response(status=503)
            self.received.append(jti)
        return web.Response(status=202)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/events", self.handle)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._loop.run_forever()

    def start(self) -> PushReceiver:
        self._thread.start()
        wait_port(self.port)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


class PollReceiver:
    """RFC 8936: POSTs {maxEvents, returnImmediately, ack, setErrs}, reads {sets, moreAvailable},
    acknowledges what it verified in the next request."""

    def __init__(self, keys: Keys, url: str) -> None:
        self.keys, self.url = keys, url
        self.received: list[str] = []
        self.errors: list[str] = []
        self.to_ack: list[str] = []
        self.verifications: list[dict[str, Any]] = []

    def poll_once(self, max_events: int = 50, immediately: bool = True) -> bool:
        body = {"maxEvents": max_events, "returnImmediately": immediately, "ack": self.to_ack}
        try:
            status, reply = rhttp.post_json(self.url, body, token=POLL_TOKEN)
        except OSError:
            return False  # the transmitter is down (restarting): poll again later
        if status != 200:
            return False
        self.to_ack = []
        for jti, token in reply["sets"].items():
            try:
                claims = check_set(token, self.keys, POLL_AUD)
            except (AssertionError, jwt.PyJWTError) as exc:
                self.errors.append(repr(exc))
                continue
            assert claims["jti"] == jti
            if jti.startswith("verification:"):
                self.verifications.append(claims)
            else:
                self.received.append(jti)
            self.to_ack.append(jti)
        return bool(reply["moreAvailable"])


def revocations(n: int, start: int = 0) -> list[Revocation]:
    now = datetime.now(UTC)
    kinds = ("token", "workflow", "workload", "delegation")
    out = []
    for i in range(start, start + n):
        kind = kinds[i % 4]
        ident = f"spiffe://acme.example/agent/a{i}" if kind == "workload" else f"{kind}-{i}"
        out.append(
            Revocation(
                revocation_id=f"r-{i:05d}",
                target=Target(kind=kind, id=ident),
                reason="scope_escalation",
                severity="high",
                finding_id=f"f-{i}",
                workflow_id=f"wf-{i}",
                issued_at=now,
                not_after=now + timedelta(hours=1),
                evidence=["e1"],
                token_issuer=STS if kind == "token" else None,
            )
        )
    return out


class Transmitter:
    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / "ssf.toml"
        config.write_text(
            f'base_url = "{self.url}"\nstate_dir = "{tmp / "ssf-state"}"\n'
            f'[[receivers]]\nname = "push"\ntoken = "{PUSH_TOKEN}"\naudience = "{PUSH_AUD}"\n'
            'push_url_prefixes = ["http://127.0.0.1:"]\n'
            f'[[receivers]]\nname = "poll"\ntoken = "{POLL_TOKEN}"\naudience = "{POLL_AUD}"\n'
        )
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Transmitter:
        log = open(self.tmp / "ssf.log", "ab")  # noqa: SIM115  # owned by the process
        self.proc = subprocess.Popen(  # our own CLI, fixed arguments
            [
                sys.executable,
                "-m",
                "tether.cli",
                "ssf",
                "--config",
                str(self.config),
                "--listen",
                f"127.0.0.1:{self.port}",
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port, proc=self.proc)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return (self.tmp / "ssf.log").read_text(errors="replace")[-4000:]


@pytest.fixture
def rig(kafka_bootstrap, fresh_topic_prefix, kafka_admin, tmp_path) -> Iterator[dict[str, Any]]:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.", partitions=3
    )
    created = create_topics(settings)
    keys = Keys(tmp_path)
    env = {
        **os.environ,
        "TETHER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TETHER_TOPIC_PREFIX": f"{fresh_topic_prefix}.",
        "TETHER_SIGNING_KEY": str(keys.private),
        "TETHER_JWKS": str(keys.jwks),
        "TETHER_ISSUER": ISSUER,
    }
    tx = Transmitter(tmp_path, env).start()
    yield {"settings": settings, "keys": keys, "tx": tx}
    tx.stop()
    for future in kafka_admin.delete_topics(created, operation_timeout=30).values():
        future.result(30)


def publish(settings: Settings, keys: Keys, revs: list[Revocation]) -> None:
    signer = SetSigner(keys.key, issuer=ISSUER)  # as the worker signs them (its own audience)
    producer = Producer(producer_config(settings, client_id="test-worker"))
    for rev in revs:
        producer.produce(
            settings.topic("revocations"), key=rev.target.key.encode(), value=signer.revocation(rev)
        )
    assert producer.flush(30) == 0


def api(tx: Transmitter, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    return rhttp.request_json(method, tx.url + path, body, token=token)


def test_push_and_poll_lose_nothing_across_a_kill(rig) -> None:
    settings, keys, tx = rig["settings"], rig["keys"], rig["tx"]
    status, meta = rhttp.request_json("GET", tx.url + "/.well-known/ssf-configuration", None)
    assert status == 200
    assert meta["issuer"] == ISSUER
    assert "urn:ietf:rfc:8935" in meta["delivery_methods_supported"]
    status, jwks = rhttp.request_json("GET", meta["jwks_uri"], None)
    assert jwks["keys"][0]["kid"] == keys.key.kid

    pusher = PushReceiver(keys).start()
    try:
        status, push_stream = api(
            tx,
            "POST",
            "/ssf/stream",
            PUSH_TOKEN,
            {
                "delivery": {
                    "method": "urn:ietf:rfc:8935",
                    "endpoint_url": f"http://127.0.0.1:{pusher.port}/events",
                    "authorization_header": PUSH_AUTH,
                },
                "events_requested": [
                    "https://schemas.openid.net/secevent/caep/event-type/session-revoked",
                    "https://schemas.openid.net/secevent/caep/event-type/credential-change",
                    "https://schemas.openid.net/secevent/ssf/event-type/verification",
                ],
            },
        )
        assert status == 201, push_stream
        assert push_stream["aud"] == PUSH_AUD
        status, poll_stream = api(
            tx,
            "POST",
            "/ssf/stream",
            POLL_TOKEN,
            {
                "delivery": {"method": "urn:ietf:rfc:8936"},
                "events_requested": [
                    "https://schemas.openid.net/secevent/caep/event-type/session-revoked",
                    "https://schemas.openid.net/secevent/caep/event-type/credential-change",
                    "https://schemas.openid.net/secevent/ssf/event-type/verification",
                ],
            },
        )
        assert status == 201, poll_stream
        poller = PollReceiver(keys, poll_stream["delivery"]["endpoint_url"])

        first, second = revocations(150), revocations(150, start=150)
        publish(settings, keys, first)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
            len(set(pusher.received)) < 60 or len(set(poller.received)) < 60
        ):
            poller.poll_once()
            time.sleep(0.05)
        assert len(set(pusher.received)) >= 60, tx.log()
        tx.kill()  # mid-stream: some delivered, some not, positions partly committed
        publish(settings, keys, second)
        tx.start()
        published = {r.revocation_id for r in first + second}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
            published <= set(pusher.received) and published <= set(poller.received)
        ):
            poller.poll_once(immediately=False)
        assert not pusher.errors
        assert not poller.errors
        lost_push = published - set(pusher.received)
        lost_poll = published - set(poller.received)
        print(
            f"\npublished {len(published)}; push delivered {len(set(pusher.received))} distinct "
            f"({len(pusher.received)} with duplicates), lost {len(lost_push)}; poll delivered "
            f"{len(set(poller.received))} distinct ({len(poller.received)}), lost {len(lost_poll)}"
        )
        assert not lost_push, tx.log()
        assert not lost_poll, tx.log()
        assert set(pusher.received) == published == set(poller.received)
    finally:
        pusher.stop()


def test_stream_management(rig) -> None:
    settings, keys, tx = rig["settings"], rig["keys"], rig["tx"]
    assert api(tx, "GET", "/ssf/stream", "wrong-token-0123456789")[0] == 401
    # a receiver's push stream may point only where its configuration allows (no SSRF)
    for url in ("http://10.0.0.1/events", "file:///etc/passwd", "http://127.0.0.1.evil.example/"):
        status, _ = api(
            tx,
            "POST",
            "/ssf/stream",
            PUSH_TOKEN,
            {"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": url}},
        )
        assert status == 400, url
    status, stream = api(
        tx, "POST", "/ssf/stream", POLL_TOKEN, {"delivery": {"method": "urn:ietf:rfc:8936"}}
    )
    assert status == 201
    sid = stream["stream_id"]
    poller = PollReceiver(keys, stream["delivery"]["endpoint_url"])
    # read, list, and another receiver cannot see it
    assert api(tx, "GET", f"/ssf/stream?stream_id={sid}", POLL_TOKEN) == (200, stream)
    assert [s["stream_id"] for s in api(tx, "GET", "/ssf/stream", POLL_TOKEN)[1]] == [sid]
    assert api(tx, "GET", f"/ssf/stream?stream_id={sid}", PUSH_TOKEN)[0] == 404
    # update (PATCH) and replace (PUT)
    status, updated = api(
        tx, "PATCH", "/ssf/stream", POLL_TOKEN, {"stream_id": sid, "description": "tests"}
    )
    assert (status, updated["description"]) == (200, "tests")
    status, replaced = api(
        tx,
        "PUT",
        "/ssf/stream",
        POLL_TOKEN,
        {
            "stream_id": sid,
            "delivery": {"method": "urn:ietf:rfc:8936"},
            "events_requested": [
                "https://schemas.openid.net/secevent/caep/event-type/session-revoked",
                "https://schemas.openid.net/secevent/ssf/event-type/verification",
            ],
        },
    )
    assert status == 200
    assert "description" not in replaced
    assert replaced["events_delivered"] == replaced["events_requested"]
    # verification: the receiver's state comes back in a signed verification event
    assert api(tx, "POST", "/ssf/verify", POLL_TOKEN, {"stream_id": sid, "state": "xyz"})[0] == 204
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not poller.verifications:
        poller.poll_once(immediately=False)
    (verification,) = poller.verifications
    assert verification["sub_id"] == {"format": "opaque", "id": sid}
    event = verification["events"][
        "https://schemas.openid.net/secevent/ssf/event-type/verification"
    ]
    assert event == {"state": "xyz"}
    # subjects: a removed subject gets no events; credential-change was not requested
    removed = {"format": "jwt_id", "iss": STS, "jti": "token-0"}
    assert (
        api(tx, "POST", "/ssf/subjects:remove", POLL_TOKEN, {"stream_id": sid, "subject": removed})[
            0
        ]
        == 204
    )
    # paused: held, delivered once enabled again
    status, body = api(
        tx, "POST", "/ssf/status", POLL_TOKEN, {"stream_id": sid, "status": "paused"}
    )
    assert (status, body["status"]) == (200, "paused")
    assert api(tx, "GET", f"/ssf/status?stream_id={sid}", POLL_TOKEN)[1]["status"] == "paused"
    publish(settings, keys, revocations(8))
    time.sleep(2.0)
    poller.poll_once()
    assert poller.received == []
    api(tx, "POST", "/ssf/status", POLL_TOKEN, {"stream_id": sid, "status": "enabled"})
    expected = {
        r.revocation_id
        for r in revocations(8)
        if r.target.kind != "workload" and r.target.id != "token-0"
    }
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and set(poller.received) != expected:
        poller.poll_once(immediately=False)
    assert set(poller.received) == expected
    # at most max_streams (10) per receiver: each stream is a Kafka consumer
    extra = [
        api(tx, "POST", "/ssf/stream", POLL_TOKEN, {"delivery": {"method": "urn:ietf:rfc:8936"}})
        for _ in range(10)
    ]
    assert [status for status, _ in extra] == [201] * 9 + [409]
    for _status, body in extra[:9]:
        assert api(tx, "DELETE", f"/ssf/stream?stream_id={body['stream_id']}", POLL_TOKEN)[0] == 204
    # delete
    assert api(tx, "DELETE", f"/ssf/stream?stream_id={sid}", POLL_TOKEN)[0] == 204
    assert api(tx, "GET", f"/ssf/stream?stream_id={sid}", POLL_TOKEN)[0] == 404
