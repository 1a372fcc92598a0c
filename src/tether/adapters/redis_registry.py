"""The Redis revocation registry: ``tether:revoked:<kind>:<id>`` keys expiring at ``not_after``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
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
from tether.models.outputs import Reinstatement, Revocation, TargetKind
from tether.settings import Settings
from tether.topics import REVOCATIONS


def _text(value: object) -> str | None:
    return value.decode() if isinstance(value, bytes) else value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    text = _text(value)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


# Store the revocation unless the key already lives at least as long, or an operator's
# reinstatement (KEYS[2]: the epoch ms it lifts up to) lifts it: issued (ARGV[3], epoch ms) at or
# before that. PEXPIRETIME (Redis 7.0+) answers -2 for a missing key and -1 for a key without
# expiry, which is never shortened.
PUT_SCRIPT: Final = """
local deadline = tonumber(ARGV[2])
local lift = redis.call('GET', KEYS[2])
if lift and tonumber(ARGV[3]) <= tonumber(lift) then
  return 0
end
local current = redis.call('PEXPIRETIME', KEYS[1])
if current == -1 or current >= deadline then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
return 1
"""


# An operator's reinstatement (docs/operators.md): delete the revocation held (KEYS[1]) if it is
# still the one read (ARGV[1]) and was issued at or before the lift (the caller compared), and
# move the lift mark (KEYS[2]) forward to ARGV[2] epoch ms, kept until ARGV[3] epoch ms.
REINSTATE_SCRIPT: Final = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
local lift = redis.call('GET', KEYS[2])
local keep = tonumber(ARGV[3])
local kept = redis.call('PEXPIRETIME', KEYS[2])
if kept > keep then
  keep = kept
end
if not lift or tonumber(lift) < tonumber(ARGV[2]) then
  lift = ARGV[2]
end
redis.call('SET', KEYS[2], lift, 'PXAT', keep)
return 1
"""


# Move freshness heartbeats forward, each only if Redis still holds the value this sync wrote last
# (ARGV: expected, new; expected "" when it wrote none): atomic, so a flush or a failover between
# a check and a write cannot go unnoticed. Returns the 1-based indexes whose value was not there.
ADVANCE_FRESH_SCRIPT: Final = """
local lost = {}
for i, key in ipairs(KEYS) do
  local expected = ARGV[2 * i - 1]
  local current = redis.call('GET', key)
  if expected ~= '' and current ~= expected then
    lost[#lost + 1] = i
  else
    redis.call('SET', key, ARGV[2 * i])
  end
end
return lost
"""


# The registry sync's marks, one per partition of the revocations topic: "synced" once the registry
# holds everything that partition carried, "rebuilding" while it is being read again from the
# start. Outside ``tether:revoked:``, so gateways never mistake one for a revocation.
SYNC_MARK_PREFIX: Final = "tether:registry:sync:"
SYNCED: Final = "synced"
# The sync's freshness heartbeat, one per partition: the epoch milliseconds at which the worker
# was last known alive on that partition (a verified heartbeat read there), written only after
# everything the partition carried before that heartbeat is in Redis.
FRESH_PREFIX: Final = "tether:registry:fresh:"
# How many partitions the revocations topic has, as the sync last saw it.
PARTITIONS_PREFIX: Final = "tether:registry:partitions:"
DEFAULT_SYNC_TOPIC: Final = "tether.revocations"


