"""The composition root: the only place that picks concrete adapters for the core."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from tether.core import Context, DetectionConfig, Monitor
from tether.core.ports import AllowAll, CallPolicy
from tether.settings import Settings

if TYPE_CHECKING:
    from tether.security.gate import SourceGate

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
