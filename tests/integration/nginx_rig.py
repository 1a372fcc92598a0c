"""A real nginx with ``auth_request`` in front of a test upstream, and ``tether gateway`` as its
auth service: for the gateway's integration test and benchmarks/gateway_latency.py.

One nginx process, three servers on loopback:

* ``guarded``: ``auth_request`` to ``tether gateway``, then the upstream (what is tested);
* ``plain``: the same proxy to the upstream without ``auth_request`` (the benchmark's baseline);
* ``upstream``: answers 200 itself (nginx's ``return``: the cheapest upstream there is).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

NGINX_CONF = """
{user}
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;

    upstream tether_gateway {{ server 127.0.0.1:{gateway}; keepalive 64; }}
    upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}

    server {{
        listen 127.0.0.1:{guarded};
        location / {{
            auth_request /_tether_auth;
            auth_request_set $tether_reason $upstream_http_x_tether_reason;
            add_header X-Tether-Reason $tether_reason always;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://app;
        }}
        location = /_tether_auth {{
            internal;
            proxy_pass http://tether_gateway;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
    server {{
        listen 127.0.0.1:{plain};
        location / {{
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://app;
        }}
    }}
    server {{
        listen 127.0.0.1:{upstream};
        location / {{ return 200 "upstream\\n"; }}
    }}
}}
"""


def nginx_binary() -> str | None:
    """Debian's nginx (scripts/services.sh installs it), or None."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Rig:
    """nginx + tether gateway, started by :meth:`start`, stopped by :meth:`stop`."""

    workdir: Path
    env: dict[str, str]  # the gateway's environment: the pipeline's TETHER_* settings
    gateway_args: list[str] = field(default_factory=list)
    guarded: int = field(default_factory=free_port)
    plain: int = field(default_factory=free_port)
    upstream: int = field(default_factory=free_port)
    gateway: int = field(default_factory=free_port)
    health: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> Rig:
        nginx = nginx_binary()
        if nginx is None:
            raise RuntimeError("nginx is not installed (scripts/services.sh up installs it)")
        ngx = self.workdir / "nginx"
        (ngx / "tmp").mkdir(parents=True, exist_ok=True)
        conf = ngx / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                # as root, nginx's workers would run as nobody, who cannot enter pytest's tmp
                user="user root;" if os.geteuid() == 0 else "",
                dir=ngx,
                gateway=self.gateway,
                upstream=self.upstream,
                guarded=self.guarded,
                plain=self.plain,
            )
        )
        gw_log = open(self.workdir / "gateway.log", "ab")  # noqa: SIM115  # owned by the process
        self.procs["gateway"] = subprocess.Popen(  # our own CLI, fixed arguments
            [
                sys.executable,
                "-m",
                "tether.cli",
                "gateway",
                "--http",
                f"127.0.0.1:{self.gateway}",
                "--health",
                f"127.0.0.1:{self.health}",
                *self.gateway_args,
            ],
            env=self.env,
            stdout=gw_log,
            stderr=subprocess.STDOUT,
        )
        ngx_log = open(ngx / "stderr.log", "ab")  # noqa: SIM115
        self.procs["nginx"] = subprocess.Popen(  # Debian's nginx, our config
            [nginx, "-p", str(ngx), "-c", str(conf)], stdout=ngx_log, stderr=subprocess.STDOUT
        )
        for port, name in ((self.gateway, "gateway"), (self.guarded, "nginx")):
            wait_port(port, proc=self.procs[name])
        return self

    def log(self, name: str = "gateway") -> str:
        path = self.workdir / ("gateway.log" if name == "gateway" else "nginx/error.log")
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"

    def stop(self) -> None:
        for name in ("nginx", "gateway"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
