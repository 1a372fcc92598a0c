"""Running ``tether gateway``: the watcher, the forward-auth listener, the gRPC listener, health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tomllib
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from tether.gateway.ext_authz import add_to_server
from tether.gateway.http import check_app, health_app
from tether.gateway.mapping import GatewayConfig
from tether.gateway.service import Gateway
from tether.observe import gateway_answers, start, watch_feed
from tether.sdk.watcher import Watcher
from tether.settings import Settings

_log = logging.getLogger(__name__)


def load_config(path: Path | None) -> GatewayConfig:
    """The mapping from a TOML file (docs/gateways.md), or the defaults.

    Raises:
        ValueError: the file is not TOML or not a valid mapping (the message says which key).
    """
    if path is None:
        return GatewayConfig()
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    return GatewayConfig.model_validate(data)


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6)."""
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def serve(
    settings: Settings,
    config: GatewayConfig,
    *,
    http: str | None,
    grpc_listen: str | None,
    health: str | None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT)."""
    if config.fail_closed_tiers is None:
        config = config.model_copy(update={"fail_closed_tiers": settings.fail_closed_tiers})
    watcher = Watcher(
        settings, fail_closed_tiers=config.fail_closed_tiers or (), client_id="tether-gateway"
    )
    watcher.start()
    gateway = Gateway(config, watcher.revocations)
    probes, ops = start("gateway", settings)  # /metrics, /healthz, /readyz (docs/monitoring.md)
    watch_feed(probes, watcher)
    gateway_answers(gateway)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    runners: list[web.AppRunner] = []

    def status() -> dict[str, Any]:
        return {
            "ready": watcher.ready.is_set(),
            "fresh": watcher.revocations.is_fresh(),
            "last_heartbeat": watcher.last_heartbeat,
            "last_error": watcher.last_error,
        }

    server: grpc.aio.Server | None = None
    try:
        for listen, app in ((http, check_app(gateway)), (health, health_app(gateway, status))):
            if listen is None:
                continue
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            host, port = split_listen(listen)
            await web.TCPSite(runner, host, port).start()
            runners.append(runner)
            _log.info("tether gateway: listening on %s", listen)
        if grpc_listen is not None:
            server = grpc.aio.server()
            add_to_server(server, gateway)
            server.add_insecure_port(grpc_listen)
            await server.start()
            _log.info("tether gateway: ext_authz gRPC on %s", grpc_listen)
        await stop.wait()
    finally:
        if server is not None:
            await server.stop(1.0)
        for runner in runners:
            await runner.cleanup()
        if ops is not None:
            ops.stop()
        watcher.stop()
