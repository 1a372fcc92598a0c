"""The worker process: make sure the broker and topics are there, then run the faust app; and
the standalone registry-sync process (``tether registry-sync``).

The CLI (``tether worker``) reaches this module through ``tether.streaming``, the one place that
knows where the worker runtime lives (``src/`` never imports this package).
"""

from __future__ import annotations

import gc
import signal
import sys
import threading
from typing import NoReturn

import faust

from tether.adapters.kafka_admin import create_topics, wait_for_broker
from tether.adapters.redis_registry import RedisRegistry
from tether.bootstrap import worker_id, worker_parts
from tether.health import Health, serve
from tether.logs import configure, dict_config
from tether.metrics import READINGS, counter
from tether.security import verifier_from_settings
from tether.settings import Settings

from .app import build
from .faust_fixes import check_versions
from .gc_freeze import GcFreezer
from .gc_pauses import GcPauses
from .heap_trim import HeapTrimmer
from .observe import worker_health
from .registry_sync import RegistrySync


def run_worker(settings: Settings, *, loglevel: str = "warning") -> NoReturn:
    """Create missing topics, then run the faust worker until it is stopped (SIGTERM/SIGINT)."""
    check_versions()  # before anything connects: a clear error naming the pinned versions
    configure(loglevel, fmt=settings.log_format, worker=settings.worker_id)
    # /metrics, /healthz and /readyz answer from here on (not ready until the tables recover)
    health = worker_health(settings)
    serve(settings.metrics_addr, health)
    wait_for_broker(settings, timeout=60)
    create_topics(settings)
    # The worker's threads hand work to each other (faust's consumer thread, the producer's
    # delivery reports, the registry sync): a thread waiting for the GIL waits up to the switch
    # interval, 5 ms by default, at every hand-off on a busy worker. 1 ms keeps those waits off
    # the detection latency at the cost of a little more switching.
    sys.setswitchinterval(settings.gil_switch_ms / 1000)
    app, _ = build(settings, worker_parts(settings), health=health)
    # Python's full garbage collection walks every tracked object while holding the GIL: the
    # objects of faust, aiokafka, pydantic and Cedar made them stalls of the whole worker of
    # hundreds of ms every few seconds under load (the p99 of detection latency). What exists
    # by now lives as long as the process: freeze it out of the collector's view (recovered
    # table state is frozen too, see streams.recovery).
    gc.collect()
    gc.freeze()
    GcPauses(settings.gc_log_ms / 1000).install()
    if settings.gc_freeze:  # and the live state, as it survives full collections
        GcFreezer(settings.gc_thaw_s).install()
    HeapTrimmer(settings.malloc_trim_s).start()
    # faust replaces the root logger's handlers when it starts: give it tether's format
    logging_config = dict_config(loglevel, fmt=settings.log_format, worker=settings.worker_id)
    worker = faust.Worker(
        app,
        loglevel=loglevel,
        quiet=True,
        redirect_stdouts=False,
        logging_config=logging_config if settings.log_format == "json" else None,
    )
    # faust's terminal spinner sets the root logger to DEBUG (so that every record spins it)
    # whenever the level is WARNING or above: every debug call in aiokafka and faust then
    # builds a LogRecord, several per fetch. The worker is not an interactive program.
    worker.spinner = None
    worker.execute_from_commandline()


def run_registry_sync(settings: Settings) -> None:
    """Keep the revocation registry (Redis) in step with the revocations topic, without a
    worker, until SIGTERM or SIGINT (``tether registry-sync``).

    Every worker runs the same sync in a thread; this process joins the same consumer group
    (``<app id>.registry``) and takes a share of its partitions: a registry that stays in step
    while the workers are down or being rolled, and a process of its own to watch and scale."""
    configure("info", fmt=settings.log_format, worker=settings.worker_id)
    health = Health("registry-sync", alive_s=30.0)
    ops = serve(settings.metrics_addr, health)
    sync = RegistrySync(
        settings,
        RedisRegistry.from_settings(settings),
        verifier_from_settings(settings),
        client_id=f"tether-registry-{worker_id(settings)}",
    )
    health.check("following", lambda: sync.running)
    health.check("partitions_assigned", lambda: bool(sync.assigned))
    READINGS.add(
        "registry-sync",
        lambda: [
            counter(
                "tether_registry_writes",
                "Revocations the registry sync wrote to the revocation registry (Redis)",
                sync.written,
            )
        ],
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sync.start()
    try:
        while not stop.wait(1.0):
            health.beat()
            if not sync.running:
                raise SystemExit("the registry sync stopped (see the log above)")
    finally:
        sync.stop()
        if ops is not None:
            ops.stop()
