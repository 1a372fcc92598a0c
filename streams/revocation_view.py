"""The worker's revocation view across workers: every signed revocation of every partition.

Why. The worker judges each decision against the revocations in force (``tether.core.decisions``)
through its ``RevocationFloor``: what it published itself and what its ledger read. The ledger's
consumer group shares the revocations partitions out among the workers, so on its own the
floor misses what another worker revoked on a partition this worker's ledger does not own; a
call with that token was then logged ``allow`` while every gateway denied it.

How. A ``tether.sdk.Watcher`` (no consumer group, no commits, every partition from the start,
each record verified as a gateway verifies it) notes every revocation it applies into the
floor. The decision log then knows what a gateway's watcher knows, at the same latency; the
worker's own revocations are in the floor before they are even published.

Cost: one signature verification per revocation record (off the detection path, on the
watcher's thread) and one dict entry per live target.
"""

from __future__ import annotations

from tether.models.outputs import Heartbeat, Reinstatement, Revocation
from tether.sdk.revocation_set import RecordVerifier
from tether.sdk.watcher import Watcher
from tether.settings import Settings

from .ledger import RevocationFloor


def revocation_view(
    settings: Settings, verifier: RecordVerifier, floor: RevocationFloor, *, client_id: str
) -> Watcher:
    """A watcher (not started) that notes every revocation it applies into ``floor``."""

    def note(record: Revocation | Heartbeat | Reinstatement) -> None:
        if isinstance(record, Revocation):
            floor.note(
                record.target.key, record.not_after.timestamp(), record.issued_at.timestamp()
            )
        elif isinstance(record, Reinstatement):  # an operator's, verified: lifts what it names
            floor.lift(record.target.key, record.issued_at.timestamp())

    return Watcher(
        settings,
        verifier=verifier,
        on_record=note,
        client_id=client_id,
        staleness_s=float("inf"),  # only its records are used, never its freshness
    )
