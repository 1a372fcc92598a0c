"""The source registry (``sources.yaml``): who may emit telemetry, with which keys, saying what.

A telemetry source is a component that writes to ``tether.intents`` (an orchestrator, a gateway,
the token service, the SDK inside one class of agents). Each one signs its records with a key of
its own (``proof``, see ``tether.security.proof``) and may assert only what the registry grants
it. docs/SECURITY.md is the reference, with an example (``examples/sources.yaml``).

Workload patterns: an exact id (``spiffe://acme.example/agent/planner``), a prefix ending in
``/*`` (``spiffe://acme.example/agent/*``: every id below that path; ``spiffe://acme.example/*``:
the whole trust domain), or ``*`` (any workload). A prefix never matches an id whose remainder
has an empty, ``.`` or ``..`` segment, so ``.../agent/../admin`` is not below ``.../agent/``.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tether.models.events import EVENT_TYPES
from tether.security.keys import KeySource

_log = logging.getLogger(__name__)

Mode = Literal["enforce", "audit"]
_MEMO_MAX = 65536  # workload ids remembered per pattern set
MIN_HMAC_KEY_BYTES = 32  # RFC 7518 §3.2: a key at least as long as the hash output


class SourceSpec(BaseModel):
    """One entry of ``sources:`` in ``sources.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
    keys: str = Field(min_length=1, description="JWKS file (relative to sources.yaml) or https URL")
    event_types: list[str] = Field(default_factory=lambda: list(EVENT_TYPES))
    workloads: list[str] = Field(default_factory=list, description="workloads it speaks for")
    start: bool = Field(False, description="may start workflows (assert grants)")
    workflow_ids: list[str] | None = Field(
        None,
        description="workflow ids it may start: exact ids or prefixes ending in '*' (default: "
        "any); disjoint namespaces stop one start-capable source squatting another's ids",
    )
    complete: Literal["any", "own", "none"] = Field(
        "own",
        description="any workflow (an orchestrator), own (workflows whose initiator it "
        "speaks for), none",
    )
    delegate_for: list[str] | None = Field(
        None, description="delegators it may grant for (default: its workloads)"
    )
    trusted_credentials: bool = Field(
        False,
        description="it checks the tokens it reports (a gateway, the token service): its "
        "asserted credentials are believed, for any subject",
    )

    @field_validator("event_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(f"unknown event types {unknown}; use {list(EVENT_TYPES)}")
        return value


class RegistrySpec(BaseModel):
    """The whole ``sources.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode | None = Field(None, description="enforce | audit (default: the setting)")
    sources: list[SourceSpec] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Workloads:
    """A compiled set of workload patterns."""

    exact: frozenset[str]
    prefixes: tuple[str, ...]
    anything: bool
    _memo: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, patterns: list[str]) -> Workloads:
        exact, prefixes = set(), []
        for p in patterns:
            if p == "*":
                return cls(frozenset(), (), anything=True)
            if p.endswith("/*"):
                prefixes.append(p[:-1])
            elif "*" in p:
                raise ValueError(f"workload pattern {p!r}: '*' only as a last '/*' segment")
            else:
                exact.add(p)
        return cls(frozenset(exact), tuple(prefixes), anything=False)

    def __contains__(self, workload_id: object) -> bool:
        if not isinstance(workload_id, str):
            return False
        if self.anything or workload_id in self.exact:
            return True
        memo = self._memo
        hit = memo.get(workload_id)
        if hit is None:
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            memo[workload_id] = hit = self._below(workload_id)
        return hit

    def _below(self, workload_id: str) -> bool:
        for prefix in self.prefixes:
            if workload_id.startswith(prefix):
                rest = workload_id[len(prefix) :].split("/")
                return all(seg not in ("", ".", "..") for seg in rest)
        return False


@dataclass(frozen=True, slots=True)
class WorkflowIds:
    """Workflow ids a source may start: exact ids and prefixes (``wf-planner-*``); None: any."""

    exact: frozenset[str]
    prefixes: tuple[str, ...]

    @classmethod
    def of(cls, patterns: list[str] | None) -> WorkflowIds | None:
        if patterns is None or "*" in patterns:
            return None
        exact = frozenset(p for p in patterns if not p.endswith("*"))
        prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))
        if any("*" in p for p in (*exact, *prefixes)):
            raise ValueError("workflow id patterns: '*' only at the end")
        return cls(exact, prefixes)

    def __contains__(self, workflow_id: object) -> bool:
        return isinstance(workflow_id, str) and (
            workflow_id in self.exact or workflow_id.startswith(self.prefixes)
        )


@dataclass(frozen=True, slots=True)
class Source:
    """A registered source, ready for the gate."""

    name: str
    keys: KeySource
    event_types: frozenset[str]
    workloads: Workloads
    delegate_for: Workloads
    start: bool
    complete: Literal["any", "own", "none"]
    trusted_credentials: bool
    workflow_ids: WorkflowIds | None = None


@dataclass(frozen=True, slots=True)
class Registry:
    """The telemetry sources by name, and the mode they are enforced in."""

    sources: dict[str, Source]
    mode: Mode
    origin: str


def parse_source_jwks(data: bytes, origin: str = "JWKS") -> dict[str, Key]:
    """The HS256 secrets (``kty: oct``) of a source's key set, by ``kid``.

    Raises:
        ValueError: the document is not a JWKS.
    """
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{origin} is not JSON: {exc}") from exc
    items = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ValueError(f"{origin} is not a JWKS (no 'keys' list)")
    keys: dict[str, Key] = {}
    for item in items:
        kid = item.get("kid") if isinstance(item, dict) else None
        try:
            if not isinstance(item, dict) or item.get("kty") != "oct":
                raise ValueError("a source key is an HS256 secret (kty oct)")
            if item.get("alg", "HS256") != "HS256":
                raise ValueError(f"alg {item.get('alg')!r}: source keys are HS256")
            if not isinstance(kid, str) or not kid:
                raise ValueError("no kid")
            key = JWKRegistry.import_key(item)
            if len(secret_of(key)) < MIN_HMAC_KEY_BYTES:
                raise ValueError(f"shorter than {MIN_HMAC_KEY_BYTES} bytes")
        except (JoseError, ValueError, TypeError) as exc:
            _log.warning("%s: skipping key %r: %s", origin, kid, exc)
            continue
        keys[kid] = key
    return keys


def secret_of(key: Key) -> bytes:
    """The raw bytes of an HS256 key."""
    k = key.as_dict(private=True).get("k")
    if not isinstance(k, str):
        raise ValueError("not an oct key")
    return base64.urlsafe_b64decode(k + "=" * (-len(k) % 4))


def load_registry(
    path: Path,
    *,
    default_mode: Mode = "enforce",
    key_source: Callable[[str], KeySource] | None = None,
) -> Registry:
    """Read and check ``sources.yaml``; key files are resolved relative to it.

    Raises:
        ValueError: the file is unreadable, not YAML, or breaks the schema (names the field).
    """
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read the source registry {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not YAML: {exc}") from exc
    try:
        spec = RegistrySpec.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    names = [s.name for s in spec.sources]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: source names must be unique")
    make = key_source or (lambda loc: KeySource(loc, parse=parse_source_jwks))
    sources = {}
    for s in spec.sources:
        loc = s.keys if "://" in s.keys else str((path.parent / s.keys).resolve())
        workloads = Workloads.of(s.workloads)
        sources[s.name] = Source(
            name=s.name,
            keys=make(loc),
            event_types=frozenset(s.event_types),
            workloads=workloads,
            delegate_for=workloads if s.delegate_for is None else Workloads.of(s.delegate_for),
            start=s.start,
            complete=s.complete,
            trusted_credentials=s.trusted_credentials,
            workflow_ids=WorkflowIds.of(s.workflow_ids),
        )
    return Registry(sources, spec.mode or default_mode, str(path))
