"""The registry sync keeps writing to Redis over a slow link (issue 24, a fault Toxiproxy found).

``tests/fault/test_net_redis.py`` (``make faults-net``) put 500 ms of latency each way between the
worker's registry sync and Redis: every call of the sync timed out at the 1 s timeout it shared
with the gateways' lookups, and it wrote nothing for as long as the latency lasted (384 of 505
live revocations missing from Redis after 16 s; Redis untrusted after 10 s, as it should be, but
never written). The sync is off the request path, so its calls get their own, longer timeout
(``TETHER_REGISTRY_SYNC_TIMEOUT_S``, 5 s); the gateways keep failing fast.

The fast reproduction here needs no Toxiproxy: a small delaying TCP relay in front of the shared
Redis holds every reply 1.1 s.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import pytest
import redis

from tether.adapters.redis_registry import RedisRegistry
from tether.bootstrap import worker_parts
from tether.models.outputs import Revocation
from tether.settings import Settings

pytestmark = pytest.mark.integration

DELAY_S = 1.1  # more than a gateway's 1 s lookup timeout, well under the sync's


class SlowRelay:
    """Relays TCP to ``upstream``, holding each reply chunk ``delay_s`` (a slow link)."""

    def __init__(self, upstream: tuple[str, int], delay_s: float) -> None:
        self.upstream, self.delay_s = upstream, delay_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(client, server, 0.0), daemon=True).start()
            threading.Thread(
                target=self._pipe, args=(server, client, self.delay_s), daemon=True
            ).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, delay: float) -> None:
        with suppress(OSError):
            while chunk := src.recv(65536):
                if delay:
                    time.sleep(delay)
                dst.sendall(chunk)
        for s in (src, dst):
            with suppress(OSError):
                s.close()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()


@pytest.fixture
def slow_redis(redis_url: str) -> Iterator[str]:
    url = urlparse(redis_url)
    relay = SlowRelay((url.hostname or "127.0.0.1", url.port or 6379), DELAY_S)
    yield f"redis://127.0.0.1:{relay.port}{url.path or '/0'}"
    relay.close()


def _revocation(tag: str) -> Revocation:
    now = datetime.now(UTC)
    return Revocation.model_validate(
        {
            "revocation_id": f"rv-slow-{tag}",
            "finding_id": f"f-slow-{tag}",
            "workflow_id": f"wf-slow-{tag}",
            "target": {"kind": "workload", "id": f"slow-link-{tag}"},
            "reason": "credential_reuse",
            "issued_at": now.isoformat(),
            "not_after": (now + timedelta(minutes=5)).isoformat(),
            "severity": "critical",
            "evidence": [],
        }
    )


def test_the_registry_sync_writes_over_a_link_slower_than_a_gateways_timeout(
    slow_redis: str, redis_url: str
) -> None:
    """The worker's registry (the sync's) writes a batch through the 1.1 s link."""
    registry = worker_parts(Settings(redis_url=slow_redis), signer=None).registry
    rev = _revocation(str(time.time_ns()))
    try:
        registry.put_many_sync([rev])  # before the fix: RegistryUnavailableError, Timeout reading
    finally:
        registry.close_sync()
    direct = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        assert direct.exists(f"tether:revoked:workload:{rev.target.id}")
    finally:
        direct.close()


def test_a_gateway_lookup_still_fails_fast_over_the_same_link(slow_redis: str) -> None:
    """The gateways' registry keeps its 1 s timeout: a slow Redis answers None, not a wait."""
    gateway = RedisRegistry.from_settings(Settings(redis_url=slow_redis))
    start = time.monotonic()
    try:
        assert gateway.lookup_sync("workload", "anyone") is None
    finally:
        gateway.close_sync()
    assert time.monotonic() - start < 10
