"""The worker's input topics are read by librdkafka, and aiokafka leaves them alone."""

from __future__ import annotations

from streams import faust_fixes
from streams.app import build
from tether.settings import Settings
from tether.topics import CREDENTIAL_USES, INTENTS


def test_the_worker_reads_its_input_with_librdkafka() -> None:
    settings = Settings(topic_prefix="wiring-a.")
    try:
        app, _ = build(settings)
        topics = {settings.topic(INTENTS), settings.topic(CREDENTIAL_USES)}
        assert faust_fixes.hooks(app).input.topics == topics
        assert topics <= faust_fixes._elsewhere  # aiokafka leaves them alone
        assert not [name for name in vars(app) if name.startswith("tether")]  # nothing hung on it
    finally:
        faust_fixes._elsewhere.clear()


def test_the_aiokafka_input_path_is_gone() -> None:
    assert "input_client" not in Settings.model_fields
    assert "fetch_idle_wait_ms" not in Settings.model_fields


def test_the_input_fetch_waits_as_the_settings_say() -> None:
    from tether.bootstrap import worker_parts

    parts = worker_parts(Settings(fetch_wait_ms=25), signer=None, registry=None)
    assert parts.input_config["fetch.wait.max.ms"] == 25
