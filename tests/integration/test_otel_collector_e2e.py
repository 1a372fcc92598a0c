"""End to end through a real OpenTelemetry Collector (OTLP receiver → Kafka exporter).

Runs only under `make otel-collector-e2e`, which builds the Collector with the Collector builder
(scripts/otel-collector.sh, cached under .services/otelcol) and sets TETHER_OTELCOL; `make test`
skips it (building takes minutes). The OpenTelemetry SDK's spans are sent to the Collector as
the SDK's OTLP/HTTP exporter sends them (its own protobuf encoder, POST /v1/traces); the
Collector's Kafka exporter writes them to a fresh topic; `tether ingest otlp` and a worker must
find the fleet's violations, exactly those `tether replay` finds in the produced events.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline import Pipeline, collect_expected, replay_records
from test_otel_ingest import EXPECTED_CODES, _intents, _otlp_topic, _start_adapter

from otel_spans import SEC, Collect, fleet, to_request

OTELCOL = os.environ.get("TETHER_OTELCOL")
pytestmark = pytest.mark.skipif(
    not OTELCOL, reason="needs a built Collector: run `make otel-collector-e2e`"
)


@pytest.fixture
def pipe(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    yield p
    p.stop_all()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _collector(pipe: Pipeline, topic: str, encoding: str, per_trace: bool) -> tuple[int, Path]:
    port = _free_port()
    config = pipe.workdir / "otelcol.yaml"
    config.write_text(
        f"""receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}
exporters:
  kafka:
    brokers: [{pipe.bootstrap}]
    traces:
      topic: {topic}
      encoding: {encoding}
    partition_traces_by_id: {str(per_trace).lower()}
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [kafka]
  telemetry:
    metrics:
      level: none
"""
    )
    log = open(pipe.workdir / "otelcol.log", "ab")  # noqa: SIM115  # owned by the process
    assert OTELCOL is not None
    pipe.workers["otelcol"] = subprocess.Popen(  # the binary the make target built
        [OTELCOL, "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    return port, pipe.workdir / "otelcol.log"


def _post(port: int, body: bytes, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(  # http to our own loopback Collector
            f"http://127.0.0.1:{port}/v1/traces",
            data=body,
            headers={"Content-Type": "application/x-protobuf"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                assert response.status == 200
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(log.read_text(errors="replace")[-3000:]) from None
            time.sleep(0.5)


@pytest.mark.parametrize(
    ("encoding", "per_trace"),
    [("otlp_proto", True), ("otlp_json", False)],
    ids=["otlp_proto-per-trace", "otlp_json-batch"],
)
def test_sdk_spans_through_a_real_collector_give_the_native_findings(
    pipe: Pipeline, encoding: str, per_trace: bool
) -> None:
    topic = _otlp_topic(pipe)
    port, log = _collector(pipe, topic, encoding, per_trace)
    pipe.start_worker("w1")
    pipe.wait_heartbeat("w1")
    _start_adapter(pipe, topic)
    sink = Collect()
    fleet(sink, tag=pipe.prefix, base_ns=time.time_ns() - 10 * 60 * SEC)
    _post(port, bytes(to_request(sink.spans).SerializeToString()), log)

    events = _intents(pipe, want=21, timeout=120)
    assert len(events) == 21, (pipe.log("ingest"), log.read_text(errors="replace")[-3000:])
    expected = replay_records(events)
    got = collect_expected(pipe, expected)
    assert sorted(f["code"] for f in got["findings"]) == sorted(EXPECTED_CODES)
    assert not got["deadletter"]
