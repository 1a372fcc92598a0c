"""The operations endpoint of a long-running process: ``/metrics``, ``/healthz``, ``/readyz``.

One small stdlib HTTP server on a daemon thread, apart from the process's own work: a scrape or
a probe never waits for the event loop, and the event loop never serves HTTP (faust's own web
server stays off: it binds every interface once given a port). It binds loopback unless
``TETHER_METRICS_ADDR`` says otherwise; each process has its own default port (``PORTS``) so
that several run side by side on one host.

``/healthz`` answers whether the process is alive: 200 while its ``beat`` was called recently
(the worker beats from an event-loop timer, so a stalled loop fails the probe), 503 otherwise.
``/readyz`` answers whether it should receive work: 200 when every named check passes, 503
with the failing ones otherwise; the body is JSON either way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tether.metrics import READY, registry

_log = logging.getLogger("tether.health")

PORTS: Final = {
    "worker": 9464,
    "gateway": 9465,
    "watch": 9466,
    "ssf": 9467,
    "alerts": 9468,
    "console": 9469,
    "ingest": 9470,
    "ocsf-forward": 9471,
    "registry-sync": 9472,
}
"""Each long-running process's default port on 127.0.0.1 (docs/monitoring.md)."""

OFF: Final = frozenset({"off", "none", "0", "false", "no", ""})
"""Values of ``TETHER_METRICS_ADDR`` that disable the endpoint."""

Check = Callable[[], bool]


class Health:
    """A process's liveness and its named readiness checks."""

    def __init__(self, process: str, *, alive_s: float | None = None) -> None:
        self.process = process
        self.alive_s = alive_s  # None: alive while the process runs (no beat expected)
        self.checks: dict[str, Check] = {}
        self._beat = time.monotonic()

    def check(self, name: str, fn: Check) -> None:
        """Add a readiness check: ``fn`` answers whether ``name`` holds now."""
        self.checks[name] = fn

    def beat(self) -> None:
        """The process's work loop is turning (call it from that loop)."""
        self._beat = time.monotonic()

    def alive(self) -> tuple[bool, dict[str, Any]]:
        """Whether the process is alive, and why."""
        since = time.monotonic() - self._beat
        ok = self.alive_s is None or since <= self.alive_s
        return ok, {"process": self.process, "alive": ok, "last_beat_s": round(since, 3)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Whether every check passes now; a check that raises fails."""
        results: dict[str, bool] = {}
        for name, fn in self.checks.items():
            try:
                results[name] = bool(fn())
            except Exception:  # a check in flux is not ready
                results[name] = False
            READY.labels(name).set(1 if results[name] else 0)
        ok = all(results.values())
        return ok, {"process": self.process, "ready": ok, "checks": results}


def _handler(health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "tether"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                health.ready()  # refreshes tether_ready
                self._send(200, generate_latest(registry()), CONTENT_TYPE_LATEST)
            elif path in {"/healthz", "/livez"}:
                self._json(*health.alive())
            elif path == "/readyz":
                self._json(*health.ready())
            else:
                self._send(404, b"not found\n", "text/plain")

        def _json(self, ok: bool, body: dict[str, Any]) -> None:
            self._send(200 if ok else 503, orjson.dumps(body) + b"\n", "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # stdlib's signature
            return  # probes every few seconds: not worth a log line

    return Handler


def parse_addr(value: str, process: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (or ``:PORT``, ``PORT``) of the endpoint; None when ``value`` disables it."""
    text = value.strip()
    if text.lower() in OFF:
        return None
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    return host.strip("[]") or "127.0.0.1", int(port)


def address(setting: str | None, process: str) -> tuple[str, int] | None:
    """Where ``process`` serves its endpoint: ``setting`` (``TETHER_METRICS_ADDR``) if given,
    else 127.0.0.1 and the process's port in ``PORTS``; None: disabled."""
    if setting is None:
        return "127.0.0.1", PORTS[process]
    return parse_addr(setting, process)


class OpsServer:
    """The running endpoint; ``port`` is the bound port (useful with port 0)."""

    def __init__(self, server: ThreadingHTTPServer, health: Health) -> None:
        self.server = server
        self.health = health
        host, port = server.server_address[:2]
        self.host = host.decode() if isinstance(host, bytes) else str(host)
        self.port = int(port)
        self._thread = threading.Thread(target=server.serve_forever, name="tether-ops", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The endpoint's base URL."""
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()


def serve(setting: str | None, health: Health) -> OpsServer | None:
    """Start the endpoint of ``health.process`` where ``setting`` says; None if it is disabled
    or its address cannot be bound (a warning: the process runs on without it, as a second
    process on a host whose default port is taken should)."""
    try:
        where = address(setting, health.process)
    except ValueError:
        _log.warning("TETHER_METRICS_ADDR=%r is not HOST:PORT: no metrics endpoint", setting)
        return None
    if where is None:
        return None
    try:
        server = ThreadingHTTPServer(where, _handler(health))
    except OSError as exc:
        _log.warning(
            "metrics endpoint %s:%d not started (%s): set TETHER_METRICS_ADDR", *where, exc
        )
        return None
    server.daemon_threads = True
    ops = OpsServer(server, health)
    _log.info("%s: metrics and health on %s/metrics, /healthz, /readyz", health.process, ops.url)
    return ops
