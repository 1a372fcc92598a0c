"""OpenTelemetry spans in, the same findings and revocations out as native events give.

Spans are made by the real OpenTelemetry Python SDK (tests/otel_spans.py: a GenAI agent with
tool spans, an agent invoking another, an MCP ``tools/call`` under an ``execute_tool``, an
OpenInference TOOL span; benign and violating workflows), serialised as the Collector's Kafka
exporter writes them, and produced to a fresh OTLP topic. A real ``tether ingest otlp`` process
maps them and a real ``tether worker`` judges them. The outputs must equal what ``tether replay``
gives for the events the adapter produced, and name the violations the fleet contains.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pipeline import Pipeline, collect_expected, identity, replay_records

from otel_spans import SEC, Collect, fleet, otlp_proto, records
from tether.otel.config import MappingConfig
from tether.otel.decode import decode
from tether.otel.join import TraceJoiner

EXPECTED_CODES = {"tool_not_granted", "undelegated_actor"}


@pytest.fixture
def pipe(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    yield p
    p.stop_all()


def _otlp_topic(pipe: Pipeline) -> str:
    name = pipe.topic("otlp_spans")
    admin = AdminClient({"bootstrap.servers": pipe.bootstrap})
    for future in admin.create_topics([NewTopic(name, 3, 1)]).values():
        future.result(30)
    return name


def _start_adapter(pipe: Pipeline, topic: str, name: str = "ingest") -> subprocess.Popen[bytes]:
    log = open(pipe.workdir / f"{name}.log", "ab")  # noqa: SIM115  # owned by the process
    proc = subprocess.Popen(  # our own CLI, fixed arguments
        [
            sys.executable,
            "-m",
            "tether.cli",
            "ingest",
            "otlp",
            "--topic",
            topic,
            "--trace-idle",
            "1",
        ],
        env=pipe.env(name),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    pipe.workers[name] = proc  # stopped with the workers
    return proc


def _produce(pipe: Pipeline, topic: str, recs: list[tuple[bytes | None, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": pipe.bootstrap, "linger.ms": 5})
    for key, value in recs:
        producer.produce(topic, value=value, key=key)
    assert producer.flush(30) == 0


def _intents(
    pipe: Pipeline, want: int, timeout: float = 90.0, *, distinct: bool = False
) -> list[bytes]:
    """The events the adapter produced, read back from the intents topic, until ``want`` of
    them (``distinct``: ``want`` different event ids, duplicates kept) or the timeout."""
    got: list[bytes] = []
    ids: set[str] = set()
    deadline = time.monotonic() + timeout
    with pipe.consumer([pipe.topic("intents")]) as c:
        while time.monotonic() < deadline and (len(ids) if distinct else len(got)) < want:
            msg = c.poll(0.2)
            if msg is not None and not msg.error():
                got.append(msg.value())
                ids.add(orjson.loads(msg.value())["event_id"])
    return got


def _expected_ids(recs: list[tuple[bytes | None, bytes]]) -> set[str]:
    """The event ids one uninterrupted adapter gives for ``recs`` (mapped in process)."""
    return {e.event_id for r in _released(recs) for e in r.mapped.events}


def _released(recs: list[tuple[bytes | None, bytes]]) -> list[Any]:
    joiner = TraceJoiner(MappingConfig())
    out: list[Any] = []
    for n, (_, value) in enumerate(recs):
        joiner.add(decode(value).spans, n, 0.0)
        out += joiner.release(0.0)
    return out + joiner.drain(0.0)


def _read(
    pipe: Pipeline, name: str, quiet_s: float = 3.0, *, want: int = 0, timeout: float = 90.0
) -> list[dict[str, Any]]:
    """Records of a topic: at least ``want`` of them (or the timeout), then until nothing new
    arrives for ``quiet_s`` (a quiet period alone says little on a loaded machine)."""
    out: list[dict[str, Any]] = []
    last = time.monotonic()
    deadline = last + timeout
    with pipe.consumer([pipe.topic(name)]) as c:
        while time.monotonic() < deadline and (
            len(out) < want or time.monotonic() - last < quiet_s
        ):
            msg = c.poll(0.2)
            if msg is not None and not msg.error():
                out.append(orjson.loads(msg.value()))
                last = time.monotonic()
    return out


def _fleets(tag: str) -> tuple[list[tuple[bytes | None, bytes]], int]:
    """Four copies of the fleet, one per exporter shape: otlp_proto and otlp_json, one batch
    per record (unkeyed, traces straddling records) and one trace per record (keyed)."""
    recs: list[tuple[bytes | None, bytes]] = []
    base = time.time_ns() - 20 * 60 * SEC  # recent: the worker judges tokens by event time
    shapes = [(enc, per) for enc in ("otlp_proto", "otlp_json") for per in (False, True)]
    for n, (encoding, per_trace) in enumerate(shapes):
        sink = Collect()
        fleet(sink, tag=f"{tag}{n}", base_ns=base + n * 5 * 60 * SEC)
        recs += records(sink.spans, encoding=encoding, per_trace=per_trace)
    return recs, len(shapes)


def test_spans_from_every_exporter_shape_give_the_native_findings(pipe: Pipeline) -> None:
    topic = _otlp_topic(pipe)
    pipe.start_worker("w1")
    pipe.wait_heartbeat("w1")
    _start_adapter(pipe, topic)
    recs, copies = _fleets(pipe.prefix)
    _produce(pipe, topic, recs)

    events = _intents(pipe, want=21 * copies)  # 21 events per fleet (see test_otel_mapping)
    assert len(events) == 21 * copies, pipe.log("ingest")
    expected = replay_records(events)
    got = collect_expected(pipe, expected)
    assert identity(got)["findings"] == identity(expected)["findings"], pipe.log("w1")
    assert identity(got)["revocations"] == identity(expected)["revocations"]
    codes = [f["code"] for f in got["findings"]]
    assert sorted(codes) == sorted(list(EXPECTED_CODES) * copies), codes
    assert not got["deadletter"]

    coverage = _read(pipe, "coverage")
    assert len({c["workflow_id"] for c in coverage}) == 5 * copies
    assert all(c["kind"] == "coverage" and c["source"] == "otel" for c in coverage)


def test_undecodable_records_and_bad_span_ids_are_dead_letters_and_the_rest_flows(
    pipe: Pipeline,
) -> None:
    topic = _otlp_topic(pipe)
    _start_adapter(pipe, topic)
    sink = Collect()
    fleet(sink, tag=pipe.prefix, base_ns=time.time_ns() - 10 * 60 * SEC)
    request_with_bad_span = otlp_proto(sink.spans)
    from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

    doc = TracesData.FromString(request_with_bad_span)
    doc.resource_spans[0].scope_spans[0].spans[0].trace_id = b"\x00" * 16
    _produce(
        pipe,
        topic,
        [
            (b"k", b"\x0a\xff\xff garbage"),
            (None, b'{"resourceSpans": "nope"}'),
            (None, b""),
            (None, doc.SerializeToString()),
        ],
    )
    dead = _read(pipe, "deadletter", want=4)
    reasons = sorted(d["reason"] for d in dead)
    assert reasons == ["otlp_undecodable"] * 4, (dead, pipe.log("ingest"))
    assert any("trace_id is not 16 non-zero bytes" in d["error"] for d in dead)
    # the other 16 spans of the record still became events (one tool call fewer at most)
    events = _intents(pipe, want=20, timeout=30)
    assert len(events) >= 19, pipe.log("ingest")


def test_a_killed_adapter_loses_nothing_and_its_rerun_duplicates_are_ignored(
    pipe: Pipeline,
) -> None:
    """At least once: SIGKILL the adapter after part of the input, restart it, and the
    outputs are those of one clean run (offsets were committed only behind acknowledged
    output, and re-read records give events with the same ids)."""
    topic = _otlp_topic(pipe)
    pipe.start_worker("w1")
    pipe.wait_heartbeat("w1")
    recs, copies = _fleets(pipe.prefix)
    half = len(recs) // 2
    adapter = _start_adapter(pipe, topic, "ingest1")
    _produce(pipe, topic, recs[:half])
    _intents(pipe, want=1, timeout=60)
    adapter.send_signal(signal.SIGKILL)
    adapter.wait(30)
    pipe.workers.pop("ingest1")
    _produce(pipe, topic, recs[half:])
    _start_adapter(pipe, topic, "ingest2")

    events = _intents(pipe, want=21 * copies, distinct=True)
    distinct = {orjson.loads(e)["event_id"]: e for e in events}
    missing = _expected_ids(recs) - set(distinct)
    assert not missing, (missing, pipe.log("ingest1"), pipe.log("ingest2"))
    expected = replay_records(list(distinct.values()))
    got = collect_expected(pipe, expected)
    assert identity(got)["findings"] == identity(expected)["findings"]
    assert identity(got)["revocations"] == identity(expected)["revocations"]
    assert sorted(f["code"] for f in got["findings"]) == sorted(list(EXPECTED_CODES) * copies)


def _registry(tmp: Path, name: str = "otel") -> Path:
    """A sources.yaml in enforce mode in which the adapter is a source that speaks for the
    fleet's agents and may start and complete their workflows (keys by `tether keys source`)."""
    subprocess.run(  # our own CLI, fixed arguments
        [sys.executable, "-m", "tether.cli", "keys", "source", name, "--dir", str(tmp)],
        check=True,
        capture_output=True,
    )
    path = tmp / "sources.yaml"
    path.write_text(
        "mode: enforce\nsources:\n"
        f"  - name: {name}\n    keys: {name}.jwks.json\n"
        '    workloads: ["spiffe://acme.example/agent/*"]\n'
        "    start: true\n    complete: any\n"
    )
    return path


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_the_adapter_is_a_source_the_registry_authenticates(
    pipe: Pipeline, monkeypatch: pytest.MonkeyPatch, signed: bool
) -> None:
    """With a source registry in enforce mode, the adapter's events count only when signed
    with its source key: signed, the fleet's violations are found; unsigned, every event is a
    dead letter `unauthenticated_source` and nothing is judged."""
    monkeypatch.setenv("TETHER_SOURCES", str(_registry(pipe.workdir)))
    if signed:
        monkeypatch.setenv("TETHER_OTLP_SOURCE_KEY", str(pipe.workdir / "otel.jwk.json"))
    topic = _otlp_topic(pipe)
    pipe.start_worker("w1")
    pipe.wait_heartbeat("w1")
    _start_adapter(pipe, topic)
    sink = Collect()
    fleet(sink, tag=pipe.prefix, base_ns=time.time_ns() - 10 * 60 * SEC)
    _produce(pipe, topic, records(sink.spans, encoding="otlp_proto", per_trace=True))
    events = _intents(pipe, want=21)
    assert len(events) == 21, pipe.log("ingest")
    if signed:
        expected = replay_records(events)
        # the adapter's registry entry does not vouch for tokens: its events' findings revoke no
        # token (docs/SECURITY.md), unlike a replay without a registry; wait for the findings
        expected["revocations"] = []
        got = collect_expected(pipe, expected)
        assert sorted(f["code"] for f in got["findings"]) == sorted(EXPECTED_CODES)
        assert all(f.get("authenticated") for f in got["findings"]), got["findings"]
        assert not got["deadletter"]
    else:
        got = pipe.collect(quiet_s=6.0, timeout=90.0, until=21)
        assert [d["reason"] for d in got["deadletter"]] == ["unauthenticated_source"] * 21
        assert not got["findings"]
