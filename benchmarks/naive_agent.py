"""The naive baseline of P2: tether's work as a textbook faust agent, one event at a time.

What a first faust implementation would look like: the same core (``tether.core``'s
``WorkflowEngine`` and ``TokenIndex``, the same codec and Cedar policy) driven by
``async for event in stream.events()``; the sessions and tokens live in faust tables that are
written on every event (faust sends one changelog record per write); every output record is a
separate ``await topic.send(...)``; revocations and heartbeats are signed SETs like the worker's
(same keys, ``tether.security``); credential uses are repartitioned by token through a topic;
revocations are verified and go to the Redis registry one by one; heartbeats every second. No batching, no
waiting for outputs before committing, no per-partition watermarks, no recovery care: this is a
baseline to measure the real worker against, not a second implementation.

Configured like the worker, from ``TETHER_*`` (topic prefix, app id, bootstrap, Redis, partitions);
run it the way the harness does:

    TETHER_TOPIC_PREFIX=bench-x- TETHER_APP_ID=bench-x-naive .venv/bin/python benchmarks/naive_agent.py
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
from faust.serializers import codecs

from streams.credential_uses import encode_use
from streams.kafka_auth import broker_credentials
from tether.adapters.redis_registry import RedisRegistry
from tether.bootstrap import context
from tether.core import Outbox
from tether.core.credentials import CredentialUse
from tether.core.engine import TokenIndex, WorkflowEngine
from tether.models.codec import Rejected, dead_letter, decode_event, encode
from tether.models.outputs import Heartbeat, Revocation, Source
from tether.models.state_codec import dump_session, dump_token, load_session, load_token
from tether.security import signer_from_settings, verifier_from_settings
from tether.security.sets import SetRejected
from tether.settings import Settings
from tether.topics import CREDENTIAL_USES, DEADLETTER, DECISIONS, FINDINGS, INTENTS, REVOCATIONS


class _Utf8(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return str(obj).encode()

    def _loads(self, s: bytes) -> Any:
        return s.decode()


class _State(codecs.Codec):
    def __init__(self, dump: Any, load: Any) -> None:
        super().__init__()
        self._dump, self._load = dump, load

    def _dumps(self, obj: Any) -> bytes:
        return self._dump(obj)

    def _loads(self, s: bytes) -> Any:
        return self._load(s) if s else None


def _table(app: faust.App, name: str, partitions: int, value_codec: str) -> Any:
    table: Any = app.Table(name, partitions=partitions)
    table.key_serializer = "naive_utf8"  # state is not a faust Record: plain codecs
    table.value_serializer = value_codec
    table.changelog_topic = table._new_changelog_topic()
    return table


class _Outputs:
    """The output topics; every record is its own ``await send``."""

    def __init__(self, topic: Any, settings: Settings) -> None:
        self.findings, self.decisions = topic(FINDINGS), topic(DECISIONS)
        self.revocations, self.deadletter = topic(REVOCATIONS), topic(DEADLETTER)
        self.signer = signer_from_settings(settings)

    async def publish(self, out: Outbox) -> None:
        for f in out.findings:
            await self.findings.send(key=f.workflow_id.encode(), value=encode(f))
        for r in out.revocations:
            await self.revocations.send(key=r.target.key.encode(), value=self.signer.sign(r))
        for d in out.decisions:
            await self.decisions.send(key=d.workflow_id.encode(), value=encode(d))


def _app(settings: Settings) -> faust.App:
    codecs.register("naive_utf8", _Utf8())
    codecs.register("naive_session", _State(dump_session, load_session))
    codecs.register("naive_token", _State(dump_token, load_token))
    (settings.home / "faust").mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.app_id or f"{settings.topic_prefix}naive",
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=broker_credentials(settings.kafka),  # as the worker's
        store="memory://",
        datadir=str(settings.home / "faust" / "{conf.name}-data"),  # as the worker's
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=0.5,
        producer_acks=-1,
    )


def build(settings: Settings) -> faust.App:
    """The naive app for ``settings``."""
    app = _app(settings)
    worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    n = settings.partitions

    def topic(name: str) -> Any:
        return app.topic(
            settings.topic(name),
            partitions=n,
            internal=False,
            key_serializer="raw",
            value_serializer="raw",
        )

    intents, uses_topic = topic(INTENTS), topic(CREDENTIAL_USES)
    outputs = _Outputs(topic, settings)
    publish = outputs.publish
    ctx = context(settings)
    engine = WorkflowEngine(ctx, _table(app, "sessions", n, "naive_session"))
    index = TokenIndex(ctx, _table(app, "tokens", n, "naive_token"))
    registry = RedisRegistry.from_settings(settings)
    verifier = verifier_from_settings(settings)
    beats = [0]

    @app.agent(intents)
    async def correlate(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            now = datetime.now(UTC)
            decoded = decode_event(msg.value or b"")
            if isinstance(decoded, Rejected):
                source = Source(topic=msg.topic, partition=msg.partition, offset=msg.offset)
                await outputs.deadletter.send(
                    key=msg.key, value=encode(dead_letter(msg.value or b"", decoded, source, now))
                )
                continue
            out = Outbox()
            uses: list[CredentialUse] = []
            engine.process(decoded, now, out, uses)  # writes the session: one changelog record
            await publish(out)
            for use in uses:
                await uses_topic.send(key=use.token_id.encode(), value=encode_use(use))

    @app.agent(uses_topic)
    async def credential_index(stream: Any) -> None:
        async for value in stream:
            token_id, workload, workflow, t, event_id, inherited, expires = orjson.loads(value)
            use = CredentialUse(token_id, workload, workflow, t, event_id, inherited, expires)
            out = Outbox()
            index.observe(use, datetime.now(UTC), out)  # writes the token: one changelog record
            index.expire(t)
            await publish(out)

    @app.agent(outputs.revocations)
    async def registry_sync(stream: Any) -> None:
        async for value in stream:
            try:
                record = verifier.verify(value) if value else None
            except SetRejected:
                continue
            if isinstance(record, Revocation):
                await registry.put(record)

    @app.timer(interval=settings.heartbeat_s)
    async def heartbeat() -> None:
        beats[0] += 1
        hb = Heartbeat(
            emitted_at=datetime.now(UTC),
            source=worker_id,
            sequence=beats[0],
            interval_s=settings.heartbeat_s,
        )
        key = f"heartbeat:{worker_id}".encode()
        await outputs.revocations.send(key=key, value=outputs.signer.sign(hb))

    return app


def main() -> None:
    """Run the naive agent until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.WARNING)
    app = build(Settings())
    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
