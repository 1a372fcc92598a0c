"""What the worker can learn of the input it has not applied yet (``streams.input_fetch`` knows)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _nothing() -> bool:
    return False


def _no_partition(_partition: int) -> bool:
    return False


def _no_count(_partition: int) -> int | None:
    return None


@dataclass(frozen=True, slots=True)
class InputLag:
    """What the worker can learn of input it has not applied yet."""

    behind: Callable[[int], bool] = _no_partition  # an intents partition has records unread
    buffered: Callable[[], bool] = _nothing  # records were read but not handed over yet
    records: Callable[[int], int | None] = _no_count  # records not taken yet on a partition
