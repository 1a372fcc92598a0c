"""Load a Cedar policy pack: parse each file, check its annotations, validate it by the schema."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import cedarpy

from tether.policy.request import OPERATIONS, PolicyRequest
from tether.policy.result import DEFAULT_SEVERITY, SEVERITIES
from tether.policy.schema import (
    SCHEMA_FILE,
    cedar_request,
    default_pack_dir,
    default_schema_source,
    entity_store,
    parse_schema,
)
from tether.policy.source import statements

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping, Sequence
    from importlib.resources.abc import Traversable

RESERVED_PREFIX = "tether:"
"""Prefix of the synthetic policy ids tether reports itself; no `@id` may start with it."""

_POSITIONAL_ID = re.compile(r"policy(\d+)")
_ACTION_UID = re.compile(r'Action::"[^"]*"')
_PROBE_TIME = datetime(2026, 1, 5, 12, tzinfo=UTC)


class PolicyError(Exception):
    """A policy pack that cannot be loaded.

    Attributes:
        problems: One line per problem, each starting with the file it is in (`FILE: ...`, with
            `line N: ` next when the line is known).
    """

    def __init__(self, problems: Sequence[str]) -> None:
        """Create the error from its problems (at least one)."""
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True, slots=True, eq=False)
class PolicyPack:
    """A parsed, validated set of Cedar policies, ready to evaluate.

    Attributes:
        policy_set: The parsed policies. Each one's Cedar policy id is its `@id`.
        schema: The parsed schema the policies were validated against.
        entities: The entity store for evaluations (the schema's action entities).
        policy_ids: Every policy's `@id`, in file order (files sorted by name).
        severities: Each forbid policy's `@severity` (`DEFAULT_SEVERITY` when unannotated).
        origins: Each policy's `FILE` or `FILE: line N`, for messages.
        revision: A short sha256 of the sources, to record with each decision.
        settled_ops: Operations whose decision cannot depend on the request: no forbid can
            apply to them and every permit that can is unconditional. Maps each to the
            permits that allow it, so callers can skip evaluation (and its cache) for them.
    """

    policy_set: cedarpy.PolicySet
    schema: cedarpy.Schema
    entities: cedarpy.Entities
    policy_ids: tuple[str, ...]
    severities: Mapping[str, str]
    origins: Mapping[str, str]
    revision: str
    settled_ops: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Policy:
    id: str
    where: str
    effect: str
    severity: str | None
    est: dict[str, Any]


def load_policy_dir(path: str | os.PathLike[str]) -> PolicyPack:
    """Load every `*.cedar` file in a directory as one pack.

    The directory's `*.cedarschema` file is the schema if there is one, else tether's packaged
    default. Every policy needs a unique `@id`; `@severity`, on forbid policies, is one of
    `SEVERITIES`.

    Args:
        path: The directory.

    Returns:
        The pack.

    Raises:
        PolicyError: Every problem found, each naming its file.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise PolicyError([f"{directory}: not a directory"])
    return _load(directory)


BUILTIN_PACKS: Final = ("default", "strict")
"""Packs shipped with tether: ``default`` forbids only what no task should do (moving secret
material out); ``strict`` adds org-wide guardrails to tune (admin, after-hours restricted data,
deep deletes, sensitive transfers)."""


def load_builtin_pack(name: str) -> PolicyPack:
    """Load a pack shipped with tether by name (one of ``BUILTIN_PACKS``).

    Raises:
        PolicyError: The name is unknown.
    """
    if name not in BUILTIN_PACKS:
        raise PolicyError(
            [f"unknown policy pack {name!r}; choose one of {', '.join(BUILTIN_PACKS)}"]
        )
    return _load(files("tether.policy") / name)


def load_default_pack() -> PolicyPack:
    """Load the pack shipped with tether (`tether/policy/default`).

    Returns:
        The pack.

    Raises:
        PolicyError: The packaged files are broken (a packaging bug).
    """
    return _load(default_pack_dir())


def build_pack(policies: Sequence[tuple[str, str]], schema: tuple[str, str]) -> PolicyPack:
    """Build a pack from sources in memory.

    Args:
        policies: `(file name, Cedar text)` per policy file, in the order to number them.
        schema: `(file name, text)` of the schema, in Cedar's human-readable format.

    Returns:
        The pack.

    Raises:
        PolicyError: Every problem found, each naming its file.
    """
    problems: list[str] = []
    schema_name, schema_source = schema
    parsed_schema: cedarpy.Schema | None = None
    try:
        parsed_schema = parse_schema(schema_source)
    except ValueError as exc:
        problems.append(f"{schema_name}: {exc}")
    found: list[_Policy] = []
    for name, source in policies:
        found.extend(_check_file(name, source, parsed_schema, problems))
    seen: dict[str, str] = {}
    for policy in found:
        if policy.id in seen:
            first = seen[policy.id]
            problems.append(f'{policy.where}: duplicate @id "{policy.id}" (first in {first})')
        else:
            seen[policy.id] = policy.where
    if problems or parsed_schema is None:
        raise PolicyError(problems)
    try:
        policy_set = cedarpy.PolicySet.from_json_str(json.dumps(_policy_set_est(found)))
    except ValueError as exc:  # not expected: every file parsed on its own
        raise PolicyError([f"{policies[0][0] if policies else schema_name}: {exc}"]) from exc
    entities = entity_store(parsed_schema)
    _probe(policy_set, parsed_schema, entities, schema_name)
    digest = hashlib.sha256()
    for _, source in [*policies, schema]:
        digest.update(source.encode())
        digest.update(b"\0")
    return PolicyPack(
        policy_set=policy_set,
        schema=parsed_schema,
        entities=entities,
        policy_ids=tuple(p.id for p in found),
        severities=MappingProxyType(
            {p.id: p.severity or DEFAULT_SEVERITY for p in found if p.effect == "forbid"}
        ),
        origins=MappingProxyType({p.id: p.where for p in found}),
        revision=digest.hexdigest()[:12],
        settled_ops=MappingProxyType(_settled_ops(found)),
    )


def _applies_to(est: dict[str, Any], op: str) -> bool:
    """Whether a policy's action scope can match action ``op`` (conservatively: yes if unsure)."""
    action = est.get("action", {})
    kind = action.get("op")
    if kind == "All":
        return True
    if kind == "==":
        return bool(action.get("entity", {}).get("id") == op)
    if kind == "in" and "entities" in action:
        return any(e.get("id") == op for e in action["entities"])
    return True


def _unconditional(est: dict[str, Any]) -> bool:
    return (
        not est.get("conditions")
        and est.get("principal", {}).get("op") == "All"
        and est.get("resource", {}).get("op") == "All"
    )


def _settled_ops(found: Sequence[_Policy]) -> dict[str, tuple[str, ...]]:
    settled: dict[str, tuple[str, ...]] = {}
    for op in sorted(OPERATIONS):
        relevant = [p for p in found if _applies_to(p.est, op)]
        if any(p.effect == "forbid" for p in relevant):
            continue
        permits = [p for p in relevant if p.effect == "permit"]
        if permits and all(_unconditional(p.est) for p in permits):
            settled[op] = tuple(sorted(p.id for p in permits))
    return settled


def _load(directory: Traversable) -> PolicyPack:
    entries = sorted((e for e in directory.iterdir() if e.is_file()), key=lambda e: e.name)
    problems: list[str] = []
    policies = [_read(e, problems) for e in entries if e.name.endswith(".cedar")]
    schemas = [_read(e, problems) for e in entries if e.name.endswith(".cedarschema")]
    if not policies:
        problems.append(f"{directory}: no *.cedar policy files")
    if len(schemas) > 1:
        names = ", ".join(label for label, _ in schemas)
        problems.append(f"{directory}: more than one schema ({names}); keep one *.cedarschema")
    if problems:
        raise PolicyError(problems)
    schema = schemas[0] if schemas else (f"<default>/{SCHEMA_FILE}", default_schema_source())
    return build_pack(policies, schema)


def _read(entry: Traversable, problems: list[str]) -> tuple[str, str]:
    label = str(entry)
    try:
        return label, entry.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{label}: cannot read: {exc}")
        return label, ""


def _check_file(
    name: str, source: str, schema: cedarpy.Schema | None, problems: list[str]
) -> list[_Policy]:
    """Parse one file and check its annotations and types; append what is wrong to `problems`."""
    try:
        est: dict[str, Any] = json.loads(cedarpy.policies_to_json_str(source))
    except ValueError as exc:
        problems.append(f"{name}: {_locate_parse_error(source, exc)}")
        return []
    if est.get("templates"):
        problems.append(
            f"{name}: templates (policies with ?principal or ?resource) are not allowed"
        )
        return []
    static: dict[str, dict[str, Any]] = est.get("staticPolicies", {})
    order = sorted(static, key=_position)
    lines = [s.line for s in statements(source)]
    wheres = {
        key: f"{name}: line {lines[i]}" if len(lines) == len(order) else name
        for i, key in enumerate(order)
    }
    found: list[_Policy] = []
    for key in order:
        policy = _annotated(static[key], wheres[key], problems)
        if policy is not None:
            found.append(policy)
    if schema is not None:
        ids = {key: static[key].get("annotations", {}).get("id") for key in order}
        problems.extend(_validation_problems(source, schema, wheres, ids, name))
    return found


def _annotated(est: dict[str, Any], where: str, problems: list[str]) -> _Policy | None:
    annotations: dict[str, str | None] = est.get("annotations", {})
    policy_id = annotations.get("id")
    severity = annotations.get("severity")
    if not policy_id:
        problems.append(f'{where}: every policy needs a non-empty @id("...") annotation')
        return None
    if policy_id.startswith(RESERVED_PREFIX):
        reserved = f'ids starting "{RESERVED_PREFIX}" are reserved'
        problems.append(f'{where}: @id "{policy_id}": {reserved}')
        return None
    if "severity" in annotations and severity not in SEVERITIES:
        allowed = ", ".join(SEVERITIES)
        problems.append(f'{where}: policy "{policy_id}": @severity must be one of {allowed}')
        return None
    return _Policy(policy_id, where, str(est.get("effect")), severity, est)


def _validation_problems(
    source: str,
    schema: cedarpy.Schema,
    wheres: Mapping[str, str],
    ids: Mapping[str, str | None],
    name: str,
) -> list[str]:
    """Validate one file against the schema; one problem per policy and distinct message.

    Cedar validates each policy on its own, so validating file by file is validating the set,
    with every error attributable to its file. An error repeated for each action a policy
    applies to is reported once.
    """
    result = cedarpy.validate_policies(source, schema)
    grouped: dict[tuple[str, str], list[str]] = {}
    for error in result.errors:
        message = error.error.removeprefix(f"for policy `{error.policy_id}`, ")
        grouped.setdefault((error.policy_id, _ACTION_UID.sub("Action::*", message)), []).append(
            message
        )
    problems = []
    for (key, _), messages in grouped.items():
        more = f" (and for {len(messages) - 1} more actions)" if len(messages) > 1 else ""
        policy = f'policy "{ids[key]}": ' if ids.get(key) else ""
        problems.append(f"{wheres.get(key, name)}: {policy}{messages[0]}{more}")
    return problems


def _locate_parse_error(source: str, error: ValueError) -> str:
    """Cedar's parse errors carry no position: find the first statement that fails alone."""
    for statement in statements(source):
        try:
            cedarpy.policies_to_json_str(statement.text)
        except ValueError as exc:
            return f"line {statement.line}: {exc}"
    return str(error)


def _position(key: str) -> int:
    match = _POSITIONAL_ID.fullmatch(key)
    return int(match.group(1)) if match else -1


def _policy_set_est(policies: Sequence[_Policy]) -> dict[str, Any]:
    """Cedar's JSON form of the whole set, each policy under its `@id` as its Cedar id."""
    return {
        "staticPolicies": {p.id: p.est for p in policies},
        "templates": {},
        "templateLinks": [],
    }


def _probe(
    policy_set: cedarpy.PolicySet,
    schema: cedarpy.Schema,
    entities: cedarpy.Entities,
    schema_name: str,
) -> None:
    """Check that the schema accepts tether's request shape for every operation.

    A custom schema that does not would make every call fail to evaluate (and be denied).
    """
    problems: dict[str, None] = {}  # ordered set: each operation tends to fail the same way
    for operation in sorted(OPERATIONS):
        probe = PolicyRequest.for_call(
            workload_id="spiffe://probe.invalid/agent",
            operation=operation,
            tool="probe",
            resource="",
            destination="",
            data_sensitivity="public",
            occurred_at=_PROBE_TIME,
            is_initiator=True,
        )
        response = cedarpy.is_authorized(cedar_request(probe), policy_set, entities, schema=schema)
        problems.update(
            (f"{schema_name}: does not fit tether's requests (see {SCHEMA_FILE}): {e}", None)
            for e in response.diagnostics.errors
            if e.startswith("failed to build request")
        )
    if problems:
        raise PolicyError(list(problems))
