"""Child processes of the harness (workers, load generators) and what /proc says about them.

Every child runs in its own session (a Ctrl-C in the terminal reaches only the harness, which
stops its children in order) and with PR_SET_PDEATHSIG, so that even a harness killed with
SIGKILL leaves no worker behind.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson

HERE = Path(__file__).resolve().parent
# Dies with its parent: prctl(PR_SET_PDEATHSIG, SIGKILL) survives the exec into the real program.
_LAUNCH = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class Children:
    """Every process the harness started, stopped in reverse order on the way out."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def spawn(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log: Path | None,
        *,
        pipes: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` (argv[0] an absolute executable) as child ``name``."""
        out: IO[bytes] | int = subprocess.DEVNULL
        if log is not None:
            out = open(log, "ab")  # noqa: SIM115  # closed in stop_all
            self._logs.append(out)
        proc = subprocess.Popen(  # noqa: S603  # our own programs, fixed arguments
            [sys.executable, "-c", _LAUNCH, str(os.getpid()), *argv],
            env=env,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else out,
            stderr=out,
            start_new_session=True,
            cwd=HERE.parent,
        )
        self.procs[name] = proc
        return proc

    def stop(self, name: str, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill9(self, name: str) -> float:
        """SIGKILL (``kill -9``); returns the time it was sent (epoch seconds)."""
        proc = self.procs.pop(name)
        sent = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return sent

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name, timeout=15.0)
        for log in self._logs:
            log.close()
        self._logs.clear()


def worker_env(
    bootstrap: str, redis_url: str, prefix: str, app_id: str, worker_id: str, partitions: int
) -> dict[str, str]:
    """The environment of a ``tether worker`` (or the naive agent) for one pipeline: the
    caller's, with this pipeline's identity on top (other ``TETHER_*`` settings pass through)."""
    env = dict(os.environ)
    env.update(
        {
            "TETHER_KAFKA_BOOTSTRAP": bootstrap,
            "TETHER_REDIS_URL": redis_url,
            "TETHER_TOPIC_PREFIX": prefix,
            "TETHER_APP_ID": app_id,
            "TETHER_WORKER_ID": worker_id,
            "TETHER_PARTITIONS": str(partitions),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("TETHER_WEB_PORT", None)  # faust's web server stays off
    # the worker logs collections that stopped it this long: each step reports them
    env.setdefault("TETHER_GC_LOG_MS", str(GC_LOG_MS))
    return env


GC_LOG_MS = 10
_GC_PAUSE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ tether\.gc gc pause ([\d.]+) ms "
    r"\(generation (\d)"
)


def gc_pauses(log: Path, t_from: float, t_to: float) -> dict[str, Any]:
    """The worker's logged collection pauses (``tether.gc``) between two POSIX times: how many,
    the longest, their sum, and how many were full (generation 2) collections."""
    took: list[tuple[float, int]] = []
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        m = _GC_PAUSE.match(line)
        if m is None:
            continue
        # the log writes local time
        at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()
        if t_from <= at <= t_to:
            took.append((float(m.group(2)), int(m.group(3))))
    return {
        "gc_log_ms": float(os.environ.get("TETHER_GC_LOG_MS", GC_LOG_MS)),
        "gc_pauses": len(took),
        "gc_pauses_full": sum(1 for _, gen in took if gen == 2),
        "gc_pause_max_ms": max((ms for ms, _ in took), default=0.0),
        "gc_pause_total_ms": round(sum(ms for ms, _ in took), 1),
    }


class LoadClient:
    """Drives one benchmarks/loadgen.py child over its stdin/stdout."""

    def __init__(self, children: Children, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = children.spawn(
            name, [sys.executable, str(HERE / "loadgen.py"), *argv], env, log, pipes=True
        )
        self._replies: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.reply(60.0)  # {"ok": "ready"}

    def _read(self) -> None:
        assert self.proc.stdout is not None  # noqa: S101  # spawned with pipes
        for line in self.proc.stdout:
            self._replies.put(orjson.loads(line))
        self._replies.put({"ok": "exit"})

    def send(self, cmd: dict) -> None:
        assert self.proc.stdin is not None  # noqa: S101  # spawned with pipes
        self.proc.stdin.write(orjson.dumps(cmd) + b"\n")
        self.proc.stdin.flush()

    def reply(self, timeout: float | None = None) -> dict:
        got = self._replies.get(timeout=timeout)
        if got.get("ok") == "exit":
            raise RuntimeError(f"load generator {self.name} exited (see its log)")
        return got

    def poll_reply(self) -> dict | None:
        try:
            return self.reply(0)
        except queue.Empty:
            return None

    def quit(self) -> None:
        if self.proc.poll() is None:
            self.send({"cmd": "quit"})


# -- /proc --------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_bytes(pid: int) -> int:
    """Resident set size of a process now."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _stat_fields(pid: str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def child_pids(parent: int) -> list[int]:
    """The live child processes of ``parent`` (a worker's signing process)."""
    return [
        int(pid)
        for pid in os.listdir("/proc")
        if pid.isdigit() and (fields := _stat_fields(pid)) is not None and int(fields[1]) == parent
    ]


def broker_pid() -> int | None:
    """The local Apache Kafka broker (`scripts/services.sh` starts ``kafka.Kafka``), if any: the
    benchmarks share the machine with it, so its CPU is recorded beside the worker's."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"kafka.Kafka" in argv:
            return int(pid)
    return None


def broker_idle_pct(seconds: float = 5.0) -> float | None:
    """The broker's CPU (% of one core) over ``seconds`` before the run, with no benchmark
    client connected. A broker holding many partitions (the topics ``make test`` leaves
    behind, for one) spends a large share of a core on its own housekeeping; on a shared
    2-core machine that CPU is taken from the worker under test."""
    pid = broker_pid()
    if pid is None:
        return None
    began, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return round(100 * (cpu_seconds(pid) - began) / (time.monotonic() - t0), 1)


def machine_busy() -> tuple[float, float]:
    """``(busy, total)`` CPU jiffies of the whole machine so far (all cores)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


class CpuMeter:
    """CPU used by some processes and by the whole machine between two points in time."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._t = time.monotonic()
        self._cpu = {name: self._cpu_of(pid) for name, pid in pids.items()}
        self._machine = machine_busy()

    @staticmethod
    def _cpu_of(pid: int) -> float:
        try:
            return cpu_seconds(pid)
        except OSError:
            return 0.0

    def read(self) -> dict[str, float]:
        """Percent of one core per process, and the machine's busy percent (of all cores)."""
        dt = max(time.monotonic() - self._t, 1e-9)
        out = {
            f"{name}_cpu_pct": round((self._cpu_of(pid) - self._cpu[name]) / dt * 100, 1)
            for name, pid in self.pids.items()
        }
        busy, total = machine_busy()
        out["machine_busy_pct"] = round(
            (busy - self._machine[0]) / max(total - self._machine[1], 1) * 100, 1
        )
        return out
