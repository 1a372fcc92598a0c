"""The worker's input fetch: size and wait, the wait from TETHER_FETCH_WAIT_MS."""

from __future__ import annotations

from types import SimpleNamespace

from streams import faust_fixes
from streams.app import build
from tether.settings import Settings


def test_the_fetch_wait_comes_from_the_settings() -> None:
    try:
        build(Settings(fetch_wait_ms=25))
        consumer = faust_fixes.tune_fetch(SimpleNamespace())
        assert (consumer._fetch_max_wait_ms, consumer._fetch_min_bytes) == (25, 64 * 1024)
    finally:
        faust_fixes.configure_fetch(faust_fixes.FETCH_MAX_WAIT_MS)


def test_the_default_wait_is_5_ms() -> None:
    build(Settings())
    assert faust_fixes.tune_fetch(SimpleNamespace())._fetch_max_wait_ms == 5
