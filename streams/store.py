"""faust's in-memory table store, without its map from every key to its partition.

faust's memory store keeps ``_key_partition`` (one more dict entry for every session and every
token) only to drop, once recovery completes, the keys of partitions this worker no longer
holds. tether's state values carry their partition themselves (``Session.partition``,
``TokenState.partition``: set from the input record that created them, stored in the changelog
record, and set again from the changelog partition on recovery), so this store reads it there.
A table is given this store by ``streams.faust_fixes.use_state_store`` (faust has no option for it).
"""

from __future__ import annotations

from typing import Any

from faust.stores.memory import Store as MemoryStore


class StateStore(MemoryStore[str, Any]):
    """A memory store whose values have a ``partition`` attribute."""

    async def on_recovery_completed(self, active_tps: Any, standby_tps: Any) -> None:
        """Drop the keys of partitions no longer assigned to this worker."""
        partitions = {tp.partition for tp in active_tps}
        data = self.data
        for key in [k for k, v in data.items() if v.partition not in partitions]:
            del data[key]
