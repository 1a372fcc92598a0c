"""The Redis revocation registry: ``tether:revoked:<kind>:<id>`` keys expiring at ``not_after``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Final

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ConstantBackoff
from redis.commands.core import Script
from redis.retry import Retry

from tether.adapters.registry import (
    DEFAULT_KEY_PREFIX,
    Clock,
    RegistryUnavailableError,
    epoch_ms,
    key_for,
)
from tether.models.codec import encode
from tether.models.outputs import Revocation, TargetKind
from tether.settings import Settings

# Store the revocation unless the key already lives at least as long. PEXPIRETIME (Redis 7.0+)
# answers -2 for a missing key and -1 for a key without expiry, which is never shortened.
PUT_SCRIPT: Final = """
local deadline = tonumber(ARGV[2])
local current = redis.call('PEXPIRETIME', KEYS[1])
if current == -1 or current >= deadline then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
return 1
"""


# The registry sync's marks, one per partition of the revocations topic: "synced" once the registry
# holds everything that partition carried, "rebuilding" while it is being read again from the
# start. Outside ``tether:revoked:``, so gateways never mistake one for a revocation.
SYNC_MARK_PREFIX: Final = "tether:registry:sync:"


class RedisRegistry:
    """A :class:`~tether.adapters.registry.RevocationRegistry` on Redis 7.

    Each live revocation is one key, ``<key_prefix><kind>:<id>``, whose value is the revocation's
    JSON and which Redis expires at ``not_after`` (``PXAT``). A small Lua script keeps the later
    ``not_after`` when a target is revoked twice, so writes are idempotent and order-free.

    Lookups never turn an error into "not revoked": they answer None. After a failed lookup the
    registry answers None without contacting Redis for ``backoff_s`` (a circuit breaker), so a
    gateway whose fallback is down is not slowed down by a connect timeout per call.

    Connections are made on first use, separately for the async and the sync API.
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        timeout_s: float = 1.0,
        retries: int = 1,
        backoff_s: float = 1.0,
        clock: Clock = time.time,
    ) -> None:
        """Configure the registry; nothing connects yet.

        Args:
            url: ``redis://[:password@]host:port/db`` (or ``rediss://``).
            key_prefix: prepended to ``<kind>:<id>``; the contract's is ``tether:revoked:``.
            timeout_s: connect and read timeout of each Redis call.
            retries: retries after a connection error or timeout, without backoff.
            backoff_s: after a failed lookup, answer None for this long without asking Redis.
            clock: epoch seconds, for skipping revocations that have already expired.
        """
        self._url = url
        self._prefix = key_prefix
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._clock = clock
        self._async: redis.asyncio.Redis | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None  # the loop it belongs to
        self._sync: redis.Redis | None = None
        self._script: Script | None = None  # PUT_SCRIPT registered with the sync client
        self._down_until = 0.0  # time.monotonic() before which lookups answer None at once

    @classmethod
    def from_settings(
        cls, settings: Settings, *, key_prefix: str = DEFAULT_KEY_PREFIX, timeout_s: float = 1.0
    ) -> RedisRegistry:
        """A registry on ``settings.redis_url`` (``TETHER_REDIS_URL``)."""
        return cls(
            settings.redis_url.get_secret_value(), key_prefix=key_prefix, timeout_s=timeout_s
        )

    # -- async API (the worker) ------------------------------------------------------------

    async def put(self, rev: Revocation) -> None:
        """Record ``rev`` until its ``not_after``; a later ``not_after`` already recorded wins.

        Raises:
            RegistryUnavailableError: Redis could not be written.
        """
        args = self._put_args(rev)
        if args is None:
            return
        key, value, until = args
        try:
            client = self._async_client()
            await client.register_script(PUT_SCRIPT)(keys=[key], args=[value, until])
        except redis.RedisError as exc:
            raise RegistryUnavailableError(f"cannot record {key} in Redis: {exc}") from exc

    async def lookup(self, kind: TargetKind, id: str) -> bool | None:
        """True while revoked, False when not, None when Redis could not be asked."""
        if time.monotonic() < self._down_until:
            return None
        try:
            found = await self._async_client().exists(key_for(kind, id, self._prefix))
        except redis.RedisError:
            self._down_until = time.monotonic() + self._backoff_s
            return None
        return bool(found)

    async def close(self) -> None:
        """Close the async connections (and the sync ones, if any)."""
        if self._async is not None and self._async_loop is asyncio.get_running_loop():
            await self._async.aclose()
        self._async = self._async_loop = None
        self.close_sync()

    # -- sync API (the watcher's fallback, scripts) ----------------------------------------

    def put_sync(self, rev: Revocation) -> None:
        """Synchronous :meth:`put`."""
        args = self._put_args(rev)
        if args is None:
            return
        key, value, until = args
        try:
            client = self._sync_client()
            client.register_script(PUT_SCRIPT)(keys=[key], args=[value, until])
        except redis.RedisError as exc:
            raise RegistryUnavailableError(f"cannot record {key} in Redis: {exc}") from exc

    def put_many_sync(self, revs: Sequence[Revocation]) -> None:
        """:meth:`put_sync` for many revocations in one round trip (a pipeline; each write is
        idempotent, so a batch that failed part way is simply written again).

        Raises:
            RegistryUnavailableError: Redis could not be written.
        """
        writes = [args for args in map(self._put_args, revs) if args is not None]
        if not writes:
            return
        try:
            client = self._sync_client()
            script = self._put_script(client)
            pipe = client.pipeline(transaction=False)
            for key, value, until in writes:
                script(keys=[key], args=[value, until], client=pipe)
            pipe.execute()
        except redis.RedisError as exc:
            raise RegistryUnavailableError(
                f"cannot record {len(writes)} revocations: {exc}"
            ) from exc

    def sync_marks(self, topic: str, partitions: Sequence[int]) -> list[str | None]:
        """The registry sync's mark of each partition of ``topic`` (None: Redis has none, as
        after a restart that lost its data).

        Raises:
            RegistryUnavailableError: Redis could not be read.
        """
        if not partitions:
            return []
        keys = [f"{SYNC_MARK_PREFIX}{topic}:{p}" for p in partitions]
        try:
            values = self._sync_client().mget(keys)
        except redis.RedisError as exc:
            raise RegistryUnavailableError(f"cannot read the sync marks: {exc}") from exc
        return [v.decode() if isinstance(v, bytes) else v for v in values]

    def set_sync_mark(self, topic: str, partition: int, mark: str) -> None:
        """Set the registry sync's mark of one partition of ``topic`` (no expiry).

        Raises:
            RegistryUnavailableError: Redis could not be written.
        """
        try:
            self._sync_client().set(f"{SYNC_MARK_PREFIX}{topic}:{partition}", mark)
        except redis.RedisError as exc:
            raise RegistryUnavailableError(f"cannot write a sync mark: {exc}") from exc

    def _put_script(self, client: redis.Redis) -> Script:
        if self._script is None:
            self._script = client.register_script(PUT_SCRIPT)
        return self._script

    def lookup_sync(self, kind: TargetKind, id: str) -> bool | None:
        """Synchronous :meth:`lookup` (thread-safe: the client pools connections)."""
        if time.monotonic() < self._down_until:
            return None
        try:
            found = self._sync_client().exists(key_for(kind, id, self._prefix))
        except redis.RedisError:
            self._down_until = time.monotonic() + self._backoff_s
            return None
        return bool(found)

    def close_sync(self) -> None:
        """Close the sync connections."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    # -- internals -------------------------------------------------------------------------

    def _put_args(self, rev: Revocation) -> tuple[str, bytes, int] | None:
        until = epoch_ms(rev.not_after)
        if until <= int(self._clock() * 1000):
            return None  # already over: nothing to enforce
        return key_for(rev.target.kind, rev.target.id, self._prefix), encode(rev), until

    def _async_client(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        if self._async is None or self._async_loop is not loop:
            # asyncio connections belong to the loop that opened them; a new loop (a restarted
            # app, a test) gets a new client instead of "Event loop is closed" errors.
            self._async_loop = loop
            self._async = redis.asyncio.Redis.from_url(
                self._url,
                socket_connect_timeout=self._timeout_s,
                socket_timeout=self._timeout_s,
                retry=AsyncRetry(ConstantBackoff(0), self._retries),
            )
        return self._async

    def _sync_client(self) -> redis.Redis:
        if self._sync is None:
            self._sync = redis.Redis.from_url(
                self._url,
                socket_connect_timeout=self._timeout_s,
                socket_timeout=self._timeout_s,
                retry=Retry(ConstantBackoff(0), self._retries),
            )
        return self._sync
