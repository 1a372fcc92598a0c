"""A ``MutableMapping`` over a faust table that defers changelog writes until outputs are safe.

The core mutates state in place and assigns it back; this store records which keys changed.
``flush`` then writes each changed key to the table's changelog, to the partition the key lives
on (remembered from the input record that created it, and kept inside the state itself so it
survives recovery). The worker calls ``flush`` only after Kafka has acknowledged every output
the changes caused: a crash in between replays the input instead of losing a revocation.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any, Generic, Protocol, TypeVar


class HasPartition(Protocol):
    """State that remembers its partition."""

    partition: int


V = TypeVar("V", bound=HasPartition)


class TableStore(MutableMapping[str, V], Generic[V]):
    """The session or token table as the core sees it."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.current_partition = -1  # the partition of the input record being applied
        self._dirty: dict[str, int] = {}

    @property
    def _data(self) -> Any:
        return self.table.data  # faust's Store (memory): a dict-like with _key_partition

    def __getitem__(self, key: str) -> V:
        value: V = self._data[key]
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """Like ``dict.get``."""
        return self._data.get(key, default)

    def __setitem__(self, key: str, value: V) -> None:
        if value.partition < 0:
            value.partition = self.current_partition
        self._data[key] = value
        self._dirty[key] = value.partition

    def __delitem__(self, key: str) -> None:
        value = self._data.pop(key)
        self._dirty[key] = value.partition

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data.keys()))

    def __len__(self) -> int:
        return len(self._data)

    @property
    def dirty(self) -> int:
        """Keys changed since the last flush."""
        return len(self._dirty)

    def flush(self) -> int:
        """Write every changed key to the changelog (a tombstone for a deleted one)."""
        data = self._data
        key_partition = getattr(data, "_key_partition", None)
        table = self.table
        n = 0
        for key, partition in self._dirty.items():
            if partition < 0:
                continue
            value = data.get(key)
            if value is None:
                table.send_changelog(partition, key, None, value_serializer="raw")
                if key_partition is not None:
                    key_partition.pop(key, None)
            else:
                table.send_changelog(partition, key, value)
                if key_partition is not None:
                    key_partition[key] = partition
            n += 1
        self._dirty.clear()
        return n
