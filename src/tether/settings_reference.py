"""The settings in sections, and the reference generated from them (docs/configuration.md).

``Settings`` keeps one flat ``TETHER_<FIELD>`` variable per setting (every name the docs, the
deployments and the tests use keeps working; ``kafka`` is the one nested section,
``TETHER_KAFKA__<FIELD>``). ``SECTIONS`` says which section each setting belongs to, in the
order a user meets them; the last section, ``advanced``, holds the worker's internal tuning
knobs, which the reference keeps out of the user's way. ``reference()`` renders the Markdown
from the fields themselves (type, default, description), so the document cannot drift from the
code: ``tether settings doc`` (or ``make docs``) rewrites it, and a unit test fails when it is
stale or when a setting belongs to no section.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePath
from types import UnionType
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from tether.kafka_settings import KafkaSettings
from tether.settings import Settings

REFERENCE: Final = Path("docs/configuration.md")
"""Where the generated reference lives, relative to the repository root."""


@dataclass(frozen=True, slots=True)
class Section:
    """A group of settings as the reference presents them."""

    name: str
    title: str
    about: str
    fields: tuple[str, ...]
    advanced: bool = False


SECTIONS: Final = (
    Section(
        "detection",
        "Detection",
        "What counts as a finding and what it revokes; replay, the demo and the worker alike.",
        (
            "grace_s",
            "max_chain_length",
            "shadow",
            "credential_shared_across_workflows",
            "tuning",
            "tuning_poll_s",
            "disabled",
            "severity",
            "response",
            "shadow_codes",
            "policy",
            "policy_dir",
            "policy_pack",
            "max_skew_s",
            "max_ahead_s",
        ),
    ),
    Section(
        "limits",
        "Per-workflow state caps",
        "Bounds on what one workflow's state may hold (`tether.core.config.StateLimits`). "
        "Passing one raises `workflow_limits_exceeded` and revokes the workflow, except "
        "`TETHER_LIMIT_EVENT_ID_BYTES`, past which the oldest event ids are forgotten.",
        (
            "limit_state_bytes",
            "limit_event_id_bytes",
            "limit_pending",
            "limit_tokens",
            "limit_delegations",
            "limit_recent",
            "limit_token_pairs",
            "limit_token_workflows",
        ),
    ),
    Section(
        "kafka",
        "Kafka",
        "Where the topics are, how they are named and partitioned, and how every Kafka client "
        "authenticates (`TETHER_KAFKA__<FIELD>`, two underscores; docs/kafka-security.md).",
        ("kafka_bootstrap", "topic_prefix", "partitions", "app_id", "kafka"),
    ),
    Section(
        "redis",
        "Redis",
        "The revocation registry the worker keeps and gateways may read.",
        ("redis_url", "registry_staleness_s", "registry_sync_timeout_s"),
    ),
    Section(
        "signing",
        "Signing and verification",
        "The keys revocations and heartbeats are signed with, and how watchers verify them "
        "(docs/operations.md, Signing keys).",
        (
            "issuer",
            "signing_key",
            "signing_alg",
            "jwks",
            "jwks_refetch_s",
            "jwks_max_age_s",
            "jwks_allow_http",
            "jwks_require_iss",
            "token_issuer",
            "set_audience",
            "home",
        ),
    ),
    Section(
        "operators",
        "Operators",
        "Operators' keys and their signed actions, `tether revoke` and `tether reinstate` "
        "(docs/operators.md).",
        (
            "operator_jwks",
            "operator_issuer",
            "operator_key",
            "operator_name",
            "operator_revoke_s",
            "operator_window_s",
        ),
    ),
    Section(
        "sources",
        "Authenticated sources",
        "Who may emit telemetry, and the identity tokens tether verifies (docs/SECURITY.md).",
        ("sources", "sources_mode", "trusted_issuers"),
    ),
    Section(
        "worker",
        "Worker",
        "How a streaming worker runs in a deployment.",
        (
            "worker_id",
            "session_timeout_s",
            "heartbeat_s",
            "web_port",
            "web_host",
            "ledger",
            "tombstone_after_s",
            "output_reject_min_bytes",
        ),
    ),
    Section(
        "audit",
        "Audit log",
        "The tamper-evident decision log: hash links, signed checkpoints, retention "
        "(docs/audit.md).",
        ("audit_chain", "audit_checkpoint_s", "decisions_retention_ms"),
    ),
    Section(
        "watcher",
        "Watchers and gateways",
        "How a gateway's watcher decides that the revocation feed is fresh enough to trust.",
        (
            "staleness_s",
            "fail_closed_tiers",
            "max_input_lag_s",
            "watcher_hold_s",
            "watcher_hold_max",
        ),
    ),
    Section(
        "operations",
        "Metrics, health and logs",
        "Every long-running process's /metrics, /healthz and /readyz endpoint, and its log "
        "format (docs/monitoring.md).",
        ("metrics_addr", "log_format"),
    ),
    Section(
        "advanced",
        "Advanced: worker tuning (internal)",
        "Knobs of the worker's internals, measured and set for the common case. Change them "
        "only to reproduce a measurement or on advice (docs/architecture.md says what each "
        "mechanism does).",
        (
            "batch_max",
            "tick_s",
            "state_epoch_ms",
            "fetch_wait_ms",
            "output_linger_ms",
            "signing_processes",
            "signing_inline_max",
            "token_hold_s",
            "gil_switch_ms",
            "gc_log_ms",
            "gc_freeze",
            "gc_thaw_s",
            "malloc_trim_s",
            "trace",
        ),
        advanced=True,
    ),
)


def unsectioned() -> list[str]:
    """Settings that belong to no section (a new setting must be given one)."""
    placed = [name for section in SECTIONS for name in section.fields]
    return [name for name in Settings.model_fields if name not in placed]


def section_of(name: str) -> Section:
    """The section ``name`` belongs to.

    Raises:
        KeyError: it belongs to none.
    """
    for section in SECTIONS:
        if name in section.fields:
            return section
    raise KeyError(name)


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value: Any = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, frozenset | set):
        return json.dumps(sorted(value))
    if isinstance(value, dict):
        return json.dumps(value) if value else "{}"
    return str(value)


def _kind(info: FieldInfo) -> str:
    return _name(info.annotation).replace("|", "\\|")


def _name(annotation: Any) -> str:  # noqa: ANN401, PLR0911  # any annotation, one return per kind
    """A type as a user reads it: ``int``, ``path``, ``one of: A, B``, ``... or unset``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin is Annotated:
        return _name(args[0])
    if origin in (Union, UnionType):
        kinds = [_name(a) for a in args if a is not type(None)]
        optional = " (optional)" if type(None) in args else ""
        return " or ".join(kinds) + optional
    if origin in (set, frozenset, list, tuple):
        return f"JSON list of {_name(args[0])}"
    if origin is dict:
        return f"JSON object of {_name(args[1])}"
    if origin is not None:
        inner = ", ".join(_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is SecretStr:
        return "secret"
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _rows(model: type[BaseModel], env: str) -> list[str]:
    rows = []
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            continue  # a nested section: listed on its own
        rows.append(
            f"| `{env}{name.upper()}` | `{_default(info)}` | {_kind(info)} | "
            f"{_cell(info.description or '')} |"
        )
    return rows


def reference() -> str:
    """The Markdown of docs/configuration.md."""
    fields = Settings.model_fields
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by `tether settings doc` (make docs) from src/tether/settings.py and",
        "src/tether/settings_reference.py: edit those, not this file. -->",
        "",
        "tether reads one settings object (`tether.settings.Settings`) from `TETHER_*` "
        "environment variables; a command-line flag wins over its variable. Values are "
        "validated at start-up: a bad one stops the process with a message naming it.",
        "",
        "Sections: "
        + ", ".join(f"[{s.title}](#{s.name})" for s in SECTIONS)
        + ". The last holds internal tuning knobs; a deployment leaves them alone.",
    ]
    for section in SECTIONS:
        out += ["", f'<a id="{section.name}"></a>', "", f"## {section.title}", "", section.about]
        out += ["", "| variable | default | type | what it does |", "|---|---|---|---|"]
        for name in section.fields:
            info = fields[name]
            if name == "kafka":
                out += _rows(KafkaSettings, "TETHER_KAFKA__")
                continue
            row = _rows_for(name, info)
            out.append(row)
    leftover = unsectioned()
    if leftover:
        out += ["", "## Not yet in a section", "", "| variable | default | type | what it does |"]
        out += ["|---|---|---|---|"] + [_rows_for(name, fields[name]) for name in leftover]
    return "\n".join(out) + "\n"


def _rows_for(name: str, info: FieldInfo) -> str:
    return (
        f"| `TETHER_{name.upper()}` | `{_default(info)}` | {_kind(info)} | "
        f"{_cell(info.description or '')} |"
    )
