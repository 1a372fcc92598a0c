"""A gateway's ``Watcher`` on a scenario's feed, counting every revocation it applied.

The tap reads the topic as a consumer; this is the other reader that matters: the gateway's
own ``Watcher`` (signatures verified with the worker's key), through whatever the scenario does
to the brokers. Its figure is what it saw against what ``tether replay`` expects.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from tap import Identity, revocation_identity

from tether.models.codec import encode
from tether.models.outputs import Heartbeat, Revocation
from tether.sdk.watcher import Watcher
from tether.settings import Settings


class Gateway:
    """A ``Watcher`` of the scenario's revocations topic; ``seen`` counts what it applied."""

    def __init__(self, bootstrap: str, prefix: str, home: Path, partitions: int = 4) -> None:
        self.settings = Settings(
            kafka_bootstrap=bootstrap, topic_prefix=prefix, partitions=partitions, home=home
        )
        self.home = home
        self.seen: Counter[Identity] = Counter()
        self._lock = threading.Lock()
        self.watcher = self._new()

    def _new(self) -> Watcher:
        # The worker's development key pair under ``home/keys`` (made when it first starts):
        # the watcher reads its JWKS on the first record, so it may start before the worker.
        return Watcher(self.settings, client_id="fault-gateway", on_record=self._on_record)

    def _on_record(self, record: Revocation | Heartbeat) -> None:
        if isinstance(record, Revocation):
            doc: dict[str, Any] = orjson.loads(encode(record))
            with self._lock:
                self.seen[revocation_identity(doc)] += 1

    def start(self) -> Gateway:
        self.watcher.start()
        return self

    def stop(self) -> None:
        self.watcher.stop()

    def identities(self) -> set[Identity]:
        with self._lock:
            return set(self.seen)

    def missing(self, expected: dict[str, list[dict[str, Any]]]) -> set[Identity]:
        """Expected revocations this gateway never applied."""
        want = {revocation_identity(d) for d in expected.get("revocation", [])}
        return want - self.identities()
