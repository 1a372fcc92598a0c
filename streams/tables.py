"""A ``MutableMapping`` over a faust table that defers changelog writes until outputs are safe.

The core mutates state in place and assigns it back; this store records which keys changed.
``changes`` then gives a snapshot of each changed key for the table's changelog, for the
partition the key lives on (remembered from the input record that created it, and kept inside the state itself so it
survives recovery). The worker publishes them only after Kafka has acknowledged every output
the changes caused: a crash in between replays the input instead of losing a revocation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Generic, Protocol, TypeVar

from .outputs import Batch


class HasPartition(Protocol):
    """State that remembers its partition."""

    partition: int


V = TypeVar("V", bound=HasPartition)


class TableStore(MutableMapping[str, V], Generic[V]):
    """The session or token table as the core sees it."""

    def __init__(self, table: Any, dump: Callable[[V], bytes]) -> None:
        self.table = table
        self._dump = dump
        self.current_partition = -1  # the partition of the input record being applied
        self._dirty: dict[str, int] = {}

    @property
    def _data(self) -> Any:
        return self.table.data  # streams.store.StateStore

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

    def partition_of(self, key: str) -> int | None:
        """The partition ``key`` lives on (or lived on, deleted since the last ``changes``)."""
        value = self._data.get(key)
        return value.partition if value is not None else self._dirty.get(key)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data.keys()))

    def __len__(self) -> int:
        return len(self._data)

    @property
    def dirty(self) -> int:
        """Keys changed since the last ``changes``."""
        return len(self._dirty)

    def changes(self) -> Batch:
        """The changelog records for every key changed since the last call (a tombstone for a
        deleted key), each pinned to its partition and serialized now. Faust's own changelog
        writes are buffered and its flush before an offset commit is best-effort, so the
        worker publishes these itself and waits for Kafka before acknowledging input."""
        data = self._data
        topic = self.table.changelog_topic.get_topic_name()
        batch = Batch()
        for key, partition in self._dirty.items():
            if partition < 0:
                continue
            value = data.get(key)
            raw_key = key.encode()
            if value is None:
                batch.add(topic, raw_key, None, partition)  # a tombstone: faust deletes the key
            else:
                batch.add(topic, raw_key, self._dump(value), partition)
        self._dirty.clear()
        return batch
