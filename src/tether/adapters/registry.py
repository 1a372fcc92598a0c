"""The revocation registry port: a shared, expiring record of what is revoked (Redis or a fake)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol, runtime_checkable

from tether.models.outputs import Revocation, TargetKind

Clock = Callable[[], float]
"""Wall-clock seconds since the epoch (``time.time``); injected so tests control time."""

DEFAULT_KEY_PREFIX: Final = "tether:revoked:"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


class RegistryUnavailableError(ConnectionError):
    """The registry could not be written (the caller should retry; nothing was recorded)."""


@runtime_checkable
class RevocationLookup(Protocol):
    """Synchronous "is this revoked?" (the watcher's fallback when its own feed is stale)."""

    def lookup_sync(self, kind: TargetKind, id: str) -> bool | None:
        """True: revoked now. False: not revoked. None: unknown (the registry could not be asked)."""
        ...


@runtime_checkable
class RevocationRegistry(RevocationLookup, Protocol):
    """A shared record of live revocations, each expiring at its ``not_after``.

    Semantics every implementation shares (proved by ``tests/integration/test_registry_contract``):

    * ``put`` is idempotent; a revocation whose ``not_after`` has passed is not stored;
    * when a target is revoked twice, the later ``not_after`` wins;
    * ``lookup`` answers True while ``now < not_after``, then False;
    * an error is never an answer: ``lookup`` returns None ("unknown") when the registry could
      not be asked, never False; ``put`` raises :class:`RegistryUnavailableError`.
    """

    async def put(self, rev: Revocation) -> None:
        """Record ``rev`` until its ``not_after`` (keeping a later one already recorded)."""
        ...

    async def lookup(self, kind: TargetKind, id: str) -> bool | None:
        """True: revoked now. False: not revoked. None: unknown (the registry could not be asked)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def key_for(kind: str, id: str, prefix: str = DEFAULT_KEY_PREFIX) -> str:
    """The registry key of a target: ``tether:revoked:<kind>:<id>``."""
    return f"{prefix}{kind}:{id}"


def epoch_ms(moment: datetime) -> int:
    """``moment`` as integer epoch milliseconds, rounded up (enforcement never ends early)."""
    return -((_EPOCH - moment) // _MS)
