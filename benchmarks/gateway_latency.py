"""tether gateway behind nginx: the latency it adds, and intent -> nginx's first 403.

Run: `python benchmarks/gateway_latency.py [--rate 2000] [--seconds 10] [--probes 20]` (needs
`make services`, or TETHER_KAFKA_BOOTSTRAP and TETHER_REDIS_URL, and Debian's nginx). It starts
a `tether worker` on fresh topics, `tether gateway` following its revocations, and one nginx
(tests/integration/nginx_rig.py) with two servers in front of the same upstream: `plain`
(proxy only) and `guarded` (auth_request to the gateway first). Then

1. **added latency**: an open-loop load generator sends `--rate` requests/s for `--seconds`,
   alternating plain and guarded requests (so both see the same machine at the same moment;
   each at half the rate). Latency counts from each request's SCHEDULED send time, so a stall
   is not hidden by the generator waiting (no coordinated omission). Prints p50/p90/p99/max of
   both and the p99 the gateway adds.
2. **intent -> first 403**: `--probes` times, a fresh token calls through nginx (allowed), the
   agent emits a scope-escalating intent, and nginx is polled every 2 ms until it answers 403;
   prints p50/p99 of the time from producing the intent to that 403: first idle, then (with
   `--background RATE`, e.g. 5600 = 50 % of P2's 11,200/s in docs/benchmarks.md) while another
   process offers the fleet mix (tether.demo.fleet) to the same worker at RATE events/s.

Results also go to benchmarks/out/gateway_latency.json. Figures, not assertions: the machine
(and what else runs on it) decides them; the load generator shares the cores it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import multiprocessing
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "integration"), str(ROOT / "tests")]

import aiohttp  # noqa: E402
import orjson  # noqa: E402
from nginx_rig import Rig  # noqa: E402
from pipeline import Pipeline  # noqa: E402

from tether.sdk.emitter import Emitter  # noqa: E402
from tether.settings import Settings  # noqa: E402

ORG = "spiffe://acme.example/agent/"
STS = "https://sts.acme.example"


def bearer(jti: str) -> str:
    def b64(d: bytes) -> str:
        return base64.urlsafe_b64encode(d).rstrip(b"=").decode()

    return f"Bearer {b64(b'{}')}.{b64(orjson.dumps({'jti': jti, 'iss': STS}))}.c2ln"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": pct(values, 0.50),
        "p90_ms": pct(values, 0.90),
        "p99_ms": pct(values, 0.99),
        "max_ms": max(values, default=float("nan")),
    }


async def load(rig: Rig, rate: float, seconds: float) -> dict[str, list[float]]:
    """Open loop: request i is due at start + i/rate; even ones plain, odd ones guarded."""
    lat: dict[str, list[float]] = {"plain": [], "guarded": []}
    errors: dict[str, int] = {"plain": 0, "guarded": 0}
    headers = {"Authorization": bearer("jti-load")}
    conn = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=conn) as http:

        async def one(kind: str, port: int, due: float) -> None:
            try:
                async with http.get(f"http://127.0.0.1:{port}/api/x", headers=headers) as r:
                    await r.read()
                    ok = r.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                lat[kind].append((time.perf_counter() - due) * 1000)
            else:
                errors[kind] += 1

        total = int(rate * seconds)
        start = time.perf_counter() + 0.2
        tasks = []
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            kind, port = ("plain", rig.plain) if i % 2 == 0 else ("guarded", rig.guarded)
            tasks.append(asyncio.create_task(one(kind, port, due)))
        await asyncio.gather(*tasks)
        achieved = total / (time.perf_counter() - start)
    print(f"offered {rate:.0f} req/s, sent at {achieved:.0f} req/s; errors {errors}")
    return lat


def background(bootstrap: str, topic: str, rate: float, seconds: float, ready) -> None:
    """Offer the fleet mix (dated from now) to ``topic`` at ``rate`` events/s, open loop."""
    from confluent_kafka import Producer  # noqa: PLC0415  # in the child process only

    from tether.adapters.kafka_config import producer_config  # noqa: PLC0415
    from tether.demo.fleet import FleetConfig, iter_json_lines  # noqa: PLC0415

    lines = list(
        iter_json_lines(
            FleetConfig(seed=11, workflows=int(rate * seconds / 12) + 100, start=datetime.now(UTC))
        )
    )
    config = producer_config(
        Settings(kafka_bootstrap=bootstrap),
        client_id="bench-background",
        overrides={"linger.ms": 5},
    )
    producer = Producer(config)
    ready.set()
    start = time.perf_counter()
    for i, line in enumerate(lines):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        key = orjson.loads(line).get("workflow_id", "").encode()
        while True:
            try:
                producer.produce(topic, value=line, key=key)
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(30)


def probes(pipe: Pipeline, rig: Rig, count: int, first_index: int = 0) -> list[float]:
    def status(token: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", rig.guarded, timeout=5)
        try:
            conn.request("GET", "/api/x", headers={"Authorization": bearer(token)})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    settings = Settings(kafka_bootstrap=pipe.bootstrap, topic_prefix=pipe.prefix, partitions=4)
    out = []
    with Emitter(settings, client_id="bench-agent") as emitter:
        for i in range(first_index, first_index + count):
            now = datetime.now(UTC)
            token, wf = f"jti-probe-{i}-{pipe.prefix}", f"wf-probe-{i}"

            def cred(scopes: list[str], token: str = token, now: datetime = now) -> dict:
                return {
                    "token_id": token,
                    "issuer": STS,
                    "subject": ORG + "coder",
                    "scopes": scopes,
                    "issued_at": now - timedelta(seconds=30),
                    "expires_at": now + timedelta(minutes=10),
                }

            emitter.workflow_started(
                workflow_id=wf,
                agent=ORG + "coder",
                credential=cred(["crm:read"]),
                grant={
                    "task_type": "t",
                    "purpose": "p",
                    "scopes": ["crm:read"],
                    "tools": [],
                    "max_sensitivity": "internal",
                    "destinations": [],
                    "not_after": now + timedelta(hours=1),
                    "autonomy": "low",
                },
                occurred_at=now,
                wait=True,
            )
            if status(token) != 200:
                raise RuntimeError(f"probe {i}: the fresh token was not allowed")
            produced = time.monotonic()
            emitter.tool_call_intent(
                workflow_id=wf,
                agent=ORG + "coder",
                credential=cred(["crm:read", "crm:admin"]),
                action={
                    "tool": "crm.search",
                    "operation": "read",
                    "resource": "r",
                    "destination": "d",
                    "data_sensitivity": "internal",
                },
                occurred_at=now + timedelta(milliseconds=10),
            )
            emitter.flush(10)
            while status(token) != 403:
                if time.monotonic() - produced > 30:
                    raise RuntimeError(f"probe {i}: no 403 within 30 s")
                time.sleep(0.002)
            out.append((time.monotonic() - produced) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--background", type=float, default=0.0, help="events/s during probes")
    args = parser.parse_args()
    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="tether-gw-bench-") as tmp:
        work = Path(tmp)
        pipe = Pipeline(settings.kafka_bootstrap, settings.redis_url.get_secret_value(), work)
        pipe.start_worker("w1")
        pipe.wait_heartbeat("w1")
        rig = Rig(work, pipe.env("gateway")).start()
        try:
            time.sleep(2.0)  # the gateway bootstraps
            lat = asyncio.run(load(rig, args.rate, args.seconds))
            plain, guarded = summary(lat["plain"]), summary(lat["guarded"])
            print(f"nginx alone       {plain}")
            print(f"nginx + gateway   {guarded}")
            added = guarded["p99_ms"] - plain["p99_ms"]
            print(
                f"p99 added by the gateway: {added:.2f} ms (p50 added {guarded['p50_ms'] - plain['p50_ms']:.2f} ms)"
            )
            first = probes(pipe, rig, args.probes)
            to_403 = summary(first)
            print(f"intent -> nginx's first 403 over {len(first)} probes (idle): {to_403}")
            loaded = None
            if args.background > 0:
                mp = multiprocessing.get_context("spawn")
                ready = mp.Event()
                proc = mp.Process(
                    target=background,
                    args=(pipe.bootstrap, pipe.topic("intents"), args.background, 90.0, ready),
                    daemon=True,
                )
                proc.start()
                try:
                    ready.wait(300)
                    time.sleep(3.0)  # the load reaches the worker
                    under_load = probes(pipe, rig, args.probes, first_index=args.probes)
                finally:
                    proc.terminate()
                    proc.join(10)
                loaded = summary(under_load)
                print(
                    f"intent -> nginx's first 403 over {len(under_load)} probes at "
                    f"{args.background:.0f} events/s of background: {loaded}"
                )
        finally:
            rig.stop()
            pipe.stop_all()
    result = {
        "rate": args.rate,
        "seconds": args.seconds,
        "plain": plain,
        "guarded": guarded,
        "p99_added_ms": added,
        "intent_to_first_403": to_403,
        "background_rate": args.background,
        "intent_to_first_403_under_load": loaded,
    }
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gateway_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
