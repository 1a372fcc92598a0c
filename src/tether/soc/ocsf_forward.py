"""``tether ocsf-forward``: ``tether.findings`` re-published as OCSF on ``tether.findings.ocsf``.

A process of its own rather than a hook in the worker: the worker's output path stays as it is
(nothing here can slow a revocation), and a SIEM connector (Amazon Security Lake, Splunk,
Sentinel) reads a topic of OCSF 1.8.0 Detection Findings. Each finding is produced with the
original key (the workflow), the batch is flushed and every record acknowledged by the broker
(``acks=all``) before the batch's input offsets are committed: at-least-once, nothing lost.
A record on the findings topic that is not a finding tether can read is logged and skipped (it
could never be mapped, and retrying it would stall the topic).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Final

import orjson
from confluent_kafka import KafkaError, Message, Producer
from pydantic import ValidationError

from tether.adapters.kafka_admin import create_topics
from tether.adapters.kafka_config import producer_config
from tether.models.outputs import Finding
from tether.ocsf import detection_finding
from tether.settings import Settings
from tether.soc.relay import Record, Relay
from tether.topics import FINDINGS, OCSF_FINDINGS, TopicSpec, topic_spec

log = logging.getLogger(__name__)

MAX_BACKOFF_S: Final = 10.0


def ocsf_topic_spec(settings: Settings) -> TopicSpec:
    """The OCSF topic: keyed and partitioned like ``tether.findings`` (one of :func:`topic_specs`)."""
    return topic_spec(
        OCSF_FINDINGS,
        settings.topic_prefix,
        settings.partitions,
        min_insync_replicas=settings.kafka.min_insync_replicas,
    )


def to_ocsf(value: bytes) -> bytes | None:
    """The OCSF record for one findings-topic value; None if it is not a readable finding."""
    try:
        doc = orjson.loads(value)
        if not isinstance(doc, dict) or doc.get("kind") != "finding":
            return None
        return orjson.dumps(detection_finding(Finding.model_validate(doc)))
    except (orjson.JSONDecodeError, ValidationError, KeyError) as exc:
        log.warning("skipping a findings record that is not a readable finding: %s", exc)
        return None


class OcsfForwarder:
    """Delivers batches of findings to the OCSF topic; a batch returns only once acknowledged."""

    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self.topic = settings.topic(OCSF_FINDINGS)
        self._producer = Producer(producer_config(settings, client_id="tether-ocsf-forward"))
        self._stop = stop
        self.skipped = 0
        self.published = 0

    def deliver(self, records: Sequence[Record]) -> bool:
        """Produce every record's OCSF form; retry the ones not acknowledged, with backoff."""
        todo: list[tuple[bytes | None, bytes]] = []
        for r in records:
            out = to_ocsf(r.value)
            if out is None:
                self.skipped += 1
            else:
                todo.append((r.key, out))
        backoff = 0.2
        while todo:
            failed: list[tuple[bytes | None, bytes]] = []

            def report(
                err: KafkaError | None,
                msg: Message,
                failed: list[tuple[bytes | None, bytes]] = failed,
            ) -> None:
                if err is not None:
                    log.warning("OCSF record not acknowledged (will retry): %s", err)
                    failed.append((msg.key(), msg.value() or b""))

            for key, value in todo:
                while True:
                    try:
                        self._producer.produce(self.topic, value, key, on_delivery=report)
                        break
                    except BufferError:
                        self._producer.poll(0.1)
            while self._producer.flush(1.0) > 0:
                if self._stop.is_set():
                    return False
            self.published += len(todo) - len(failed)
            todo = failed
            if todo:
                if self._stop.wait(backoff):
                    return False
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        return True


def run_ocsf_forward(
    settings: Settings, stop: threading.Event, *, group_id: str | None = None
) -> OcsfForwarder:
    """Create the OCSF topic if needed, then forward until ``stop`` is set."""
    create_topics(settings, [ocsf_topic_spec(settings)])
    forwarder = OcsfForwarder(settings, stop)
    relay = Relay(
        settings,
        topics=[settings.topic(FINDINGS)],
        group_id=group_id or f"{settings.topic_prefix}ocsf-forward",
        client_id="tether-ocsf-forward",
        deliver=forwarder.deliver,
        stop=stop,
    )
    started = time.monotonic()
    relay.run()
    log.info("forwarded %d findings in %.0f s", forwarder.published, time.monotonic() - started)
    return forwarder
