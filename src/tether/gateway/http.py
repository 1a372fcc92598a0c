"""Forward-auth over HTTP (aiohttp): 2xx allows, 403 denies, 503 cannot decide.

What nginx ``auth_request``, Traefik ForwardAuth, Caddy ``forward_auth``, Kong and Envoy's HTTP
ext_authz call. Every path and method is a check: nothing else is served on this listener, so a
client whose path reaches the gateway unchanged (Envoy's ``path_prefix`` + original path) can
never land on a page that answers 200 for another reason. Health is on its own listener.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from tether.gateway.service import Gateway

DECISION_HEADER: Final = "x-tether-decision"
REASON_HEADER: Final = "x-tether-reason"


def _headers(request: web.Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        out.setdefault(name.lower(), []).append(value)
    return out


def check_app(gateway: Gateway) -> web.Application:
    """The forward-auth application: one catch-all check handler."""

    async def check(request: web.Request) -> web.Response:
        body = None
        if request.can_read_body:  # a prefix past the limit reads as "unreadable", never as none
            body = await request.content.read(gateway.config.max_body_bytes + 1)
        verdict = gateway.check(request.path_qs, _headers(request), body, trust_uri_headers=True)
        headers = {DECISION_HEADER: verdict.outcome, REASON_HEADER: verdict.reason}
        if verdict.degraded:
            headers["x-tether-degraded"] = "stale"
        text = "" if verdict.outcome == "allow" else f"tether: {verdict.reason}\n"
        return web.Response(status=verdict.status, text=text, headers=headers)

    app = web.Application(client_max_size=gateway.config.max_body_bytes + 1)
    app.router.add_route("*", "/{tail:.*}", check)
    return app


def health_app(gateway: Gateway, status: Callable[[], dict[str, Any]]) -> web.Application:
    """``GET /healthz``: 200 when the feed is bootstrapped and fresh, else 503; JSON details."""

    async def health(_request: web.Request) -> web.Response:
        body = status()
        body["verdicts"] = dict(gateway.stats.verdicts)
        return web.json_response(body, status=200 if body.get("fresh") else 503)

    app = web.Application()
    app.router.add_get("/healthz", health)
    return app
