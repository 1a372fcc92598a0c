"""Each output topic's ``max.message.bytes``, as the broker reports it (cached, read off the loop).

Asked only when the broker refuses a record as too large: it tells a record too large for a
working topic (dead-letter it, go on) from a topic that refuses everything (hold and retry).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
    AdminClient,
    ConfigResource,
)

from tether.adapters.kafka_config import admin_config
from tether.settings import Settings

_log = logging.getLogger("tether.worker")

MAX_AGE_S = 10.0
"""How long a topic's limit is trusted before it is read again (an operator may change it)."""


class TopicLimits:
    """``get(topic)``: the topic's ``max.message.bytes`` if known and recent, else ``None``
    (and a read is started on a thread of its own: the caller retries, and knows next time)."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._known: dict[str, tuple[float, int]] = {}  # topic -> (read at, limit)
        self._reading: set[str] = set()
        self._lock = threading.Lock()
        self._admin: AdminClient | None = None

    def get(self, topic: str) -> int | None:
        with self._lock:
            known = self._known.get(topic)
            if known is not None and self._clock() - known[0] < MAX_AGE_S:
                return known[1]
            if topic not in self._reading:
                self._reading.add(topic)
                threading.Thread(target=self._read, args=(topic,), daemon=True).start()
            return None if known is None else known[1]

    def _read(self, topic: str) -> None:
        try:
            if self._admin is None:
                self._admin = AdminClient(admin_config(self._settings))
            resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
            (future,) = self._admin.describe_configs([resource], request_timeout=10).values()
            entry = future.result(timeout=15).get("max.message.bytes")
            if entry is not None and entry.value is not None:
                with self._lock:
                    self._known[topic] = (self._clock(), int(entry.value))
        except Exception as exc:  # unknown: the caller keeps holding and asks again
            _log.warning("could not read max.message.bytes of %s (%s)", topic, exc)
        finally:
            with self._lock:
                self._reading.discard(topic)
