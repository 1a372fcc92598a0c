"""A Redis and an Apache Kafka of a test's own, on free ports, that the test may stop and restart.

Never the shared services: other tests run on 127.0.0.1:9092 and :6379 meanwhile.

Ports are chosen below Linux's ephemeral range (32768-60999): a client that keeps reconnecting
to a stopped server on an ephemeral port can be handed that very port as its own source port
and connect to itself (TCP self-connect), and the restarted server then cannot bind.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES_SCRIPT = ROOT / "scripts" / "services.sh"
PROBE = ROOT / "scripts" / "probe.py"
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port nobody listens on, outside the ephemeral range."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


def _gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped yet counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in {"Z", "X"}


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.1)
    return False


class PrivateRedis:
    """``redis-server`` without persistence, run as a child process of the test."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115  # owned by the process
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ping():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"private redis on {self.port} did not start: {self.tail()}")

    def ping(self) -> bool:
        import redis

        client = redis.Redis(host=HOST, port=self.port, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (no persistence configured, so nothing is saved), then wait for the exit."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def tail(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"


class PrivateKafka:
    """An Apache Kafka broker of the test's own, started by ``scripts/services.sh`` and restarted
    on the same log directory (the script formats a fresh one on every ``up``, so the restart
    relaunches the broker the way the script does, without formatting).

    The script also starts a Redis on the private Redis port; :meth:`down` stops both (by the
    pid files in the private services directory).
    """

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "services"
        self.port = free_port()
        self.controller_port = free_port()
        self.redis_port = free_port()
        self.env = {
            **os.environ,
            "TETHER_SERVICES_DIR": str(self.dir),
            "TETHER_KAFKA_PORT": str(self.port),
            "TETHER_KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "TETHER_REDIS_PORT": str(self.redis_port),
            "TETHER_PROBE_PYTHON": sys.executable,
        }
        self.kafka_dir = self.dir / "kafka"
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None  # a broker this object relaunched

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.redis_port}/0"

    def up(self, timeout: float = 240.0) -> None:
        self._seed_jars()
        self._script("up", timeout)

    def down(self) -> None:
        """Stop the broker and the script's Redis (both by their pid files)."""
        try:
            self.stop_broker()
        finally:
            self._script("down", 120.0)

    def _script(self, command: str, timeout: float) -> None:
        out = subprocess.run(  # our own script, fixed arguments
            [shutil.which("bash") or "/bin/bash", str(SERVICES_SCRIPT), command],
            env=self.env,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if out.returncode != 0:
            raise AssertionError(
                f"services.sh {command} failed ({out.returncode}): "
                f"{out.stderr.decode(errors='replace')[-3000:]}"
            )

    def _seed_jars(self) -> None:
        """Reuse the shared services' resolved jars (hard links) when they match the pom, so the
        script skips Maven; otherwise it resolves them from ~/.m2 itself."""
        shared = ROOT / ".services" / "kafka" / "libs"
        stamp = shared / ".pom.sha256"
        libs = self.kafka_dir / "libs"
        if libs.exists() or not stamp.exists():
            return
        libs.mkdir(parents=True)
        for item in shared.iterdir():
            try:
                os.link(item, libs / item.name)
            except OSError:
                shutil.copy2(item, libs / item.name)

    @property
    def pid(self) -> int | None:
        try:
            return int((self.kafka_dir / "kafka.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop_broker(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        """Stop the broker (SIGTERM: controlled shutdown; SIGKILL: a crash)."""
        pid = self.pid
        if pid is None or _gone(pid):
            return
        os.kill(pid, sig)
        if not _wait_exit(pid, timeout):
            os.kill(pid, signal.SIGKILL)
            _wait_exit(pid, 10)
        if self._proc is not None and self._proc.pid == pid:
            self._proc.wait()  # reap our own child
            self._proc = None

    def start_broker(self, timeout: float = 180.0) -> None:
        """Start the broker again on its existing log directory, as services.sh runs it."""
        heap = os.environ.get("TETHER_KAFKA_HEAP_OPTS", "-Xms256m -Xmx512m").split()
        log = open(self.kafka_dir / "kafka.log", "ab")  # noqa: SIM115  # owned by the process
        proc = subprocess.Popen(  # the java command line of scripts/services.sh
            [
                shutil.which("java") or "java",
                *heap,
                "-server",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.kafka_dir / 'log4j2.properties'}",
                "-cp",
                f"{self.kafka_dir / 'libs'}/*",
                "kafka.Kafka",
                str(self.kafka_dir / "server.properties"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._proc = proc
        (self.kafka_dir / "kafka.pid").write_text(f"{proc.pid}\n")
        self.restarts += 1
        probe = subprocess.run(  # our own probe, fixed arguments
            [sys.executable, str(PROBE), "kafka", self.bootstrap, "--wait", str(int(timeout))],
            capture_output=True,
            timeout=timeout + 30,
            check=False,
        )
        if probe.returncode != 0:
            raise AssertionError(f"private kafka did not come back: {self.tail()}")

    def tail(self) -> str:
        path = self.kafka_dir / "kafka.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"
