"""`tether registry-sync`: the registry sync as a process of its own (the k8s Deployment),
ready once it follows its partitions, writing what the revocations topic holds to Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
from test_metrics_endpoint import free_port, get, samples, total
from test_sdk_watcher import ISSUER, Feed

from sdk_helpers import revocation
from tether.adapters.kafka_admin import create_topics
from tether.security import SetSigner, generate_key
from tether.security.keys import write_jwks
from tether.settings import Settings

COUNT = 20


def test_registry_sync_process_writes_the_feed_and_is_ready(
    kafka_bootstrap: str,
    redis_url: str,
    redis_client,  # conftest's redis.Redis
    fresh_topic_prefix: str,
    tmp_path: Path,
) -> None:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        topic_prefix=f"{fresh_topic_prefix}.",
        partitions=2,
        issuer=ISSUER,
    )
    create_topics(settings)
    signer = SetSigner(generate_key("ES256"), issuer=ISSUER)
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, [signer.public_jwk()])
    feed = Feed(settings, signer)
    start = datetime.now(UTC)
    jti = f"jti-{fresh_topic_prefix}"
    for i in range(COUNT):
        feed.revoke(revocation("token", f"{jti}-{i}", rid=f"rv-{i}", start=start, lasts=3600))
    feed.flush()

    port = free_port()
    env = {
        **os.environ,
        "TETHER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TETHER_REDIS_URL": redis_url,
        "TETHER_TOPIC_PREFIX": settings.topic_prefix,
        "TETHER_PARTITIONS": "2",
        "TETHER_ISSUER": ISSUER,
        "TETHER_JWKS": str(jwks),
        "TETHER_METRICS_ADDR": f"127.0.0.1:{port}",
        "TETHER_LOG_FORMAT": "json",
    }
    log = tmp_path / "sync.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # our own CLI, fixed arguments
            [sys.executable, "-m", "tether.cli", "registry-sync"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        written = 0.0
        while time.monotonic() < deadline:
            try:
                status, body = get(f"{base}/readyz")
                written = total(samples(base), "tether_registry_writes_total")
            except OSError:
                status, body = 0, b""
            if status == 200 and written >= COUNT:
                break
            time.sleep(0.3)
        assert status == 200, (body, log.read_text())
        assert orjson.loads(body)["checks"] == {"following": True, "partitions_assigned": True}
        assert written == COUNT
        assert len(redis_client.keys(f"*{jti}-*")) == COUNT
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
        keys = redis_client.keys(f"*{jti}-*")
        if keys:
            redis_client.delete(*keys)
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    assert all(orjson.loads(ln)["level"] for ln in lines)
