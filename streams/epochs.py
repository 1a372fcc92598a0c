"""State epochs: a step's outputs leave at once; the state it left is written once per epoch,
after those outputs (and every earlier epoch) are acknowledged.

Ordering is the delivery guarantee (``streams.worker``): state never reaches the changelog
before the outputs it reflects are durable, and the input records of a step are acknowledged
only once its epoch's state is durable. A crash in between replays the input against the
earlier state instead of losing an output. Writing state once per epoch rather than per step
means a session touched by many steps reaches the changelog once, and the broker sees one
state write per epoch instead of one per fetch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tether.metrics import EPOCH_COMMIT

from .outputs import Batch
from .tables import TableStore

EPOCH_KEYS = 2_000
"""Changed keys at which a state epoch closes early, whatever its age: bounds the size of one
state write (and of what a crash replays)."""


@dataclass(slots=True)
class _Epoch:
    """Steps applied since the last state snapshot."""

    done: asyncio.Future[None]  # resolves once their outputs and the state they left are durable
    outputs: list[asyncio.Future[None]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None

    def settle(self, commit: asyncio.Future[None]) -> None:
        """Pass the outcome of the epoch's state write on to the steps waiting for it."""
        if self.done.done():
            return
        if commit.cancelled():
            self.done.cancel()
        elif (exc := commit.exception()) is not None:
            self.done.set_exception(exc)
        else:
            self.done.set_result(None)


class StateEpochs:
    """The open epoch of a worker's steps, and the chain of state writes before it."""

    def __init__(
        self,
        tables: Sequence[TableStore[Any]],
        send: Callable[[Batch], Awaitable[None]],
        epoch_ms: float,
    ) -> None:
        self.tables = tables  # whose changed keys each epoch writes
        self.send = send  # publishes a batch; returns once it is acknowledged
        self.epoch_s = epoch_ms / 1000  # 0: every step is an epoch of its own
        self.tail: asyncio.Future[None] | None = None  # the last epoch's state write
        self._open: _Epoch | None = None  # steps whose state is not written yet

    def add(self, outputs: Sequence[asyncio.Future[None]], *, now: bool) -> asyncio.Future[None]:
        """Add a step whose publications are ``outputs`` to the open epoch (opening one, with
        its timer, if none is); the future resolves once the epoch's state is durable. ``now``
        closes the epoch with this step (a caller that waits for durability)."""
        epoch = self._open
        if epoch is None:
            loop = asyncio.get_running_loop()
            epoch = self._open = _Epoch(loop.create_future())
            if not now and self.epoch_s > 0:
                epoch.timer = loop.call_later(self.epoch_s, self.close)
        epoch.outputs.extend(outputs)
        if now or self.epoch_s <= 0 or sum(t.dirty for t in self.tables) >= EPOCH_KEYS:
            self.close()
        return epoch.done

    def close(self) -> None:
        """Snapshot the state every step of the open epoch left and publish it once those
        steps' outputs and every earlier epoch are durable: epochs become durable in order."""
        epoch, self._open = self._open, None
        if epoch is None:
            return
        if epoch.timer is not None:
            epoch.timer.cancel()
        state = Batch()
        for table in self.tables:
            state.records.extend(table.changes().records)
        previous = self.tail
        closed = time.monotonic()

        async def commit() -> None:
            await asyncio.gather(*epoch.outputs)
            if previous is not None:
                await previous
            await self.send(state)
            EPOCH_COMMIT.observe(time.monotonic() - closed)  # once per epoch: cheap

        task = asyncio.ensure_future(commit())
        task.add_done_callback(epoch.settle)
        self.tail = task

    async def drain(self) -> None:
        """Wait until every step added so far is durable."""
        self.close()
        tail = self.tail
        if tail is not None:
            await tail
