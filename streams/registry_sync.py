"""Keeps the Redis registry in step with the revocations topic (after Kafka acknowledged them).

The registry is a materialised view of the compacted topic: this consumer verifies each signed
revocation (a record anyone could write to the topic must not reach the gateways' shared
registry unverified), writes it to Redis and acknowledges the record only then. While Redis is down it retries and holds its
offsets, so after an outage the registry catches up from where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from streams.intake import InputRecord
from tether.adapters.registry import RegistryUnavailableError, RevocationRegistry
from tether.models.outputs import Revocation
from tether.security import SetRejected, SetVerifier

_log = logging.getLogger("tether.registry")


class RegistrySync:
    """Writes revocation records to the registry, retrying until it accepts them."""

    def __init__(
        self, registry: RevocationRegistry, verifier: SetVerifier, *, max_backoff_s: float = 2.0
    ) -> None:
        self.registry = registry
        self.verifier = verifier
        self.max_backoff_s = max_backoff_s
        self.written = 0
        self.skipped = 0

    async def on_records(self, records: Sequence[InputRecord]) -> None:
        """Write every revocation in ``records`` (heartbeats and foreign records are skipped)."""
        for rec in records:
            rev = self._parse(rec)
            if rev is not None:
                await self._put(rev)

    def _parse(self, rec: InputRecord) -> Revocation | None:
        if not rec.value:
            return None  # a compaction tombstone: revocations leave only by their not_after
        try:
            record = self.verifier.verify(rec.value)
        except SetRejected as exc:
            if exc.reason != "replayed":  # a duplicate from at-least-once delivery: written
                self.skipped += 1
                _log.warning("rejected record on %s@%d: %s", rec.topic, rec.offset, exc)
            return None
        return record if isinstance(record, Revocation) else None

    async def _put(self, rev: Revocation) -> None:
        backoff = 0.05
        while True:
            try:
                await self.registry.put(rev)
                self.written += 1
                return
            except (RegistryUnavailableError, ConnectionError, OSError) as exc:
                _log.error("registry unavailable (%s); retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
