"""``tether gateway``: a policy enforcement point for existing proxies (forward-auth, ext_authz).

One process, backed by the in-process :class:`~tether.sdk.watcher.Watcher`: nginx
``auth_request``, Traefik ForwardAuth, Caddy ``forward_auth``, Kong and Envoy's HTTP ext_authz
call its HTTP listener; Envoy's gRPC ext_authz calls ``envoy.service.auth.v3.Authorization/Check``.
docs/gateways.md has the configuration of each proxy and of the request mapping.
"""

from tether.gateway.decide import Verdict, decide
from tether.gateway.mapping import GatewayConfig, Route, request_facts

__all__ = ["GatewayConfig", "Route", "Verdict", "decide", "request_facts"]
