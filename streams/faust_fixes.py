"""Fixes to faust-streaming's consumer loop that at-least-once delivery depends on.

``Consumer._drain_messages`` hands each fetched record to the streams with
``wait_first(callback(message), suspend_flow.wait())``. When a rebalance suspends the flow
first, the callback is cancelled, so the record is never delivered, yet its offset is recorded
as read. The next record then looks like a gap in the log, which faust treats as acknowledged:
the offset commit moves past a record nobody processed. Records of partitions paused during
recovery leave the same kind of "gap". For tether that is a lost revocation.

The patched loop records a record as read only once it was actually delivered, stops at a
suspension (the rebalance seeks back to the committed offsets), skips the per-record
``wait_first`` while the flow is not suspended (it costs more than the work it guards), and a
seek forgets the gaps recorded for the partitions it moves.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport import consumer as faust_consumer

_applied = False


async def _drain_messages(self: Any, fetcher: Any) -> None:
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    read_offset = self._read_offset
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    suspend = self.suspend_flow
    flag = faust_consumer.CONSUMER_FETCHING
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            self.diag.set_flag(flag)
            ait = getmany(timeout=1.0)
            await asyncio.sleep(0)  # getmany can loop without yielding to the event loop
            if self.should_stop:
                continue
            async for tp, message in ait:
                offset = message.offset
                r_offset = read_offset[tp]
                if r_offset is not None and offset < r_offset:
                    continue  # already delivered (a seek went back): faust's own rule
                if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                if suspend.is_set():
                    break  # not delivered, not read: the rebalance seeks back to committed
                delivery = asyncio.ensure_future(callback(message))
                if not delivery.done():
                    await asyncio.wait(
                        [delivery, asyncio.ensure_future(suspend.wait())],
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                if not delivery.done():
                    delivery.cancel()
                    break  # suspended while the stream buffer was full: not delivered
                delivery.result()
                read_offset[tp] = offset
            self.diag.unset_flag(flag)
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        self.diag.unset_flag(flag)


def apply() -> None:
    """Install the fixes (idempotent)."""
    global _applied  # noqa: PLW0603  # a process-wide patch, applied once
    if _applied:
        return
    _applied = True
    base = faust_consumer.Consumer
    base._drain_messages = _drain_messages  # type: ignore[method-assign]

    original_seek = base.seek
    original_perform_seek = base.perform_seek

    async def seek(self: Any, partition: Any, offset: int) -> None:
        self._gap.pop(partition, None)
        await original_seek(self, partition, offset)

    async def perform_seek(self: Any) -> None:
        self._gap.clear()
        await original_perform_seek(self)

    base.seek = seek  # type: ignore[method-assign]
    base.perform_seek = perform_seek  # type: ignore[method-assign]
