"""Which identities a proxied request is about: the gateway's configurable request mapping.

Pure (no I/O, no clock): a request's method, path, headers and body in, the token ids,
workloads, workflows, delegations and tools it names out, plus the route's risk tier.

The rule that makes it safe against the clients it watches: **every** candidate is collected
and checked, never the first one found. A request carrying two ``Authorization`` headers, a
workflow header and a different workflow in ``baggage``, or an ``x-forwarded-client-cert``
chain of several certificates is denied when ANY of them is revoked, so a client cannot hide a
revoked identity behind a clean one that the gateway happens to read first. What cannot be read
(a bearer token that is not a JWT with a ``jti``, an MCP body that is not JSON) is reported,
never skipped: the decision refuses it on routes that require that identity.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import unquote

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

IdentityKind = Literal["token", "workload", "workflow", "delegation"]
KINDS: Final[tuple[IdentityKind, ...]] = ("token", "workload", "workflow", "delegation")
MCP_TOOLS_CALL: Final = "tools/call"
_MAX_JWT_BYTES: Final = 16 * 1024
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]+")


class Route(BaseModel):
    """One route: requests whose path matches ``match`` (a regex, from the start of the path)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: str = Field(description="regular expression matched at the start of the path")
    tier: str = Field("default", description="the risk tier: decides a call in doubt")
    tool: Literal["path", "mcp", "none"] = Field(
        "none",
        description="where the tool name comes from: the path (the regex's `tool` group), "
        "an MCP JSON-RPC tools/call body, or nowhere",
    )
    require: tuple[IdentityKind, ...] = Field(
        ("token",), description="identities a request on this route must carry (else 403)"
    )

    @field_validator("match")
    @classmethod
    def _compiles(cls, value: str) -> str:
        re.compile(value)
        return value


