"""Table recovery at fetch speed: changelog records go from the consumer loop into the tables.

faust restores a table by sending each changelog record through its conductor, an Event, an
asyncio queue and its recovery loop, one at a time: about 4,000 records a second here, so a
worker holding 100,000 sessions (and their tokens) needed most of a minute to come back after a
crash. While faust's recovery is reading the changelogs of the partitions it just assigned, the
patched consumer loop gives their records to this class instead. It records each offset where
faust's recovery looks for it (``active_offsets``, which decides when recovery is complete),
keeps only the newest value per key as raw bytes, and decodes and installs each key once, when
the last record has arrived. The record that completes recovery is then passed on to faust's
own path, so faust finishes exactly as it always does (flush, "recovery complete", resume the
input partitions, seek them to their committed offsets).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

_log = logging.getLogger("tether.worker")

Loader = Callable[[bytes, str], Any]  # (changelog value, its key): a state value


class FastRecovery:
    """Absorbs the changelog records of an active recovery and installs them in bulk."""

    def __init__(self, tables: Any, loaders: dict[str, Loader]) -> None:
        self._tables = tables  # faust's TableManager; its ``recovery`` exists once the app runs
        self._loaders = loaders  # by table name
        self._raw: dict[Any, dict[str, tuple[bytes | None, int]]] = {}  # table -> key -> value
        self._started: float | None = None
        self.records = 0
        self.installed = 0

    @property
    def _recovery(self) -> Any:
        return self._tables.recovery

    def reset(self) -> None:
        """Forget what was absorbed (a rebalance restarts recovery from the changelog start)."""
        self._raw.clear()
        self._started = None

    def absorb(self, tp: Any, message: Any) -> bool:
        """Take a changelog record of a partition being recovered; False if it is not one."""
        recovery = self._recovery
        if not recovery.in_recovery or tp not in recovery.active_tps:
            return False
        table = recovery.tp_to_table.get(tp)
        if table is None or table.name not in self._loaders:
            return False
        offsets = recovery.active_offsets
        seen = offsets.get(tp)
        if seen is not None and message.offset <= seen:
            return True  # read again after a seek: already absorbed
        offsets[tp] = message.offset
        key = message.key
        if key is None:
            _log.warning("changelog record without a key at %r@%d", tp, message.offset)
            return True
        if self._started is None:
            self._started = time.monotonic()
        self._raw.setdefault(table, {})[key.decode()] = (message.value, tp.partition)
        self.records += 1
        return True

    def complete(self) -> bool:
        """Whether every active changelog partition has been read to its highwater."""
        recovery = self._recovery
        return bool(recovery.in_recovery) and not recovery.need_recovery()

    def install(self) -> None:
        """Decode the newest value of every absorbed key into its table (a tombstone deletes).

        Python's cyclic garbage collector is off meanwhile: the hundreds of thousands of
        objects made here would set off full collections that walk every one of them again
        and again. Afterwards they are frozen out of its view (``gc.freeze``), so that later
        collections do not walk them either. State holds no reference cycles: reference
        counting frees it when a key is replaced or deleted, frozen or not."""
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._install()
        finally:
            gc.freeze()
            if collecting:
                gc.enable()

    def _install(self) -> None:
        for table, entries in self._raw.items():
            load = self._loaders[table.name]
            data = table.data.data  # the dict inside faust's memory store (streams.store)
            for key, (value, partition) in entries.items():
                if value is None:
                    data.pop(key, None)
                    continue
                state = load(value, key)  # the key string doubles as the state's own id
                state.partition = partition  # the key's partition (state remembers it)
                data[key] = state
                self.installed += 1
        took = time.monotonic() - self._started if self._started is not None else 0.0
        if self._raw:
            _log.info(
                "recovered %d keys from %d changelog records in %.2fs",
                sum(len(e) for e in self._raw.values()),
                self.records,
                took,
            )
        self._raw.clear()
        self._started = None
