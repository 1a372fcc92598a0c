#!/usr/bin/env python3
"""Readiness probes for the local Kafka and Redis, standard library only (no venv needed).

    probe.py kafka 127.0.0.1:9092 [--wait SECONDS]   broker answers a Metadata request and lists itself
    probe.py redis 127.0.0.1:6379 [--wait SECONDS]   PING -> PONG; prints the server version
    probe.py port  127.0.0.1:9092                    exit 0 if something accepts TCP connections there

Exit status 0 when ready, 1 otherwise (after --wait seconds of retrying). Used by
scripts/services.sh; it speaks the wire protocols directly so that `make services` works before
the Python virtualenv exists.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time
from typing import BinaryIO

_API_METADATA = 3
_API_VERSIONS = 18
# Non-flexible Metadata versions this probe can encode. Kafka 4.x serves v4..v13
# (KIP-896 removed v0..v3); v9+ use the flexible (compact) encoding.
_METADATA_MIN, _METADATA_MAX = 4, 8


class ProbeError(Exception):
    """The service is not (yet) answering as expected."""


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host or "127.0.0.1", int(port)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProbeError("connection closed by peer")
        buf += chunk
    return bytes(buf)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        s = self.data[self.pos : self.pos + n].decode()
        self.pos += n
        return s


def _kafka_call(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> _Reader:
    client_id = b"tether-probe"
    header = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _recv_exact(sock, 4))[0]
    reader = _Reader(_recv_exact(sock, size))
    if reader.take(">i") != corr:
        raise ProbeError("correlation id mismatch")
    return reader


def probe_kafka(addr: str, timeout: float) -> str:
    """Ask the broker for its API versions, then for cluster metadata; return a summary."""
    host, port = _split(addr)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        # ApiVersions v0: every Kafka version answers it.
        r = _kafka_call(sock, _API_VERSIONS, 0, 1, b"")
        error = r.take(">h")
        if error:
            raise ProbeError(f"ApiVersions error code {error}")
        ranges = {}
        for _ in range(r.take(">i")):
            key, lo, hi = r.take(">h"), r.take(">h"), r.take(">h")
            ranges[key] = (lo, hi)
        lo, hi = ranges.get(_API_METADATA, (0, -1))
        version = max(lo, _METADATA_MIN)
        if version > min(hi, _METADATA_MAX):
            return f"api_versions ok (metadata v{lo}..v{hi} not probed)"
        # Metadata request: empty topic list (= no topics), no auto-creation.
        body = struct.pack(">ib", 0, 0)
        if version >= 8:
            body += struct.pack(">bb", 0, 0)  # include cluster/topic authorized operations
        r = _kafka_call(sock, _API_METADATA, version, 2, body)
        r.take(">i")  # throttle_time_ms
        brokers = []
        for _ in range(r.take(">i")):
            node_id, b_host, b_port = r.take(">i"), r.string(), r.take(">i")
            r.string()  # rack
            brokers.append(f"{node_id}@{b_host}:{b_port}")
        cluster_id = r.string()
        if not brokers:
            raise ProbeError("metadata lists no live broker yet")
        return f"cluster_id={cluster_id} brokers={','.join(brokers)}"


def _redis_command(sock: socket.socket, reader: BinaryIO, *args: str) -> bytes:
    out = f"*{len(args)}\r\n".encode()
    for arg in args:
        raw = arg.encode()
        out += b"$%d\r\n%s\r\n" % (len(raw), raw)
    sock.sendall(out)
    line = reader.readline()
    if line.startswith(b"$"):
        n = int(line[1:].strip())
        return reader.read(n + 2)[:-2] if n >= 0 else b""
    return line.rstrip(b"\r\n")


def probe_redis(addr: str, timeout: float) -> str:
    """PING the server and return its version."""
    host, port = _split(addr)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        reader = sock.makefile("rb")
        pong = _redis_command(sock, reader, "PING")
        if pong != b"+PONG":
            raise ProbeError(f"PING answered {pong!r}")
        info = _redis_command(sock, reader, "INFO", "server").decode(errors="replace")
    for line in info.splitlines():
        if line.startswith("redis_version:"):
            return line.split(":", 1)[1].strip()
    raise ProbeError("INFO server has no redis_version")


def probe_port(addr: str, timeout: float) -> str:
    host, port = _split(addr)
    with socket.create_connection((host, port), timeout=timeout):
        return "open"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("kind", choices=["kafka", "redis", "port"])
    parser.add_argument("addr", help="HOST:PORT")
    parser.add_argument("--wait", type=float, default=0.0, help="keep retrying this many seconds")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    probe = {"kafka": probe_kafka, "redis": probe_redis, "port": probe_port}[args.kind]
    deadline = time.monotonic() + args.wait
    last: Exception | None = None
    while True:
        try:
            result = probe(args.addr, timeout=5.0)
        except (OSError, ProbeError, struct.error, ValueError) as exc:
            last = exc
        else:
            if not args.quiet:
                print(result)
            return 0
        if time.monotonic() >= deadline:
            if not args.quiet:
                print(f"{args.kind} at {args.addr} not ready: {last}", file=sys.stderr)
            return 1
        time.sleep(0.25)


if __name__ == "__main__":
    sys.exit(main())
