"""Which fetched input records to hand over, so that no offset is ever skipped unprocessed.

faust marks a hole in a partition's offsets as a "gap" that its offset commit treats as
acknowledged. A hole can be real (a transaction marker or an aborted record occupies an offset)
or an artefact of the consumer: records fetched and then not delivered (a rebalance cut the
fetch short, a partition was sought elsewhere) leave the consumer's position past them. Treating
an artefact as a gap commits past records nobody processed: for tether, lost revocations.

``OffsetGuard`` keeps, per input partition, the next offset that must be delivered. A record
below it was delivered already (a seek went back): skip it. A record above it is a hole: the
partition is sought back to the missing offset and the rest of its records in this fetch are
skipped (other partitions carry on). Only when the first record read after that seek is still
above the missing offset are the offsets in between accepted as a real gap, and the gap ends
just before that record (faust's own gap would include the record itself, acknowledging it
before it was processed).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

TP = TypeVar("TP")


class Verdict(Enum):
    """What to do with one fetched record."""

    DELIVER = "deliver"  # the next record of its partition
    SKIP = "skip"  # delivered before (a seek went back), or its partition is being re-read
    REWIND = "rewind"  # a hole: seek the partition back to ``OffsetGuard.rewind_to``
    GAP = "gap"  # a confirmed real gap before this record: register it, then deliver


@dataclass(slots=True)
class _State:
    next: int | None = None  # the next offset to deliver (None: take the first one read)
    confirming: int | None = None  # sought back to this offset: the next record confirms a gap
    rewinding: bool = False  # skipping the rest of this fetch for a pending seek


class OffsetGuard(Generic[TP]):
    """Per-partition delivery positions of the input topics."""

    def __init__(self) -> None:
        self._states: dict[TP, _State] = {}
        self.rewinds = 0
        self.gaps = 0
        self.skipped = 0

    def position(self, tp: TP) -> int | None:
        """The next offset to deliver for ``tp`` (None when unknown)."""
        state = self._states.get(tp)
        return None if state is None else state.next

    def seek(self, tp: TP, offset: int | None) -> None:
        """The consumer was sought to ``offset`` (None: unknown, take the first record read).
        The seek that ``rewind_to`` asked for keeps its pending confirmation."""
        state = self._states.get(tp)
        confirming = state.confirming if state is not None and offset is not None else None
        self._states[tp] = _State(
            next=offset, confirming=confirming if confirming == offset else None
        )

    def forget(self, tp: TP) -> None:
        """``tp`` was revoked."""
        self._states.pop(tp, None)

    def check(self, tp: TP, offset: int) -> Verdict:
        """What to do with the record at ``offset`` of ``tp``."""
        state = self._states.get(tp)
        if state is None:
            self._states[tp] = state = _State()
        if state.rewinding:
            return Verdict.SKIP
        expected = state.next
        if expected is None or offset == expected:
            state.confirming = None
            return Verdict.DELIVER
        if offset < expected:
            self.skipped += 1
            return Verdict.SKIP
        if state.confirming == expected:  # read again from ``expected`` and still a hole
            state.confirming = None
            self.gaps += 1
            return Verdict.GAP
        state.rewinding = True
        self.rewinds += 1
        return Verdict.REWIND

    def delivered(self, tp: TP, offset: int) -> None:
        """The record at ``offset`` was handed over."""
        state = self._states.get(tp)
        if state is None:
            self._states[tp] = _State(next=offset + 1)
        else:
            state.next = offset + 1

    def gap(self, tp: TP, offset: int) -> tuple[int, int]:
        """The confirmed gap before the record at ``offset``: ``(first, last)`` inclusive."""
        expected = self._states[tp].next
        assert expected is not None  # noqa: S101  # GAP is only returned with a known position
        return expected, offset - 1

    def rewind_to(self, tp: TP) -> int:
        """Where to seek ``tp`` after a REWIND (the fetch is over: it is read again from
        there, and the first record read then confirms or refutes the gap)."""
        state = self._states[tp]
        assert state.next is not None  # noqa: S101  # REWIND is only returned with a known position
        state.rewinding = False
        state.confirming = state.next
        return state.next