class GatewayConfig(BaseModel):
    """Where each identity comes from, and the routes (first match wins).

    Defaults: the token from ``Authorization: Bearer <JWT>`` (its ``jti``), the workload from
    the ``URI=`` fields of ``x-forwarded-client-cert`` (Envoy's XFCC; the SPIFFE id), the
    workflow from ``x-tether-workflow`` and the ``tether.workflow`` member of W3C ``baggage``,
    the delegation from ``x-tether-delegation``; one catch-all route of tier ``default`` that
    requires a token.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_header: str = "authorization"  # noqa: S105  # a header name, no secret
    token_claim: str = "jti"  # noqa: S105  # a claim name, no secret
    workload_header: str = "x-forwarded-client-cert"
    workload_header_format: Literal["xfcc", "plain"] = "xfcc"
    workflow_header: str = "x-tether-workflow"
    baggage_workflow_key: str = "tether.workflow"
    delegation_header: str = "x-tether-delegation"
    original_uri_headers: tuple[str, ...] = Field(
        ("x-original-uri", "x-forwarded-uri"),
        description="headers a forward-auth proxy names the original request's path in "
        "(nginx: set X-Original-URI; Traefik and Caddy send X-Forwarded-Uri)",
    )
    path_prefix: str = Field(
        "", description="stripped from the check request's path (Envoy http_service path_prefix)"
    )
    routes: tuple[Route, ...] = (Route(match="/"),)
    tool_tiers: dict[str, str] = Field(
        default_factory=dict, description="a tool's tier, when stricter than its route's"
    )
    unreadable_tool_tier: str = Field(
        "high", description="the tier of a call whose tool cannot be read (body not JSON)"
    )
    fail_closed_tiers: frozenset[str] | None = Field(
        None, description="tiers that deny when in doubt; unset: TETHER_FAIL_CLOSED_TIERS"
    )
    max_body_bytes: int = Field(1 << 20, gt=0)

    @field_validator(
        "token_header", "workload_header", "workflow_header", "delegation_header", mode="after"
    )
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    def route(self, path: str) -> Route | None:
        """The first route matching ``path``, or None (no route: the gateway denies)."""
        for route in self.routes:
            if re.match(route.match, path):
                return route
        return None


@dataclass(slots=True)
class Facts:
    """What one request is about. Each identity is a set: every value found is checked."""

    path: str
    route: Route | None
    ids: dict[IdentityKind, set[str]] = field(default_factory=lambda: {k: set() for k in KINDS})
    tools: set[str] = field(default_factory=set)
    unreadable: list[str] = field(default_factory=list)  # "token: not a JWT", ...


Headers = Mapping[str, Iterable[str]]
"""Header name (lower case) -> every value it was sent with."""


def request_facts(
    config: GatewayConfig, path: str, headers: Headers, body: bytes | None = None
) -> tuple[Facts, set[str]]:
    """The identities, tools and tiers of one request.

    Args:
        config: the mapping.
        path: the check request's own path (replaced by an original-URI header when present).
        headers: every header value, by lower-case name.
        body: the request body, when the proxy sent it (Envoy ``with_request_body``).

    Returns:
        The facts and the tiers that apply (route, tools; the unreadable-tool tier when a tool
        could not be read).
    """
    original = [v for h in config.original_uri_headers for v in headers.get(h, ())]
    path = original[0] if original else path
    prefix = config.path_prefix.rstrip("/")
    if prefix and (path == prefix or path.startswith((prefix + "/", prefix + "?"))):
        path = path[len(prefix) :] or "/"
    path = normalize_path(path)
    facts = Facts(path=path, route=config.route(path))
    _identities(config, headers, facts)
    route = facts.route
    tiers = {route.tier} if route is not None else set()
    if route is not None and route.tool == "path":
        m = re.match(route.match, path)
        tool = m.groupdict().get("tool") if m else None
        if tool:
            facts.tools.add(unquote(tool))
    elif route is not None and route.tool == "mcp" and body:
        tools = mcp_tools(body, config.max_body_bytes)
        if tools is None:
            facts.unreadable.append("tool: the body is not a JSON-RPC request")
            tiers.add(config.unreadable_tool_tier)
        else:
            facts.tools.update(tools)
    tiers.update(config.tool_tiers[t] for t in facts.tools if t in config.tool_tiers)
    return facts, tiers


def normalize_path(raw: str) -> str:
    """The path routes are matched against, as an upstream resolves it: no query or fragment,
    percent-decoded, ``.``/``..`` segments resolved, repeated slashes collapsed.

    Matching the raw path would let ``/%74ools/x``, ``//tools/x`` or ``/a/../tools/x`` miss the
    route that ``/tools/x`` matches while the upstream serves the same resource.
    """
    path = unquote(raw.split("?", 1)[0].split("#", 1)[0])
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    trailing = "/" if path.endswith("/") and segments else ""
    return "/" + "/".join(segments) + trailing


def _identities(config: GatewayConfig, headers: Headers, facts: Facts) -> None:
    ids = facts.ids
    for value in headers.get(config.token_header, ()):
        _token(config, value, facts)
    for value in headers.get(config.workload_header, ()):
        if config.workload_header_format == "xfcc":
            ids["workload"].update(xfcc_uris(value))
        elif value.strip():
            ids["workload"].add(value.strip())
    for value in headers.get(config.workflow_header, ()):
        ids["workflow"].update(v.strip() for v in value.split(",") if v.strip())
    for value in headers.get("baggage", ()):
        ids["workflow"].update(baggage_values(value, config.baggage_workflow_key))
    for value in headers.get(config.delegation_header, ()):
        ids["delegation"].update(v.strip() for v in value.split(",") if v.strip())


def _token(config: GatewayConfig, value: str, facts: Facts) -> None:
    scheme, _, credential = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        facts.unreadable.append("token: not a bearer token")
        return
    jti = jwt_claim(credential.strip(), config.token_claim)
    if jti is None:
        facts.unreadable.append(f"token: not a JWT with a {config.token_claim} claim")
        return
    facts.ids["token"].add(jti)


def jwt_claim(token: str, claim: str) -> str | None:
    """A string claim of a compact JWT, read WITHOUT verifying it, or None.

    The gateway does not authenticate (the upstream or the proxy verifies the token); it only
    needs the id to look up. A forged token naming someone else's ``jti`` can only get itself
    denied: an unrevoked id never allows what the upstream's own verification refuses.
    """
    if len(token) > _MAX_JWT_BYTES:
        return None
    parts = token.split(".")
    if len(parts) not in (3, 5) or not _B64URL.fullmatch(parts[1]):  # JWS, or JWE (no claims)
        return None
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    value = claims.get(claim) if isinstance(claims, dict) else None
    return value if isinstance(value, str) and value else None


def _split_quoted(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes (XFCC quotes values holding ``,`` ``;`` ``=``)."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def xfcc_uris(value: str) -> set[str]:
    """Every ``URI=`` of an ``x-forwarded-client-cert`` header, across all its elements (one
    per proxy hop: the original client's certificate and every proxy's are all checked)."""
    uris = set()
    for element in _split_quoted(value, ","):
        for pair in _split_quoted(element, ";"):
            name, eq, raw = pair.strip().partition("=")
            if eq and name.strip().lower() == "uri":
                uri = raw.strip().strip('"')
                if uri:
                    uris.add(uri)
    return uris


def baggage_values(value: str, key: str) -> set[str]:
    """The values of ``key`` in a W3C ``baggage`` header (percent-decoded; properties dropped)."""
    found = set()
    for member in value.split(","):
        name, eq, rest = member.partition("=")
        if eq and unquote(name.strip()) == key:
            item = unquote(rest.split(";", 1)[0].strip())
            if item:
                found.add(item)
    return found


def mcp_tools(body: bytes, limit: int) -> set[str] | None:
    """The tool names of an MCP JSON-RPC body (one request or a batch): ``params.name`` of every
    ``tools/call``; an empty set when it calls none; None when it is not JSON-RPC at all."""
    if len(body) > limit:
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    requests = doc if isinstance(doc, list) else [doc]
    tools: set[str] = set()
    for request in requests:
        if not isinstance(request, dict):
            return None
        if request.get("method") != MCP_TOOLS_CALL:
            continue
        params = request.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        if not isinstance(name, str) or not name:
            return None
        tools.add(name)
    return tools
