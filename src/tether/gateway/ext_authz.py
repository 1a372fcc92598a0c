"""Envoy ext_authz over gRPC: ``envoy.service.auth.v3.Authorization/Check``.

Built on the published Envoy protos as compiled by ``xds-protos``. The verdict is the same as
the HTTP front end's; the path comes from ``attributes.request.http.path`` (never from a header,
since Envoy's gRPC check carries every client header), and the body from ``raw_body`` or
``body`` when the filter has ``with_request_body``. Allowed: ``OK`` + ``ok_response``; denied:
``PERMISSION_DENIED`` + ``denied_response`` 403; cannot decide: ``UNAVAILABLE`` +
``denied_response`` 503 (Envoy denies either way; the status tells operators which it was).
"""

from __future__ import annotations

from typing import Any, Final

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from tether.gateway.decide import Verdict
from tether.gateway.http import DECISION_HEADER, REASON_HEADER
from tether.gateway.service import Gateway

_CODES: Final = {
    "allow": code_pb2.OK,
    "deny": code_pb2.PERMISSION_DENIED,
    "unavailable": code_pb2.UNAVAILABLE,
}


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value))


def check_headers(http: attribute_context_pb2.AttributeContext.HttpRequest) -> dict[str, list[str]]:
    """Every header of the checked request: ``headers`` (Envoy joins repeats with ``,``) and
    ``header_map`` (raw values, one entry per header line)."""
    out: dict[str, list[str]] = {}
    for name, value in http.headers.items():
        out.setdefault(name.lower(), []).append(value)
    for entry in http.header_map.headers:
        value = entry.value or entry.raw_value.decode("utf-8", "replace")
        out.setdefault(entry.key.lower(), []).append(value)
    return out


def response(verdict: Verdict) -> external_auth_pb2.CheckResponse:
    """The CheckResponse of a verdict."""
    headers = [_header(DECISION_HEADER, verdict.outcome), _header(REASON_HEADER, verdict.reason)]
    status = status_pb2.Status(code=_CODES[verdict.outcome], message=verdict.reason)
    if verdict.outcome == "allow":
        return external_auth_pb2.CheckResponse(
            status=status, ok_response=external_auth_pb2.OkHttpResponse(headers=headers)
        )
    return external_auth_pb2.CheckResponse(
        status=status,
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=verdict.status),
            headers=headers,
            body=f"tether: {verdict.reason}\n",
        ),
    )


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]  # generated, untyped
    """The ext_authz servicer: one :class:`~tether.gateway.service.Gateway` check per call."""

    def __init__(self, gateway: Gateway) -> None:
        """Answer from ``gateway``."""
        self._gateway = gateway

    async def Check(  # the proto's method name
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> external_auth_pb2.CheckResponse:
        """Decide one request Envoy is holding."""
        http = request.attributes.request.http
        body = http.raw_body or (http.body.encode("utf-8") if http.body else None)
        verdict = self._gateway.check(
            http.path or "/", check_headers(http), body, trust_uri_headers=False
        )
        return response(verdict)


def add_to_server(server: grpc.aio.Server, gateway: Gateway) -> None:
    """Register the Authorization service on a grpc.aio server."""
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        AuthorizationService(gateway), server
    )
