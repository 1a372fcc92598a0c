"""The tables' store: after recovery it drops the keys of partitions this worker no longer holds,
reading each key's partition from its state (faust's store kept a map of every key for it)."""

from __future__ import annotations

import asyncio

import faust
from faust.types import TP

from streams.faust_fixes import use_state_store
from streams.store import StateStore
from tether.models.session import Session, TokenState


def test_recovery_completion_keeps_only_the_assigned_partitions_keys() -> None:
    app = faust.App("test-state-store", broker="kafka://127.0.0.1:1", store="memory://")
    table = app.Table("sessions", partitions=3)
    use_state_store(table)
    store = table.data
    assert isinstance(store, StateStore)
    held = {f"wf-{p}": Session(f"wf-{p}", partition=p) for p in range(3)}
    store.data.update(held)
    store.data["tok-2"] = TokenState("tok-2", partition=2)
    active = {TP("test-state-store-sessions-changelog", 0), TP("x", 2)}
    asyncio.run(store.on_recovery_completed(active, set()))
    assert set(store.data) == {"wf-0", "wf-2", "tok-2"}
    assert store._key_partition == {}  # never filled
