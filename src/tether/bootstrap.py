"""The composition root: the only place that picks concrete adapters for the core."""

from __future__ import annotations

from pathlib import Path

from tether.core import Context, DetectionConfig, Monitor
from tether.core.ports import AllowAll, CallPolicy
from tether.settings import Settings


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
