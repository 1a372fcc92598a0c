"""The network and disk levers of the issue-24 fault scenarios: a real fault-injecting TCP proxy
(Toxiproxy) in front of a private broker or Redis, and a private broker whose log directory is a
small tmpfs the test can fill and grow.

**Toxiproxy.** ``scripts/toxiproxy.sh`` builds Shopify's Toxiproxy from the Go module proxy once
(cached under ``.services/bin/``); :class:`Toxiproxy` runs it as a child of the test on a free
port and drives its HTTP API (stdlib ``urllib``: no client package). Each :class:`Proxy` has the
three faults of the issue:

- **latency**: a ``latency`` toxic on both directions (every byte waits ``ms``);
- **stall**: a ``timeout`` toxic with ``timeout=0`` on both directions: the connections stay
  open but every byte is dropped until the toxic is removed, new connections included (what a
  black-holed route or a hung middlebox does; no RST, no FIN, so only the clients' own timeouts
  notice);
- **cut**: the proxy disabled: its listener closes and every connection through it is closed
  (refused until it is enabled again, the heal).

**The broker behind the proxy.** A client follows the broker's *advertised* address after the
bootstrap, so a proxy in front of the bootstrap port alone would be bypassed. :class:`ProxiedKafka`
gives the private broker a second listener, ``PROXIED``, whose advertised address is the proxy's:
a client bootstrapped through the proxy is told only the proxy's address and stays on it, while
the test's tap, feeder and admin use the direct ``PLAINTEXT`` listener, untouched by the faults.

**The full disk.** :class:`TmpfsKafka` moves the private broker's log directory onto a tmpfs of
its own (mounted by the test: it runs as root), so :meth:`TmpfsKafka.fill` can leave it a few
KiB and :meth:`TmpfsKafka.grow` can give the space back (``mount -o remount,size=``) without
touching anything else on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from private_services import HOST, ROOT, PrivateKafka, free_port

TOXIPROXY_SCRIPT = ROOT / "scripts" / "toxiproxy.sh"
REVOKED_PREFIX = "tether:revoked:"
STALENESS_S = 10.0  # TETHER_REGISTRY_STALENESS_S, the default: what a gateway trusts Redis by
NOBODY = ("workload", "fault-net-nobody-revoked-this")  # a target no scenario revokes
BOTH = ("upstream", "downstream")


def toxiproxy_binary() -> Path:
    """The Toxiproxy server binary (built by ``scripts/toxiproxy.sh`` on first use)."""
    override = os.environ.get("TETHER_TOXIPROXY")
    if override:
        return Path(override)
    out = subprocess.run(  # our own script, fixed arguments
        [shutil.which("bash") or "/bin/bash", str(TOXIPROXY_SCRIPT)],
        capture_output=True,
        timeout=900,
        check=False,
    )
    if out.returncode != 0:
        raise AssertionError(
            f"scripts/toxiproxy.sh failed ({out.returncode}): "
            f"{out.stderr.decode(errors='replace')[-3000:]}"
        )
    return Path(out.stdout.decode().strip().splitlines()[-1])


class Toxiproxy:
    """A Toxiproxy server of the test's own (a child process on a free port)."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "toxiproxy"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Toxiproxy:
        binary = toxiproxy_binary()
        log = open(self.dir / "toxiproxy.log", "ab")  # noqa: SIM115  # owned by the process
        self.proc = subprocess.Popen(  # the binary our script built, fixed arguments
            [str(binary), "-host", HOST, "-port", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with suppress(OSError):
                self.api("GET", "/proxies")
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"toxiproxy did not start: {self.tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # loopback, our own server
            f"http://{HOST}:{self.port}{path}", data=data, method=method
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            raw = response.read()
        return json.loads(raw) if raw else None

    def proxy(self, name: str, upstream: str, listen_port: int | None = None) -> Proxy:
        """A proxy listening on ``listen_port`` (a free one if None) in front of ``upstream``."""
        port = listen_port or free_port()
        self.api(
            "POST",
            "/proxies",
            {"name": name, "listen": f"{HOST}:{port}", "upstream": upstream, "enabled": True},
        )
        return Proxy(self, name, port)

    def tail(self) -> str:
        path = self.dir / "toxiproxy.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"


class Proxy:
    """One proxy of a :class:`Toxiproxy`, with the faults as context managers."""

    def __init__(self, server: Toxiproxy, name: str, port: int) -> None:
        self.server, self.name, self.port = server, name, port

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def _add(self, kind: str, attributes: dict[str, Any]) -> list[str]:
        names = []
        for stream in BOTH:
            name = f"{kind}_{stream}"
            self.server.api(
                "POST",
                f"/proxies/{self.name}/toxics",
                {
                    "name": name,
                    "type": kind,
                    "stream": stream,
                    "toxicity": 1.0,
                    "attributes": attributes,
                },
            )
            names.append(name)
        return names

    def _remove(self, names: list[str]) -> None:
        for name in names:
            with suppress(urllib.error.HTTPError):  # already gone
                self.server.api("DELETE", f"/proxies/{self.name}/toxics/{name}")

    @contextmanager
    def latency(self, ms: int, jitter_ms: int = 0) -> Iterator[None]:
        """Every byte in both directions waits ``ms`` (± ``jitter_ms``)."""
        names = self._add("latency", {"latency": ms, "jitter": jitter_ms})
        try:
            yield
        finally:
            self._remove(names)

    @contextmanager
    def stall(self) -> Iterator[None]:
        """Connections stay open and every byte is dropped (``timeout`` toxic, ``timeout=0``)."""
        names = self._add("timeout", {"timeout": 0})
        try:
            yield
        finally:
            self._remove(names)

    @contextmanager
    def cut(self) -> Iterator[None]:
        """The proxy disabled: its connections closed, new ones refused; enabled on the way out."""
        self.server.api("POST", f"/proxies/{self.name}", {"enabled": False})
        try:
            yield
        finally:
            self.server.api("POST", f"/proxies/{self.name}", {"enabled": True})

    @contextmanager
    def fault(self, kind: str, latency_ms: int = 500) -> Iterator[None]:
        """``latency``, ``stall`` or ``cut``."""
        lever = {
            "latency": lambda: self.latency(latency_ms),
            "stall": self.stall,
            "cut": self.cut,
        }[kind]
        with lever():
            yield


# -- the private broker with a proxied listener ----------------------------------------------


def _set_properties(path: Path, values: dict[str, str]) -> None:
    """Replace (or append) ``key=value`` lines of a properties file."""
    lines = path.read_text().splitlines()
    seen: set[str] = set()
    out = []
    for line in lines:
        key = line.split("=", 1)[0].strip()
        if key in values and not line.lstrip().startswith("#"):
            out.append(f"{key}={values[key]}")
            seen.add(key)
        else:
            out.append(line)
    out += [f"{k}={v}" for k, v in values.items() if k not in seen]
    path.write_text("\n".join(out) + "\n")


class ProxiedKafka(PrivateKafka):
    """A private broker with a second listener (``PROXIED``) advertised at a proxy's address.

    ``bootstrap`` is the direct listener (the test's own clients); :attr:`proxied_bootstrap`
    goes through the proxy (the worker's). The proxy must be created on :attr:`proxy_port`
    with :attr:`internal` as its upstream (:meth:`attach`).
    """

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.internal_port = free_port()  # the PROXIED listener itself
        self.proxy_port = free_port()  # where the proxy listens, and what the listener advertises
        self.proxy: Proxy | None = None

    @property
    def internal(self) -> str:
        return f"{HOST}:{self.internal_port}"

    @property
    def proxied_bootstrap(self) -> str:
        return f"{HOST}:{self.proxy_port}"

    def up(self, timeout: float = 240.0) -> None:
        """``services.sh up``, then the broker restarted with the second listener."""
        super().up(timeout)
        self.stop_broker()
        _set_properties(
            self.kafka_dir / "server.properties",
            {
                "listeners": f"PLAINTEXT://{HOST}:{self.port},PROXIED://{self.internal},"
                f"CONTROLLER://{HOST}:{self.controller_port}",
                "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port},"
                f"PROXIED://{self.proxied_bootstrap},CONTROLLER://{HOST}:{self.controller_port}",
                "listener.security.protocol.map": (
                    "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,PROXIED:PLAINTEXT"
                ),
            },
        )
        self.start_broker()

    def attach(self, toxiproxy: Toxiproxy) -> Proxy:
        self.proxy = toxiproxy.proxy("kafka", self.internal, self.proxy_port)
        return self.proxy


# -- the private broker on a small tmpfs -----------------------------------------------------


class TmpfsKafka(PrivateKafka):
    """A private broker whose log directory is a tmpfs of ``size_mb`` the test mounted."""

    def __init__(self, workdir: Path, size_mb: int = 256) -> None:
        super().__init__(workdir)
        self.size_mb = size_mb
        self.data = self.kafka_dir / "data"
        self.filler = self.data / "zz-disk-filler"
        self.mounted = False

    def up(self, timeout: float = 240.0) -> None:
        """``services.sh up`` (formats the log directory), then the broker restarted with its
        log directory moved onto the tmpfs (same files, same directory path)."""
        super().up(timeout)
        self.stop_broker()
        aside = self.kafka_dir / "data.formatted"
        self.data.rename(aside)
        self.data.mkdir()
        self._mount(f"size={self.size_mb}m")
        self.mounted = True
        subprocess.run(["cp", "-a", f"{aside}/.", str(self.data)], check=True)  # noqa: S607
        shutil.rmtree(aside)
        self.start_broker()

    def _mount(self, options: str, *, remount: bool = False) -> None:
        args = ["mount", "-t", "tmpfs", "-o", f"{'remount,' if remount else ''}{options}"]
        out = subprocess.run(  # fixed arguments
            [shutil.which("mount") or "/bin/mount", *args[1:], "tmpfs", str(self.data)],
            capture_output=True,
            check=False,
        )
        if out.returncode != 0:
            raise AssertionError(f"mount {options} failed: {out.stderr.decode(errors='replace')}")

    def free_bytes(self) -> int:
        st = os.statvfs(self.data)
        return st.f_bavail * st.f_frsize

    def used_bytes(self) -> int:
        st = os.statvfs(self.data)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def fill(self, leave_bytes: int = 64 * 1024) -> int:
        """Write a filler file until ``leave_bytes`` are left; the bytes written."""
        size = max(0, self.free_bytes() - leave_bytes)
        with open(self.filler, "wb") as f:
            chunk = b"\0" * (1 << 20)
            written = 0
            while written < size:
                n = min(len(chunk), size - written)
                try:
                    f.write(chunk[:n])
                except OSError:
                    break
                written += n
        return written

    def release(self) -> None:
        """Free the space: remove the filler file."""
        with suppress(FileNotFoundError):
            self.filler.unlink()

    def grow(self, size_mb: int) -> None:
        """Give the tmpfs more room (a live remount, as an operator growing a volume would)."""
        self._mount(f"size={size_mb}m", remount=True)
        self.size_mb = size_mb

    def down(self) -> None:
        try:
            super().down()
        finally:
            if self.mounted:
                subprocess.run(  # fixed arguments
                    [shutil.which("umount") or "/bin/umount", "-l", str(self.data)],
                    capture_output=True,
                    check=False,
                )
                self.mounted = False


# -- the registry as a gateway sees it ---------------------------------------------------


def epoch(stamp: str) -> float:
    """An RFC 3339 timestamp of the feed as epoch seconds."""
    return datetime.fromisoformat(stamp).timestamp()


def live_targets(revocations: list[dict[str, Any]], margin_s: float) -> set[tuple[str, str]]:
    """The targets whose revocation is still in force ``margin_s`` from now."""
    horizon = time.time() + margin_s
    until: dict[tuple[str, str], float] = {}
    for r in revocations:
        target = (r["target"]["kind"], r["target"]["id"])
        until[target] = max(until.get(target, 0.0), epoch(r["not_after"]))
    return {t for t, end in until.items() if end > horizon}


def held_targets(url: str) -> set[tuple[str, str]]:
    """The (kind, id) of every revocation key Redis at ``url`` holds (read directly)."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = (k.decode() for k in client.scan_iter(match=f"{REVOKED_PREFIX}*", count=1000))
        return {tuple(k[len(REVOKED_PREFIX) :].split(":", 1)) for k in keys}  # type: ignore[misc]
    finally:
        client.close()
