"""Stand-ins for what the streaming worker talks to (faust's tables and records, Kafka's
acknowledgements), for unit tests of ``streams.worker`` without a broker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import orjson

from streams.lag import InputLag
from streams.outputs import Publisher
from streams.tables import TableStore
from streams.worker import Worker
from tether.bootstrap import context
from tether.models.state_codec import dump_session, dump_token
from tether.security import SetSigner
from tether.settings import Settings

PublishMany = Callable[[list[Any]], Awaitable[list[Any]]]


@dataclass
class Record:
    """An input record as the worker reads it (faust's message has these attributes)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class FakeTable:
    """What ``TableStore`` reads of a faust table."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def changelog_topic(self) -> Any:
        return SimpleNamespace(get_topic_name=lambda: f"{self.name}-changelog")


async def acknowledge_all(records: list[Any]) -> list[Any]:
    """A broker that acknowledges every record at once."""
    return []


def records(*events: dict[str, Any], partition: int = 0, first: int = 0) -> list[Record]:
    """Input records holding ``events``, at consecutive offsets of one intents partition."""
    return [
        Record("intents", partition, first + i, ev["workflow_id"].encode(), orjson.dumps(ev))
        for i, ev in enumerate(events)
    ]


def make_worker(
    signer: SetSigner,
    *,
    settings: Settings | None = None,
    publish_many: PublishMany = acknowledge_all,
    lag: InputLag | None = None,
) -> Worker:
    """A worker over in-memory tables whose outputs go to ``publish_many``."""
    settings = settings or Settings(grace_s=2.0, tick_s=0.2, signing_processes=0)
    return Worker(
        settings,
        context(settings),
        TableStore(FakeTable("sessions"), dump_session),
        TableStore(FakeTable("tokens"), dump_token),
        Publisher(publish_many),
        signer,
        worker_id="w-test",
        lag=lag,
    )
