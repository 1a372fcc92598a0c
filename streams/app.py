"""The faust application: topics, tables, agents and timers around ``streams.worker.Worker``."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from time import monotonic
from typing import Any

import faust
from faust.types import TP

from streams import codecs, faust_fixes
from streams.input_fetch import InputFetcher
from streams.intake import Intake
from streams.kafka_auth import broker_credentials
from streams.ledger import RevocationLedger
from streams.outputs import Publisher, routed
from streams.recovery import FastRecovery
from streams.registry_sync import LocalSignatures, RegistrySync
from streams.store import use_state_store
from streams.tables import TableStore
from streams.worker import InputLag, Worker
from tether.adapters.kafka_config import consumer_config
from tether.adapters.kafka_publisher import KafkaPublisher
from tether.adapters.redis_registry import RedisRegistry
from tether.bootstrap import context
from tether.models.state_codec import dump_session, dump_token, load_session, load_token
from tether.security import signer_from_settings, verifier_from_settings
from tether.settings import Settings
from tether.topics import CREDENTIAL_USES, FINDINGS, INTENTS, REVOCATIONS

_log = logging.getLogger("tether.worker")


def consumer_of(app: faust.App) -> Any:
    """The app's consumer (faust's typing does not expose ``seek``)."""
    return app.consumer


def _table(app: faust.App, name: str, partitions: int, value_codec: str, settings: Settings) -> Any:
    table: Any = app.Table(
        name,
        partitions=partitions,
        # its changelog is as durable as tether's own topics (TETHER_KAFKA__MIN_INSYNC_REPLICAS)
        extra_topic_configs={"min.insync.replicas": str(settings.kafka.min_insync_replicas)},
    )
    # faust derives serializers from key_type/value_type, and state is not a faust Record: set
    # tether's codecs on the table and on its changelog topic (already made when the table was
    # registered), so that writes and recovery both use them.
    table.key_serializer = codecs.UTF8
    table.value_serializer = value_codec
    table.changelog_topic = table._new_changelog_topic()
    use_state_store(table)
    return table


def mark_inbound(monitor: Any, batch: Sequence[Any]) -> None:
    """Record in faust's monitor that the partitions of ``batch`` are being processed.

    faust's consumer checks every partition that has unread records: if no stream has taken
    one of its events for ``stream_processing_timeout`` (5 min), it logs "Stream has not
    started processing" at ERROR, again and again. tether's intake bypasses faust's streams,
    so without this a worker that ran over five minutes logged that error for every partition
    whenever it was behind (254 lines in one benchmark run), although it was processing.
    Kept up to date, the check means what faust meant: the intake has stopped handing
    records over."""
    now = monotonic()
    inbound = monitor.stream_inbound_time
    for tp in {message.tp for message in batch}:
        inbound[tp] = now


def web_bind(settings: Settings) -> str:
    """Where faust's web server listens: loopback unless ``TETHER_WEB_HOST`` says otherwise
    (faust itself binds every interface as soon as a port is given)."""
    return settings.web_host


def _started(kafka: KafkaPublisher) -> KafkaPublisher:
    kafka.start()  # idempotent: the producer connects on first use
    return kafka


def build(settings: Settings) -> tuple[faust.App, Worker]:  # noqa: PLR0915  # one place wires the app
    """Assemble the faust app for ``settings``; nothing connects until the app starts."""
    codecs.register()
    faust_fixes.apply()
    faust_fixes.configure_fetch(settings.fetch_wait_ms, settings.fetch_idle_wait_ms)
    worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    (settings.home / "faust").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.group_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=broker_credentials(settings.kafka),  # as the librdkafka clients
        store="memory://",
        # Tables live in memory; faust still creates its data directory: keep it under
        # tether's home rather than the working directory.
        datadir=str(settings.home / "faust" / "{conf.name}-data"),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        # the tables' changelogs: replicated as tether's own topics (TETHER_KAFKA__*)
        topic_replication_factor=settings.kafka.replication_factor,
        # faust's leader-election topic: tether runs no leader-only task, so it is never made
        topic_disable_leader=True,
        table_standby_replicas=0,
        web_enabled=settings.web_port is not None,
        web_port=settings.web_port or 6066,
        web_bind=web_bind(settings),
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=0.5,
        # A dead worker's partitions move once the broker gives up on it: keep that short.
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_s / 4),
        broker_rebalance_timeout=max(10.0, settings.session_timeout_s * 2),
        # A worker with a stable id (TETHER_WORKER_ID, e.g. a StatefulSet pod name) is a static
        # group member: restarted after a crash it takes its partitions straight back instead
        # of waiting for the broker to expire the dead member. Ids must be unique per worker.
        consumer_group_instance_id=settings.worker_id,
        producer_acks=-1,
        stream_wait_empty=False,
        worker_redirect_stdouts=False,
    )
    n = settings.partitions
    intents_name = settings.topic(INTENTS)
    uses_name = settings.topic(CREDENTIAL_USES)

    def source(name: str) -> Any:
        """A topic tether created itself, read as bytes (the codec decodes and validates)."""
        return app.topic(
            name, partitions=n, internal=False, key_serializer="raw", value_serializer="raw"
        )

    intents, uses = source(intents_name), source(uses_name)
    sessions_table = _table(app, "sessions", n, codecs.SESSION, settings)
    tokens_table = _table(app, "tokens", n, codecs.TOKEN, settings)

    tables: Any = app.tables  # the recovery service is not on faust's TableManagerT

    def ready() -> bool:
        return not app.rebalancing and bool(tables.recovery.completed.is_set())

    def behind(partition: int) -> bool:
        """Whether an intents partition is known to have records not yet read (its event time
        must keep holding the watermark back however long it has been silent)."""
        if fetcher is not None:
            return fetcher.behind(partition)
        consumer: Any = app.consumer
        tp = TP(intents_name, partition)
        high = consumer.highwater(tp)
        if high is None:
            return True  # not fetched from yet: assume it has records (PartitionWatermarks caps it)
        read = consumer._read_offset.get(tp)
        return bool((-1 if read is None else read) + 1 < high)

    # Revocations, findings and heartbeats leave at once; the routine records (decisions,
    # credential uses, dead letters, state) may wait TETHER_OUTPUT_LINGER_MS to share requests.
    alerts = KafkaPublisher(
        settings, client_id=f"tether-worker-{worker_id}-alerts", overrides={"linger.ms": 0}
    )
    kafka = KafkaPublisher(
        settings,
        client_id=f"tether-worker-{worker_id}",
        overrides={"linger.ms": settings.output_linger_ms},
    )
    app.tether_outputs = (alerts, kafka)  # type: ignore[attr-defined]  # for inspection
    publish_many = routed(
        [settings.topic(FINDINGS), settings.topic(REVOCATIONS)],
        lambda records: _started(alerts).publish_many(records),
        lambda records: _started(kafka).publish_many(records),
    )
    registry = RedisRegistry.from_settings(settings)
    worker = Worker(
        settings,
        context(settings),
        TableStore(sessions_table, dump_session),
        TableStore(tokens_table, dump_token),
        Publisher(publish_many),
        signer_from_settings(settings),  # a missing or unfit key stops the worker here
        worker_id=worker_id,
        lag=InputLag(
            behind=behind,
            buffered=lambda: intake.pending > 0,
            records=lambda p: fetcher.lag_records(p) if fetcher is not None else None,
        ),
    )
    worker.signed_here = LocalSignatures()  # what this worker signed needs no verification
    sync = RegistrySync(
        settings,
        registry,
        verifier_from_settings(settings),
        client_id=f"tether-registry-{worker_id}",
        local=worker.signed_here,
    )
    ledger = (
        RevocationLedger(
            settings,
            verifier_from_settings(settings),
            client_id=f"tether-ledger-{worker_id}",
            floor=worker.floor,
            local=LocalSignatures(capacity=10_000),  # bounded: others are verified
        )
        if settings.ledger
        else None
    )
    if ledger is not None:
        worker.signed_for_ledger = ledger.local  # what this worker signed needs no verification
    batch_max = settings.batch_max

    # tether's input topics skip faust's agents: the consumer loop hands their records to the
    # worker in batches (see intake.py). faust still subscribes to them, assigns them, commits
    # their offsets and recovers the tables co-partitioned with them.
    def ack(message: Any) -> object:
        return app.consumer.ack(message)  # the consumer exists only once the app starts

    intake = Intake(
        {intents_name: worker.submit_intents, uses_name: worker.submit_uses},
        ready=ready,
        ack=ack,
        generation=lambda: app.consumer_generation_id,
        batch_max=batch_max,
        inbound=lambda batch: mark_inbound(app.monitor, batch),
    )
    faust_fixes.attach_intake(app, intake)
    fetcher: InputFetcher | None = None
    if settings.input_client == "librdkafka":
        fetcher = InputFetcher(
            consumer_config(
                settings,
                group_id=settings.group_id,  # for the record: it joins no group, commits nothing
                client_id=f"tether-input-{worker_id}",
                overrides={"fetch.wait.max.ms": settings.fetch_wait_ms},
            ),
            intake,
            (intents_name, uses_name),
            lag_topic=intents_name,
            add_gap=lambda tp, first, last: faust_fixes.add_gap(app.consumer, tp, first, last),
            batch_max=batch_max,
        )
        faust_fixes.attach_input(app, fetcher)
    recovery = FastRecovery(tables, {"sessions": load_session, "tokens": load_token})
    faust_fixes.attach_recovery(app, recovery)
    for topic in (intents, uses):
        app.topics.add(topic)

    async def _revoked(_: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # A batch being processed finishes (outputs, state, acknowledgements) before the
        # partitions move; what is only buffered is read again after the rebalance.
        worker.close_epoch()  # its state write starts now, not when the epoch would end
        if not await intake.wait_idle(settings.session_timeout_s / 2):
            _log.warning("a batch was still being processed when partitions were revoked")
        intake.reset()
        if fetcher is not None:
            fetcher.unassign()  # assigned again once faust has sought to the committed offsets
        recovery.reset()  # the next assignment recovers from the changelogs' start

    async def _assigned(_: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        intake.reset()
        assigned = kwargs.get("assigned", args[0] if args else set())
        worker.assign({tp.partition for tp in assigned if tp.topic == intents_name})

    def _shutdown(_: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        sync.stop()
        if ledger is not None:
            ledger.stop()
        kafka.stop(timeout=10)
        alerts.stop(timeout=10)
        worker.signing.close()
        if fetcher is not None:
            fetcher.stop()

    app.on_partitions_revoked.connect(_revoked)
    app.on_partitions_assigned.connect(_assigned)
    app.on_before_shutdown.connect(_shutdown)

    @app.task  # type: ignore[untyped-decorator]  # faust's task decorator is untyped
    async def _start_registry_sync() -> None:
        worker.signing.start()  # the signing process starts before the first revocation
        if fetcher is not None:
            fetcher.start()
        sync.start()
        if ledger is not None:
            ledger.start()

    @app.timer(interval=settings.tick_s)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def _backstop() -> None:
        if ready():
            await worker.tick()

    @app.timer(interval=settings.heartbeat_s)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def _heartbeat() -> None:
        if ready():
            await worker.heartbeat()

    return app, worker
