"""What replaces an output record the broker refuses for good: its dead letter, or nothing
(keep retrying), decided by whose fault the refusal is: the record's, or its topic's."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Protocol

from tether.adapters.kafka_publisher import DeliveryError, Entry
from tether.models.codec import Rejected, dead_letter, encode
from tether.models.outputs import Source
from tether.settings import Settings
from tether.topics import DEADLETTER, REVOCATIONS

from .outputs import SIZE_ERRORS
from .topic_limits import TopicLimits

FALLBACK_FACTOR = 32
"""While a topic's ``max.message.bytes`` is unknown, a record refused as too large and larger
than this many times ``output_reject_min_bytes`` (16 KiB by default) is given up at once."""

OUTPUT_SUMMARY_BYTES = 512
"""How much of an output record refused for good its dead letter keeps (the rest is named by
its size): the dead letter itself must be small enough to publish (JSON may escape each byte
to six)."""


class Limits(Protocol):
    """A topic's ``max.message.bytes``, or ``None`` while unknown (``TopicLimits``)."""

    def get(self, topic: str) -> int | None: ...


class OutputRejects:
    """``Publisher``'s ``reject``: the dead letter of an output record the broker refused for
    good (refused alone), or ``None`` to keep retrying it.

    A revocation is never given up (it is small; a topic that refuses it is broken, and
    gateways fail closed as heartbeats stop). A record refused as too large is given up only
    when its topic works: its ``max.message.bytes`` is at least ``output_reject_min_bytes``
    (a topic below that, e.g. set to 1, refuses everything: it is unwritable, not the record
    too large, so the input is held until it is fixed). While the topic's limit is being
    read, records larger than ``FALLBACK_FACTOR`` times that bound are given up at once and
    smaller ones wait for it. Other permanent errors (``INVALID_RECORD``) are the record's.

    The dead letter keeps the record's first ``OUTPUT_SUMMARY_BYTES`` and names its topic,
    key, partition, size and the error. A state record given up here leaves the changelog one
    step behind the worker's memory for that key: a restart recovers the earlier state (the
    core's caps keep state far below any sane limit; this is the safety net that keeps the
    pipeline moving)."""

    def __init__(
        self, settings: Settings, topics: Mapping[str, str], limits: Limits | None = None
    ) -> None:
        self.least = settings.output_reject_min_bytes
        self.revocations = topics[REVOCATIONS]
        self.deadletter = topics[DEADLETTER]
        self.limits: Limits = limits if limits is not None else TopicLimits(settings)
        self.given_up = 0

    def __call__(self, rec: Entry, err: DeliveryError) -> Entry | None:
        topic, key, value, partition = rec
        size = len(key or b"") + len(value or b"")
        if topic == self.revocations:
            return None
        if err.code in SIZE_ERRORS:
            limit = self.limits.get(topic)
            if limit is None and size <= self.least * FALLBACK_FACTOR:
                return None  # asked the broker; decided at the next attempt
            if limit is not None and limit < self.least:
                return None  # the topic refuses everything: hold
        shown = (key or b"")[:256].decode("utf-8", "replace")
        why = Rejected(
            "output_rejected",
            f"{err}; the {size}-byte record for {topic} (key {shown!r}) was refused for good "
            f"and is dead-lettered instead of retried (payload: its first "
            f"{OUTPUT_SUMMARY_BYTES} bytes)",
        )
        source = Source(topic=topic, partition=partition)
        record = dead_letter((value or b"")[:OUTPUT_SUMMARY_BYTES], why, source, datetime.now(UTC))
        self.given_up += 1
        return (self.deadletter, (key or b"")[:512] or None, encode(record), None)
