"""Fast table recovery: the newest changelog value of each key is installed, once."""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from streams.recovery import FastRecovery


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass
class Store:
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class State:
    text: str
    partition: int = -1


def load(raw: bytes, key: str) -> State:
    return State(raw.decode())


@dataclass(eq=False)
class Table:
    name: str
    data: Store = field(default_factory=Store)


def _message(offset: int, key: bytes | None, value: bytes | None) -> Any:
    return SimpleNamespace(offset=offset, key=key, value=value)


def _recovering(table: Table, *tps: TP) -> Any:
    recovery = SimpleNamespace(
        in_recovery=True,
        active_tps=set(tps),
        tp_to_table=dict.fromkeys(tps, table),
        active_offsets={},
        need_recovery=lambda: False,
    )
    return SimpleNamespace(recovery=recovery)


def test_the_newest_value_of_each_key_is_installed_and_a_tombstone_deletes() -> None:
    table = Table("sessions")
    table.data.data["gone"] = State("stale", 1)
    tp0, tp1 = TP("sessions-changelog", 0), TP("sessions-changelog", 1)
    fast = FastRecovery(_recovering(table, tp0, tp1), {"sessions": load})
    for tp, msg in [
        (tp0, _message(0, b"wf-1", b"old")),
        (tp0, _message(1, b"wf-1", b"new")),
        (tp0, _message(1, b"wf-1", b"read again after a seek")),
        (tp1, _message(0, b"wf-2", b"two")),
        (tp1, _message(1, b"gone", None)),
    ]:
        assert fast.absorb(tp, msg)
    assert not fast.absorb(TP("intents", 0), _message(0, b"wf-1", b"input"))
    assert fast.complete()
    fast.install()
    # each installed value knows the partition its key lives on
    assert table.data.data == {"wf-1": State("new", 0), "wf-2": State("two", 1)}
    assert fast.installed == 2


def test_values_are_decoded_with_the_cyclic_garbage_collector_off() -> None:
    table = Table("sessions")
    tp = TP("sessions-changelog", 0)
    seen: list[bool] = []

    def loading(raw: bytes, key: str) -> State:
        seen.append(gc.isenabled())  # a full collection per few thousand sessions otherwise
        return load(raw, key)

    fast = FastRecovery(_recovering(table, tp), {"sessions": loading})
    for offset in range(3):
        fast.absorb(tp, _message(offset, f"wf-{offset}".encode(), b"v"))
    assert gc.isenabled()
    fast.install()
    assert seen == [False, False, False]
    assert gc.isenabled()  # switched back on
    assert gc.get_freeze_count() > 0  # what was installed is out of its view
    gc.unfreeze()


def test_the_loader_gets_the_key_the_value_was_stored_under() -> None:
    table = Table("sessions")
    tp = TP("sessions-changelog", 0)
    keys: list[str] = []

    def loading(raw: bytes, key: str) -> State:
        keys.append(key)
        return load(raw, key)

    fast = FastRecovery(_recovering(table, tp), {"sessions": loading})
    fast.absorb(tp, _message(0, b"wf-1", b"v"))
    fast.install()
    gc.unfreeze()
    assert keys == ["wf-1"]
    assert next(iter(table.data.data)) is keys[0]  # one string: the table's key and the state's
