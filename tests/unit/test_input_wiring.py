"""Which client fetches the worker's input topics (TETHER_INPUT_CLIENT)."""

from __future__ import annotations

from streams import faust_fixes
from streams.app import build
from tether.settings import Settings
from tether.topics import CREDENTIAL_USES, INTENTS


def test_the_worker_reads_its_input_with_librdkafka_unless_told_otherwise() -> None:
    settings = Settings(topic_prefix="wiring-a.")
    try:
        app, _ = build(settings)
        topics = {settings.topic(INTENTS), settings.topic(CREDENTIAL_USES)}
        assert app.tether_input.topics == topics  # type: ignore[attr-defined]
        assert topics <= faust_fixes._elsewhere  # aiokafka leaves them alone
        fallback, _ = build(Settings(topic_prefix="wiring-b.", input_client="aiokafka"))
        assert not hasattr(fallback, "tether_input")
        assert "wiring-b.intents" not in faust_fixes._elsewhere
    finally:
        faust_fixes._elsewhere.clear()
