"""The faust application: topics, tables, timers and signals wired around ``streams.worker.Worker``.

``build`` wires; it constructs no adapter (``tether.bootstrap.worker_parts`` picks every one from
the settings, and tests pass their own), and every name a callback uses exists before the
callback is made. What tether plugs into faust's consumer loop is kept by ``faust_fixes.hooks``,
never hung on the app.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from time import monotonic
from typing import Any

import faust

from tether.adapters.kafka_publisher import KafkaPublisher
from tether.bootstrap import WorkerParts, worker_parts
from tether.health import Health
from tether.models.state_codec import dump_session, dump_token, load_session, load_token
from tether.settings import Settings
from tether.topics import CREDENTIAL_USES, FINDINGS, INTENTS, REVOCATIONS

from . import codecs, faust_fixes
from .audit_chain import kafka_head_reader
from .input_fetch import InputFetcher
from .intake import Intake
from .kafka_auth import broker_credentials
from .lag import InputLag
from .ledger import RevocationLedger
from .observe import WorkerObserver
from .outputs import Publisher, routed
from .recovery import FastRecovery
from .registry_sync import LocalSignatures, RegistrySync
from .revocation_view import revocation_view
from .tables import TableStore
from .worker import Worker

_log = logging.getLogger("tether.worker")


def _table(app: faust.App, name: str, partitions: int, value_codec: str, settings: Settings) -> Any:
    table: Any = app.Table(
        name,
        partitions=partitions,
        # its changelog is as durable as tether's own topics (TETHER_KAFKA__MIN_INSYNC_REPLICAS)
        extra_topic_configs={"min.insync.replicas": str(settings.kafka.min_insync_replicas)},
    )
    faust_fixes.use_codecs(table, codecs.UTF8, value_codec)
    faust_fixes.use_state_store(table)
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


def _faust_app(settings: Settings) -> faust.App:
    (settings.home / "faust").mkdir(parents=True, exist_ok=True)
    return faust.App(
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


def build(  # noqa: PLR0915  # one place wires the app
    settings: Settings, parts: WorkerParts | None = None, *, health: Health | None = None
) -> tuple[faust.App, Worker]:
    """Wire the faust app for ``settings`` from ``parts`` (default: ``worker_parts(settings)``);
    nothing connects until the app starts. ``health`` is what the process's ``/healthz`` and
    ``/readyz`` answer from (``streams.main`` serves it; the app adds its checks)."""
    parts = parts or worker_parts(settings)
    codecs.register()
    faust_fixes.apply()  # refuses faust and aiokafka versions other than the pinned ones
    app = _faust_app(settings)
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
        return (
            not app.rebalancing
            and bool(tables.recovery.completed.is_set())
            and not (worker.audit is not None and worker.audit.reading)  # chain heads read
        )

    def ack(message: Any) -> object:
        return app.consumer.ack(message)  # the consumer exists only once the app starts

    # Revocations, findings and heartbeats leave at once; the routine records (decisions,
    # credential uses, dead letters, state) may wait TETHER_OUTPUT_LINGER_MS to share requests.
    alerts, routine = parts.alerts, parts.outputs
    publish_many = routed(
        [settings.topic(FINDINGS), settings.topic(REVOCATIONS)],
        lambda records: _started(alerts).publish_many(records),
        lambda records: _started(routine).publish_many(records),
    )
    # tether's input topics skip faust's agents: the input fetcher (librdkafka) hands their
    # records to the intake, which gives them to the worker in batches (see intake.py). faust
    # still subscribes to them, assigns them, commits their offsets and recovers the tables
    # co-partitioned with them.
    intake = Intake(
        {},  # routed to the worker below, once it exists
        ready=ready,
        ack=ack,
        generation=lambda: app.consumer_generation_id,
        batch_max=settings.batch_max,
        inbound=lambda batch: mark_inbound(app.monitor, batch),
    )
    fetcher = InputFetcher(
        parts.input_config,
        intake,
        (intents_name, uses_name),
        lag_topic=intents_name,
        add_gap=lambda tp, first, last: faust_fixes.add_gap(app.consumer, tp, first, last),
        batch_max=settings.batch_max,
    )
    worker = Worker(
        settings,
        parts.context,
        TableStore(sessions_table, dump_session),
        TableStore(tokens_table, dump_token),
        Publisher(publish_many),
        parts.signer,  # a missing or unfit key has stopped the worker in worker_parts
        worker_id=parts.worker_id,
        gate=parts.gate,
        tuning=parts.tuning,
        lag=InputLag(
            behind=fetcher.behind,
            buffered=lambda: intake.pending > 0,
            records=fetcher.lag_records,
        ),
    )
    if worker.audit is not None:
        worker.audit.read_heads = kafka_head_reader(
            settings, client_id=f"tether-audit-{parts.worker_id}"
        )
    intake.route(intents_name, worker.submit_intents)
    intake.route(uses_name, worker.submit_uses)
    worker.signed_here = LocalSignatures()  # what this worker signed needs no verification
    sync = RegistrySync(
        settings,
        parts.registry,
        parts.verifier(),
        client_id=f"tether-registry-{parts.worker_id}",
        local=worker.signed_here,
    )
    ledger = None
    if settings.ledger:
        ledger = RevocationLedger(
            settings,
            parts.verifier(),
            client_id=f"tether-ledger-{parts.worker_id}",
            floor=worker.floor,
            local=LocalSignatures(capacity=10_000),  # bounded: others are verified
        )
        worker.signed_for_ledger = ledger.local  # what this worker signed needs no verification
    # every worker's revocations, for the decision log (streams.revocation_view)
    view = revocation_view(
        settings, parts.verifier(), worker.floor, client_id=f"{settings.group_id}.view"
    )
    recovery = FastRecovery(tables, {"sessions": load_session, "tokens": load_token})
    observer = WorkerObserver(settings, worker, tables_ready=ready, health=health)
    observer.readers(recovery, sync)
    faust_fixes.attach_intake(app, intake)
    faust_fixes.attach_input(app, fetcher)
    faust_fixes.attach_recovery(app, recovery)
    for topic in (intents, uses):
        app.topics.add(topic)

    async def _revoked(_: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # A batch being processed finishes (outputs, state, acknowledgements) before the
        # partitions move; what is only buffered is read again after the rebalance.
        worker.close_epoch()  # its state write starts now, not when the epoch would end
        if not await intake.wait_idle(settings.session_timeout_s / 2):
            _log.warning("a batch was still being processed when partitions were revoked")
        observer.assigned = False
        try:  # vouch for the decisions written so far before the partitions may move
            await asyncio.wait_for(worker.checkpoint(), settings.session_timeout_s / 4)
        except Exception:  # the next owner checkpoints the head it continues from
            _log.warning("no checkpoint of the decisions' chains before the rebalance")
        intake.reset()
        fetcher.unassign()  # assigned again once faust has sought to the committed offsets
        recovery.reset()  # the next assignment recovers from the changelogs' start

    async def _assigned(_: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        intake.reset()
        assigned = kwargs.get("assigned", args[0] if args else set())
        worker.assign({tp.partition for tp in assigned if tp.topic == intents_name})
        if worker.audit is not None:  # read the chain heads before any decision is written
            await worker.audit.assign(worker.assigned)
        observer.assigned = True

    def _shutdown(_: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        sync.stop()
        if ledger is not None:
            ledger.stop()
        view.stop()
        routine.stop(timeout=10)
        alerts.stop(timeout=10)
        worker.signing.close()
        fetcher.stop()

    app.on_partitions_revoked.connect(_revoked)
    app.on_partitions_assigned.connect(_assigned)
    app.on_before_shutdown.connect(_shutdown)

    @app.task  # type: ignore[untyped-decorator]  # faust's task decorator is untyped
    async def _start_background() -> None:
        worker.signing.start()  # the signing process starts before the first revocation
        fetcher.start()
        sync.start()
        if ledger is not None:
            ledger.start()
        view.start()

    @app.timer(interval=settings.tick_s)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def _backstop() -> None:
        observer.sample()
        if ready():
            await worker.tick()

    @app.timer(interval=settings.heartbeat_s)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def _heartbeat() -> None:
        if ready():
            await observer.heartbeat()

    @app.timer(interval=settings.audit_checkpoint_s)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def _checkpoint() -> None:
        if ready():
            await worker.checkpoint()

    return app, worker
