"""One contract, two registries: the in-memory fake behaves exactly like Redis."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime

import pytest

from sdk_helpers import revocation
from tether.adapters.memory_registry import MemoryRegistry
from tether.adapters.redis_registry import RedisRegistry
from tether.adapters.registry import RegistryUnavailableError, RevocationRegistry


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(params=["memory", "redis"])
def registry(request, fresh_topic_prefix):
    if request.param == "memory":
        reg = MemoryRegistry()
    else:
        url = request.getfixturevalue("redis_url")
        request.getfixturevalue("redis_client")  # deletes this test's keys afterwards
        reg = RedisRegistry(url, key_prefix=f"{fresh_topic_prefix}:revoked:", sync_topic=None)
    yield reg
    asyncio.run(reg.close())


def run(coro):
    return asyncio.run(coro)


def test_is_a_revocation_registry(registry):
    assert isinstance(registry, RevocationRegistry)


def test_put_then_lookup_async_and_sync(registry):
    async def scenario():
        await registry.put(revocation("workflow", "wf-1", start=_now()))
        return (
            await registry.lookup("workflow", "wf-1"),
            await registry.lookup("token", "wf-1"),
            await registry.lookup("workflow", "wf-2"),
        )

    assert run(scenario()) == (True, False, False)
    assert registry.lookup_sync("workflow", "wf-1") is True
    assert registry.lookup_sync("workload", "wf-1") is False


def test_expires_at_not_after(registry):
    run(registry.put(revocation(lasts=0.3, start=_now())))
    assert registry.lookup_sync("token", "jti-1") is True
    time.sleep(0.45)
    assert registry.lookup_sync("token", "jti-1") is False
    assert run(registry.lookup("token", "jti-1")) is False


def test_an_expired_revocation_is_not_stored(registry):
    run(registry.put(revocation(lasts=-1, start=_now())))
    assert registry.lookup_sync("token", "jti-1") is False


def test_put_many_writes_every_revocation_and_keeps_the_later_not_after(registry):
    start = _now()
    revs = [revocation("token", f"jti-{i}", lasts=30, start=start) for i in range(5)]
    revs.append(revocation("token", "jti-0", lasts=0.3, start=start))  # shorter: keeps 30 s
    registry.put_many_sync(revs)
    registry.put_many_sync(revs)  # a batch written again after a failure changes nothing
    registry.put_many_sync([])
    time.sleep(0.45)
    assert [registry.lookup_sync("token", f"jti-{i}") for i in range(6)] == [True] * 5 + [False]


def test_put_is_idempotent(registry):
    rev = revocation(lasts=0.4, start=_now())

    async def scenario():
        for _ in range(3):
            await registry.put(rev)

    run(scenario())
    assert registry.lookup_sync("token", "jti-1") is True
    time.sleep(0.55)
    assert registry.lookup_sync("token", "jti-1") is False


@pytest.mark.parametrize("order", ["short-first", "long-first"])
def test_the_later_not_after_wins(registry, order):
    now = _now()
    short = revocation(lasts=0.3, rid="short", start=now)
    long = revocation(lasts=30, rid="long", start=now)
    first, second = (short, long) if order == "short-first" else (long, short)

    async def scenario():
        await registry.put(first)
        await registry.put(second)

    run(scenario())
    time.sleep(0.45)
    assert registry.lookup_sync("token", "jti-1") is True


def test_a_later_not_after_extends_an_earlier_one(registry):
    now = _now()
    run(registry.put(revocation(lasts=0.3, rid="a", start=now)))
    run(registry.put(revocation(lasts=0.8, rid="b", start=now)))
    time.sleep(0.45)
    assert registry.lookup_sync("token", "jti-1") is True
    time.sleep(0.5)
    assert registry.lookup_sync("token", "jti-1") is False


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(params=["memory", "redis"])
def unreachable(request):
    if request.param == "memory":
        reg = MemoryRegistry()
        reg.available = False
    else:
        reg = RedisRegistry(f"redis://127.0.0.1:{_closed_port()}/0", timeout_s=0.5)
    yield reg
    asyncio.run(reg.close())


def test_an_outage_is_unknown_never_not_revoked(unreachable):
    assert run(unreachable.lookup("token", "jti-1")) is None
    assert unreachable.lookup_sync("token", "jti-1") is None
    with pytest.raises(RegistryUnavailableError):
        run(unreachable.put(revocation(start=_now())))


def test_redis_keys_follow_the_contract(redis_url, redis_client, fresh_topic_prefix):
    registry = RedisRegistry(
        redis_url, key_prefix=f"{fresh_topic_prefix}:revoked:", sync_topic=None
    )
    rev = revocation("workload", "spiffe://acme.example/agent/x", lasts=60, start=_now())
    registry.put_sync(rev)
    key = f"{fresh_topic_prefix}:revoked:workload:spiffe://acme.example/agent/x"
    assert redis_client.get(key) == rev.model_dump_json(exclude_none=True).encode()
    expire_ms = redis_client.pexpiretime(key)
    assert abs(expire_ms - rev.not_after.timestamp() * 1000) <= 1
    registry.close_sync()


def test_a_failed_lookup_trips_the_breaker_so_calls_stay_fast():
    registry = RedisRegistry(f"redis://127.0.0.1:{_closed_port()}/0", timeout_s=0.5, backoff_s=5)
    assert registry.lookup_sync("token", "a") is None
    started = time.perf_counter()
    for _ in range(100):
        assert registry.lookup_sync("token", "a") is None
    assert time.perf_counter() - started < 0.05
    registry.close_sync()