class RedisRegistry:
    """A :class:`~tether.adapters.registry.RevocationRegistry` on Redis 7.

    Each live revocation is one key, ``<key_prefix><kind>:<id>``, whose value is the revocation's
    JSON and which Redis expires at ``not_after`` (``PXAT``). A small Lua script keeps the later
    ``not_after`` when a target is revoked twice, so writes are idempotent and order-free.

    Lookups never turn an error into "not revoked": they answer None. After a failed lookup the
    registry answers None without contacting Redis for ``backoff_s`` (a circuit breaker), so a
    gateway whose fallback is down is not slowed down by a connect timeout per call.

    Nor do they trust an empty or lagging Redis (restarted without persistence, a failover to
    a lagging replica, a flush with the sync marks set again): with ``sync_topic`` set (the
    default; :meth:`from_settings` names the configured revocations topic) a key that is
    absent answers False only while the registry sync vouches for Redis: the partition count
    is known, every partition's sync mark says ``synced``, and every partition's freshness
    heartbeat (:data:`FRESH_PREFIX`) is at most ``sync_staleness_s`` old. Otherwise it answers
    None (counted in :attr:`unvouched`), and the gateway's tier decides. A key that is present
    answers True whatever the marks say.

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
        sync_topic: str | None = DEFAULT_SYNC_TOPIC,
        sync_staleness_s: float = 10.0,
    ) -> None:
        """Configure the registry; nothing connects yet.

        Args:
            url: ``redis://[:password@]host:port/db`` (or ``rediss://``).
            key_prefix: prepended to ``<kind>:<id>``; the contract's is ``tether:revoked:``.
            timeout_s: connect and read timeout of each Redis call.
            retries: retries after a connection error or timeout, without backoff.
            backoff_s: after a failed lookup, answer None for this long without asking Redis.
            clock: epoch seconds, for skipping revocations that have already expired.
            sync_topic: the revocations topic whose registry sync must vouch for Redis before
                an absent key means "not revoked"; None trusts every answer (tests of the
                registry itself, tools).
            sync_staleness_s: how old the sync's freshness heartbeats may be.
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
        self._sync_topic = sync_topic
        self._sync_staleness_ms = int(sync_staleness_s * 1000)
        self.unvouched = 0
        """Lookups answered None (not False) because the registry sync did not vouch for Redis."""

    @classmethod
    def from_settings(
        cls, settings: Settings, *, key_prefix: str = DEFAULT_KEY_PREFIX, timeout_s: float = 1.0
    ) -> RedisRegistry:
        """A registry on ``settings.redis_url`` (``TETHER_REDIS_URL``), vouched for by the sync
        of the configured revocations topic within ``TETHER_REGISTRY_STALENESS_S``."""
        return cls(
            settings.redis_url.get_secret_value(),
            key_prefix=key_prefix,
            timeout_s=timeout_s,
            sync_topic=settings.topic(REVOCATIONS),
            sync_staleness_s=settings.registry_staleness_s,
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
        key, value, until, issued = args
        try:
            client = self._async_client()
            await client.register_script(PUT_SCRIPT)(
                keys=[key, self._lift_key(key)], args=[value, until, issued]
            )
        except redis.RedisError as exc:
            raise RegistryUnavailableError(f"cannot record {key} in Redis: {exc}") from exc

    async def lookup(self, kind: TargetKind, id: str) -> bool | None:
        """True while revoked; False when not and the sync vouches for Redis; None otherwise
        (Redis could not be asked, or may have lost revocations)."""
        if time.monotonic() < self._down_until:
            return None
        try:
            client = self._async_client()
            if await client.exists(key_for(kind, id, self._prefix)):
                return True
            if self._sync_topic is None:
                return False
            count = await client.get(f"{PARTITIONS_PREFIX}{self._sync_topic}")
            values = await client.mget(self._vouch_keys(count)) if count else []
        except redis.RedisError:
            self._down_until = time.monotonic() + self._backoff_s
            return None
        return self._answer(count, values)

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
        key, value, until, issued = args
        try:
            client = self._sync_client()
            client.register_script(PUT_SCRIPT)(
                keys=[key, self._lift_key(key)], args=[value, until, issued]
            )
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
            for key, value, until, issued in writes:
                script(keys=[key, self._lift_key(key)], args=[value, until, issued], client=pipe)
            pipe.execute()
        except redis.RedisError as exc:
            raise RegistryUnavailableError(
                f"cannot record {len(writes)} revocations: {exc}"
            ) from exc

    def reinstate_sync(self, item: Reinstatement) -> bool:
        """Apply an operator's reinstatement (verified by the caller): the target's revocation
        held is deleted if it was issued at or before ``item.issued_at``, and a lift mark
        (``<key_prefix minus ':'>-lifted:<kind>:<id>``, never read by lookups) keeps a lifted
        revocation written again later from coming back, until ``item.not_after``. A later
        revocation held stays. Returns whether a revocation was deleted.

        Raises:
            RegistryUnavailableError: Redis could not be read or written.
        """
        key = key_for(item.target.kind, item.target.id, self._prefix)
        at = epoch_ms(item.issued_at)
        until = max(epoch_ms(item.not_after), int(self._clock() * 1000) + 1000)
        try:
            client = self._sync_client()
            held = client.get(key)
            lifts = b""
            if isinstance(held, bytes):
                try:
                    issued = epoch_ms(Revocation.model_validate_json(held).issued_at)
                except ValueError:
                    issued = -1  # not a revocation tether wrote: nothing to keep it for
                if issued <= at:
                    lifts = held
            client.register_script(REINSTATE_SCRIPT)(
                keys=[key, self._lift_key(key)], args=[lifts, at, until]
            )
        except redis.RedisError as exc:
            raise RegistryUnavailableError(f"cannot reinstate {key} in Redis: {exc}") from exc
        return bool(lifts)

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
            client = self._sync_client()
            if client.exists(key_for(kind, id, self._prefix)):
                return True
            if self._sync_topic is None:
                return False
            count = client.get(f"{PARTITIONS_PREFIX}{self._sync_topic}")
            values = client.mget(self._vouch_keys(count)) if count else []
        except redis.RedisError:
            self._down_until = time.monotonic() + self._backoff_s
            return None
        return self._answer(count, values)

    def vouched(self) -> bool:
        """Whether the registry sync vouches for Redis now (see the class docstring)."""
        if self._sync_topic is None:
            return True
        client = self._sync_client()
        count = client.get(f"{PARTITIONS_PREFIX}{self._sync_topic}")
        values = client.mget(self._vouch_keys(count)) if count else []
        return self._answer(count, values) is False

    # -- the registry sync's bookkeeping ----------------------------------------------------

    def set_partition_count(self, topic: str, count: int) -> None:
        """Record how many partitions ``topic`` has (the marks gateways must find).

        Raises:
            RegistryUnavailableError: Redis could not be written.
        """
        try:
            self._sync_client().set(f"{PARTITIONS_PREFIX}{topic}", count)
        except redis.RedisError as exc:
            raise RegistryUnavailableError(f"cannot write the partition count: {exc}") from exc

    def advance_fresh(self, topic: str, moves: Mapping[int, tuple[int | None, int]]) -> list[int]:
        """Move the freshness heartbeats of some partitions forward: ``{partition: (the value
        this sync wrote last or None, the new epoch ms)}``. Atomically, a partition whose
        value is not the one expected is left alone and returned: Redis lost writes there.

        Raises:
            RegistryUnavailableError: Redis could not be written.
        """
        if not moves:
            return []
        partitions = list(moves)
        keys = [f"{FRESH_PREFIX}{topic}:{p}" for p in partitions]
        args: list[str] = []
        for p in partitions:
            expected, new = moves[p]
            args += ["" if expected is None else str(expected), str(new)]
        try:
            lost = self._sync_client().register_script(ADVANCE_FRESH_SCRIPT)(keys=keys, args=args)
        except redis.RedisError as exc:
            raise RegistryUnavailableError(f"cannot write a freshness heartbeat: {exc}") from exc
        return [partitions[int(i) - 1] for i in lost]

    def fresh_marks(self, topic: str, partitions: Sequence[int]) -> list[int | None]:
        """The freshness heartbeat of each partition (None: Redis has none).

        Raises:
            RegistryUnavailableError: Redis could not be read.
        """
        if not partitions:
            return []
        try:
            values = self._sync_client().mget([f"{FRESH_PREFIX}{topic}:{p}" for p in partitions])
        except redis.RedisError as exc:
            raise RegistryUnavailableError(f"cannot read the freshness heartbeats: {exc}") from exc
        return [_int(v) for v in values]

    def _vouch_keys(self, count: object) -> list[str]:
        n = _int(count) or 0
        topic = self._sync_topic
        marks = [f"{SYNC_MARK_PREFIX}{topic}:{p}" for p in range(n)]
        return marks + [f"{FRESH_PREFIX}{topic}:{p}" for p in range(n)]

    def _answer(self, count: object, values: Sequence[object]) -> bool | None:
        """False when the marks and freshness heartbeats vouch for an absent key, else None."""
        n = _int(count)
        if n is not None and n > 0 and len(values) == 2 * n:
            oldest = int(self._clock() * 1000) - self._sync_staleness_ms
            marks, fresh = values[:n], values[n:]
            if all(_text(m) == SYNCED for m in marks) and all(
                (ms := _int(f)) is not None and ms >= oldest for f in fresh
            ):
                return False
        self.unvouched += 1
        return None

    def close_sync(self) -> None:
        """Close the sync connections."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    # -- internals -------------------------------------------------------------------------

    def _put_args(self, rev: Revocation) -> tuple[str, bytes, int, int] | None:
        until = epoch_ms(rev.not_after)
        if until <= int(self._clock() * 1000):
            return None  # already over: nothing to enforce
        key = key_for(rev.target.kind, rev.target.id, self._prefix)
        return key, encode(rev), until, epoch_ms(rev.issued_at)

    def _lift_key(self, key: str) -> str:
        """The lift mark of a revocation key: outside the key prefix, so no lookup reads it."""
        return f"{self._prefix.rstrip(':')}-lifted:{key[len(self._prefix) :]}"

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
