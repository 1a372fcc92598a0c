"""The worker's input fetch: size and waits, from TETHER_FETCH_WAIT_MS and
TETHER_FETCH_IDLE_WAIT_MS, and the switch between them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.consumer.fetcher import Fetcher

from streams import faust_fixes
from streams.app import build
from streams.faust_fixes import FetchPacing
from tether.settings import Settings


@pytest.fixture(autouse=True)
def _default_pacing() -> Iterator[None]:
    yield
    faust_fixes.configure_fetch(faust_fixes.FETCH_MAX_WAIT_MS, faust_fixes.FETCH_IDLE_WAIT_MS)


def test_the_fetch_waits_come_from_the_settings() -> None:
    build(Settings(fetch_wait_ms=25, fetch_idle_wait_ms=250))
    consumer = faust_fixes.tune_fetch(SimpleNamespace())
    assert (consumer._fetch_max_wait_ms, consumer._fetch_min_bytes) == (25, 64 * 1024)
    assert consumer._tether_pacing == FetchPacing(25, 64 * 1024, 250)


def test_the_defaults_are_5_ms_for_a_batch_and_100_ms_for_the_first_record() -> None:
    build(Settings())
    assert faust_fixes.tune_fetch(SimpleNamespace())._tether_pacing == FetchPacing(
        5, 64 * 1024, 100
    )


@pytest.mark.parametrize(
    ("idle_wait_ms", "history", "expected"),
    [
        # an empty fetch: the next one waits for the first record (1 byte), up to the idle wait
        (100, [False], (100, 1)),
        (100, [False, False, False], (100, 1)),
        # a fetch with records: the next one batches again
        (100, [False, True], (5, 64 * 1024)),
        (100, [True], (5, 64 * 1024)),
        (100, [True, False, True], (5, 64 * 1024)),
        # 0: never switch
        (0, [False], (5, 64 * 1024)),
    ],
)
def test_an_empty_fetch_makes_the_next_one_wait_for_the_first_record(
    idle_wait_ms: int, history: list[bool], expected: tuple[int, int]
) -> None:
    pacing = FetchPacing(5, 64 * 1024, idle_wait_ms)
    fetcher = SimpleNamespace(_fetch_max_wait_ms=5, _fetch_min_bytes=64 * 1024)
    for had_records in history:
        pacing.apply(fetcher, had_records=had_records)
    assert (fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes) == expected


def test_aiokafkas_fetcher_is_paced_after_each_response() -> None:
    # The wrapper around aiokafka's response handling: what the response held (records or
    # not) sets the next request's wait; a fetcher of another aiokafka client is left alone.
    answers = iter([False, True, False])

    async def one_response(_fetcher: Any, *_: Any) -> bool:
        return next(answers)

    handle = faust_fixes.paced(one_response)
    paced = SimpleNamespace(
        _fetch_max_wait_ms=5, _fetch_min_bytes=64 * 1024, _tether_pacing=FetchPacing()
    )
    other = SimpleNamespace(_fetch_max_wait_ms=500, _fetch_min_bytes=1)

    async def scenario() -> list[tuple[int, int]]:
        seen = []
        for fetcher in (paced, paced, other):
            await handle(fetcher, None, 1, None)
            seen.append((fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes))
        return seen

    assert asyncio.run(scenario()) == [(100, 1), (5, 64 * 1024), (500, 1)]


def test_the_patch_wraps_aiokafkas_fetcher() -> None:
    faust_fixes.apply()
    assert Fetcher._proc_fetch_request.__qualname__.startswith("paced.")
