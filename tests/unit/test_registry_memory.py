"""The in-memory revocation registry: expiry by the injected clock, idempotence, outages."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from sdk_helpers import T0, FakeClock, revocation
from tether.adapters.memory_registry import MemoryRegistry
from tether.adapters.registry import RegistryUnavailableError, RevocationRegistry


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def registry(clock):
    return MemoryRegistry(clock=clock)


def test_satisfies_the_port(registry):
    assert isinstance(registry, RevocationRegistry)


def test_revoked_until_not_after_to_the_millisecond(registry, clock):
    registry.put_sync(revocation(lasts=60))
    assert registry.lookup_sync("token", "jti-1") is True
    assert registry.lookup_sync("workflow", "jti-1") is False
    clock.advance(60)
    assert registry.lookup_sync("token", "jti-1") is True  # Redis: live while now <= PXAT
    clock.advance(0.001)
    assert registry.lookup_sync("token", "jti-1") is False
    assert len(registry) == 0


def test_an_already_expired_revocation_is_not_stored(registry):
    registry.put_sync(revocation(lasts=-0.5))
    assert registry.lookup_sync("token", "jti-1") is False


def test_later_not_after_wins_and_duplicates_are_harmless(registry, clock):
    long = revocation(lasts=600, rid="long")
    registry.put_sync(long)
    registry.put_sync(revocation(lasts=60, rid="short"))
    registry.put_sync(long)
    assert registry.get("token", "jti-1") == long
    clock.advance(120)
    assert registry.lookup_sync("token", "jti-1") is True
    registry.put_sync(revocation(lasts=900, rid="longer"))
    assert registry.get("token", "jti-1").revocation_id == "longer"
    assert len(registry) == 1


def test_an_outage_is_unknown_not_false(registry):
    registry.put_sync(revocation())
    registry.available = False
    assert registry.lookup_sync("token", "jti-1") is None
    assert registry.lookup_sync("token", "never") is None
    with pytest.raises(RegistryUnavailableError):
        registry.put_sync(revocation(ident="jti-2"))


def test_the_async_api_agrees(registry, clock):
    async def scenario():
        await registry.put(revocation(lasts=10))
        first = await registry.lookup("token", "jti-1")
        clock.advance(11)
        second = await registry.lookup("token", "jti-1")
        await registry.close()
        return first, second

    assert asyncio.run(scenario()) == (True, False)


def test_expiry_follows_not_after_not_issued_at(registry, clock):
    rev = revocation(lasts=30).model_copy(update={"issued_at": T0 - timedelta(days=1)})
    registry.put_sync(rev)
    clock.advance(29)
    assert registry.lookup_sync("token", "jti-1") is True
