"""The Cedar names and schema that tether's call requests conform to."""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING, Final

import cedarpy

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    from tether.policy.request import PolicyRequest

NAMESPACE: Final = "Tether"
PRINCIPAL_TYPE: Final = f"{NAMESPACE}::Workload"
ACTION_TYPE: Final = f"{NAMESPACE}::Action"
RESOURCE_TYPE: Final = f"{NAMESPACE}::Tool"

SCHEMA_FILE: Final = "tether.cedarschema"
"""Name of the packaged default schema, in Cedar's human-readable schema format."""


def default_pack_dir() -> Traversable:
    """Return the packaged default policy directory (`tether/policy/default`)."""
    return files("tether.policy") / "default"


def default_schema_source() -> str:
    """Return the text of the packaged default schema."""
    return (default_pack_dir() / SCHEMA_FILE).read_text(encoding="utf-8")


def parse_schema(source: str) -> cedarpy.Schema:
    """Parse a schema in Cedar's human-readable format.

    Args:
        source: The schema text.

    Returns:
        A parsed schema handle, reusable across validations and evaluations.

    Raises:
        ValueError: The text is not a valid schema (Cedar's message).
    """
    return cedarpy.Schema.from_str(source)


def entity_store(schema: cedarpy.Schema) -> cedarpy.Entities:
    """Return the entity store for evaluations under `schema`: its action entities, nothing else.

    Cedar does not require a request's principal or resource to be in the store. An entity
    missing from it behaves exactly like one with no attributes and no parents, which is all
    tether could supply (its schema declares neither): `principal == E` and `principal in E`
    compare ids, and a policy reading an entity attribute fails validation. Building the two
    minimal entities per call would cost about 10 µs and change no decision. The action
    entities do matter: they carry the schema's action groups, for `action in ...`.

    Args:
        schema: The pack's schema.

    Returns:
        A parsed store, to reuse for every evaluation.
    """
    return cedarpy.Entities.from_json_str("[]", schema)


def cedar_request(request: PolicyRequest) -> dict[str, object]:
    """Return the `cedarpy.is_authorized` request for a tool call.

    Entity ids go in dict form, so any workload id or tool name is accepted verbatim (Cedar's
    surface syntax would need escaping).

    Args:
        request: The tool call.

    Returns:
        The principal, action, resource and context.
    """
    return {
        "principal": {"type": PRINCIPAL_TYPE, "id": request.workload_id},
        "action": {"type": ACTION_TYPE, "id": request.operation},
        "resource": {"type": RESOURCE_TYPE, "id": request.tool},
        "context": request.context(),
    }
