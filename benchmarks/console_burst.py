"""Console under a burst: findings/s into the topic, how far behind the live feed falls.

Starts `tether console` as its own process on fresh topics, connects one live-feed client (SSE),
produces findings at a fixed rate for a while, and prints: how many the browser-side client
received, the feed's lag (receive time minus produce time, per finding: p50, p99, max, and over
the last second of the burst), and how fast the console answered /api/health during the burst
(its page stays responsive). Needs Kafka (TETHER_KAFKA_BOOTSTRAP).

    python benchmarks/console_burst.py --rate 1000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import aiohttp
import orjson
from confluent_kafka import Producer

from tether.adapters.kafka_admin import create_topics
from tether.adapters.kafka_config import producer_config
from tether.settings import Settings

TOKEN = "bench-console-credential-0123456789"  # noqa: S105  # a throwaway local console


def finding(i: int, sent: float) -> bytes:
    t = datetime.fromtimestamp(sent, UTC).isoformat()
    return orjson.dumps(
        {
            "kind": "finding",
            "finding_id": f"f-{i:08d}",
            "code": "tool_not_granted",
            "severity": "medium",
            "workflow_id": f"wf-{i % 500}",
            "workload_id": "spiffe://acme.example/agent/bench",
            "summary": f"sent={sent!r}",
            "evidence": [f"e{i}"],
            "event_time": t,
            "detected_at": t,
            "response": ["revoke_token"],
            "owasp": ["ASI02"],
        }
    )


async def feed_client(base: str, got: list[tuple[float, float]], ready: asyncio.Event) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with (
        aiohttp.ClientSession(timeout=timeout) as s,
        s.get(f"{base}/events", headers=headers) as r,
    ):
        ready.set()
        async for line in r.content:
            if line.startswith(b"data: "):
                doc = orjson.loads(line[6:])
                sent = float(doc["summary"].split("=", 1)[1])
                got.append((sent, time.time()))


async def health_probe(base: str, out: list[float], stop: asyncio.Event) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as s:
        while not stop.is_set():
            t0 = time.perf_counter()
            async with s.get(f"{base}/api/health", headers=headers) as r:
                await r.read()
            out.append(time.perf_counter() - t0)
            await asyncio.sleep(0.25)


def produce(settings: Settings, rate: float, seconds: float) -> int:
    p = Producer(producer_config(settings, client_id="bench-console"))
    topic = settings.topic("findings")
    n = 0
    start = time.time()
    total = int(rate * seconds)
    while n < total:
        due = start + n / rate
        now = time.time()
        if due > now:
            time.sleep(due - now)
        p.produce(topic, finding(n, time.time()), f"wf-{n % 500}".encode())
        n += 1
        if n % 200 == 0:
            p.poll(0)
    p.flush(30)
    return n


async def main_async(args: argparse.Namespace) -> None:
    prefix = f"bench-console-{uuid.uuid4().hex[:8]}."
    settings = Settings(topic_prefix=prefix, partitions=args.partitions)
    create_topics(settings)
    env = {**os.environ, "TETHER_TOPIC_PREFIX": prefix, "TETHER_CONSOLE_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether.cli", "console", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
    )
    line = proc.stdout.readline() if proc.stdout is not None else b""
    m = re.search(rb"http://127\.0\.0\.1:(\d+)/", line)
    if m is None:
        raise SystemExit(f"console did not start: {line!r}")
    base = f"http://127.0.0.1:{int(m.group(1))}"
    got: list[tuple[float, float]] = []
    health: list[float] = []
    ready, stop = asyncio.Event(), asyncio.Event()
    client = asyncio.create_task(feed_client(base, got, ready))
    await ready.wait()
    probe = asyncio.create_task(health_probe(base, health, stop))
    t0 = time.time()
    sent = await asyncio.to_thread(produce, settings, args.rate, args.seconds)
    produced_s = time.time() - t0
    deadline = time.time() + 30
    while len(got) < sent and time.time() < deadline:
        await asyncio.sleep(0.1)
    drained_s = time.time() - t0
    stop.set()
    await probe
    client.cancel()
    proc.terminate()
    proc.wait(10)
    lags = sorted(r - s for s, r in got)
    last = [r - s for s, r in got if s >= t0 + produced_s - 1.0]

    def pct(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    print(
        f"console burst: {sent} findings produced in {produced_s:.1f} s ({sent / produced_s:.0f}/s)"
    )
    print(f"  received by the live feed: {len(got)} of {sent}, all by {drained_s:.1f} s")
    print(
        f"  feed lag (receive - produce): p50 {pct(lags, 0.5) * 1000:.0f} ms, "
        f"p99 {pct(lags, 0.99) * 1000:.0f} ms, max {lags[-1] * 1000 if lags else float('nan'):.0f} ms; "
        f"last second of the burst: max {max(last) * 1000 if last else float('nan'):.0f} ms"
    )
    if health:
        print(
            f"  /api/health during the burst: {len(health)} requests, median "
            f"{statistics.median(health) * 1000:.1f} ms, max {max(health) * 1000:.1f} ms"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1000.0, help="findings per second")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--partitions", type=int, default=3)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
