"""The composition root: the only place that picks concrete adapters for the core.

Every process is built here from ``Settings``: replay and the demo (``monitor``), the worker
(``worker_parts``: every adapter the faust app in ``streams/`` wires together; tests replace any
of them with ``dataclasses.replace`` or the keyword overrides), watchers and gateways
(``tether.security.verifier_from_settings``, ``RedisRegistry.from_settings``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.core import Context, DetectionConfig, Monitor
from tether.core.ports import AllowAll, CallPolicy
from tether.settings import Settings

if TYPE_CHECKING:
    from tether.adapters.kafka_publisher import KafkaPublisher
    from tether.adapters.redis_registry import RedisRegistry
    from tether.security.gate import SourceGate
    from tether.security.sets import SetSigner, SetVerifier
    from tether.tuning import TuningWatch

_log = logging.getLogger("tether")


def call_policy(settings: Settings) -> CallPolicy:
    """Cedar per-call policy from ``settings.policy_dir`` (or a built-in pack), or allow-all."""
    if not settings.policy:
        return AllowAll()
    from tether.policy.bind import CedarCallPolicy  # noqa: PLC0415  # cedarpy loads only when used

    return CedarCallPolicy.from_dir(settings.policy_dir, settings.policy_pack)


def context(settings: Settings, cfg: DetectionConfig | None = None) -> Context:
    """The core's context: detection tuning plus the per-call policy."""
    return Context(cfg=cfg or settings.detection(), policy=call_policy(settings))


def monitor(
    settings: Settings, *, policy_dir: Path | None = None, decisions: bool = True
) -> Monitor:
    """An in-memory monitor configured from settings (``decisions``: emit Decision records)."""
    if policy_dir is not None:
        settings = settings.model_copy(update={"policy_dir": policy_dir})
    return Monitor(context(settings, settings.detection(emit_decisions=decisions)))


def source_gate(
    settings: Settings, cfg: DetectionConfig | None = None, *, warn: bool = True
) -> SourceGate | None:
    """The source gate from ``settings.sources`` and ``settings.trusted_issuers`` (None when
    neither is set: inputs are believed as they are, and this says so once, at start-up).

    Raises:
        ValueError: the registry or an issuer's JWKS location is unusable.
    """
    if settings.sources is None and not settings.trusted_issuers:
        if warn:
            _log.warning(
                "no source registry (TETHER_SOURCES / --sources): input events are "
                "unauthenticated and every field they assert is believed (docs/SECURITY.md)"
            )
        return None
    from tether.security.gate import SourceGate  # noqa: PLC0415  # only with a registry
    from tether.security.keys import KeySource  # noqa: PLC0415
    from tether.security.sources import load_registry  # noqa: PLC0415
    from tether.security.tokens import TokenVerifier  # noqa: PLC0415

    registry = None
    if settings.sources is not None:
        registry = load_registry(settings.sources, default_mode=settings.sources_mode)
    tokens = None
    if settings.trusted_issuers:
        tokens = TokenVerifier(
            {
                iss: KeySource(
                    loc,
                    min_refetch_s=settings.jwks_refetch_s,
                    max_age_s=settings.jwks_max_age_s,
                )
                for iss, loc in settings.trusted_issuers.items()
            }
        )
    return SourceGate(registry, tokens, cfg or settings.detection())


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerParts:
    """Every adapter a streaming worker uses, chosen from settings; ``streams.app.build`` wires
    them into the faust app and constructs nothing of its own but tether's stream components."""

    settings: Settings
    worker_id: str  # names the worker's clients, heartbeats and static group membership
    context: Context  # detection tuning and the per-call policy
    gate: SourceGate | None  # authenticates each input record (None: inputs believed)
    signer: SetSigner  # revocations and heartbeats leave signed
    alerts: KafkaPublisher  # findings and revocations: never wait (linger.ms 0)
    outputs: KafkaPublisher  # routine records: may wait output_linger_ms to share requests
    registry: RedisRegistry  # the Redis revocation registry the sync keeps
    verifier: Callable[[], SetVerifier]  # a verifier for the registry sync and the ledger
    input_config: dict[str, Any]  # librdkafka consumer configuration of the input fetcher
    tuning: TuningWatch | None = None  # re-reads settings.tuning when it changes (None: unset)


def worker_id(settings: Settings) -> str:
    """``settings.worker_id``, or host-pid (dynamic group membership)."""
    return settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"


def worker_parts(settings: Settings, **overrides: Any) -> WorkerParts:  # noqa: ANN401  # a part of any type
    """The adapters of a streaming worker from ``settings`` (``overrides`` replace any of them
    by name). Nothing connects yet: the Kafka and Redis clients connect on first use.

    Raises:
        ValueError: the signing key, the source registry or a JWKS location is unusable.
    """
    from tether.adapters.kafka_config import consumer_config  # noqa: PLC0415  # worker only
    from tether.adapters.kafka_publisher import KafkaPublisher  # noqa: PLC0415
    from tether.adapters.redis_registry import RedisRegistry  # noqa: PLC0415
    from tether.security import signer_from_settings, verifier_from_settings  # noqa: PLC0415

    name = overrides.pop("worker_id", None) or worker_id(settings)
    tuning = overrides.pop("tuning", None) or tuning_watch(settings)
    ctx = overrides.pop("context", None) or context(
        settings, tuning.cfg if tuning is not None else None
    )

    def lazy(key: str, make: Callable[[], Any]) -> Any:  # noqa: ANN401  # each part its type
        return overrides.pop(key) if key in overrides else make()

    parts = WorkerParts(
        settings=settings,
        worker_id=name,
        context=ctx,
        gate=lazy("gate", lambda: source_gate(settings, ctx.cfg)),
        signer=lazy("signer", lambda: signer_from_settings(settings)),
        alerts=lazy(
            "alerts",
            lambda: KafkaPublisher(
                settings, client_id=f"tether-worker-{name}-alerts", overrides={"linger.ms": 0}
            ),
        ),
        outputs=lazy(
            "outputs",
            lambda: KafkaPublisher(
                settings,
                client_id=f"tether-worker-{name}",
                overrides={"linger.ms": settings.output_linger_ms},
            ),
        ),
        # The registry sync's own timeout, not a gateway's: it must keep writing over a slow link.
        registry=lazy(
            "registry",
            lambda: RedisRegistry.from_settings(
                settings, timeout_s=settings.registry_sync_timeout_s
            ),
        ),
        verifier=lazy("verifier", lambda: lambda: verifier_from_settings(settings)),
        tuning=tuning,
        input_config=lazy(
            "input_config",
            lambda: consumer_config(
                settings,
                group_id=settings.group_id,  # for the record: it joins no group, commits nothing
                client_id=f"tether-input-{name}",
                overrides={"fetch.wait.max.ms": settings.fetch_wait_ms},
            ),
        ),
    )
    if overrides:
        raise TypeError(f"unknown worker parts: {sorted(overrides)}")
    return parts


def tuning_watch(settings: Settings) -> TuningWatch | None:
    """A watch over ``settings.tuning`` on top of the environment's tuning (None: no file).

    Raises:
        tether.tuning.TuningError: the file is unreadable or invalid at start-up.
    """
    if settings.tuning is None:
        return None
    from tether.tuning import TuningWatch  # noqa: PLC0415

    return TuningWatch(
        settings.tuning, settings.detection(tuning=False), interval_s=settings.tuning_poll_s
    )
