"""`tether ocsf-forward`: every finding re-published on tether.findings.ocsf, valid OCSF 1.8.0."""

from __future__ import annotations

import threading
import time
import uuid

import orjson
from confluent_kafka import Consumer
from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema
from test_alerts import finding, publish

from tether.adapters.kafka_admin import create_topics
from tether.adapters.kafka_config import consumer_config
from tether.settings import Settings
from tether.soc.ocsf_forward import run_ocsf_forward


def _run(settings: Settings, seconds: float) -> None:
    stop = threading.Event()
    t = threading.Thread(target=run_ocsf_forward, args=(settings, stop))
    t.start()
    time.sleep(seconds)
    stop.set()
    t.join(30)


def _read_all(settings: Settings, expect: int, timeout: float = 30) -> list[dict[str, object]]:
    c = Consumer(
        consumer_config(settings, group_id=f"read-{uuid.uuid4().hex}", client_id="test-read")
    )
    c.subscribe([settings.topic("findings.ocsf")])
    out: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(out) < expect:
        for m in c.consume(100, 0.5):
            if m.error() is None and m.value():
                out.append(orjson.loads(m.value()))
    time.sleep(1.0)  # anything beyond what was expected (a repeat) shows up too
    for m in c.consume(100, 0.5):
        if m.error() is None and m.value():
            out.append(orjson.loads(m.value()))
    c.close()
    return out


def test_findings_are_forwarded_as_valid_ocsf_once_across_a_restart(
    kafka_bootstrap: str, fresh_topic_prefix: str
) -> None:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.", partitions=2
    )
    create_topics(settings)
    first = [finding(i) for i in range(30)]
    publish(settings, first)
    _run(settings, 6)
    second = [finding(100 + i, "critical") for i in range(10)]
    publish(settings, second)
    _run(settings, 6)
    records = _read_all(settings, 40)
    uids = sorted(str(r["finding_info"]["uid"]) for r in records)  # type: ignore[index]
    assert uids == sorted(f.finding_id for f in [*first, *second])
    schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version="1.8.0")).get_class_schema(
        "detection_finding", profiles=["security_control"]
    )
    validator = Draft202012Validator(schema)
    for r in records:
        assert not list(validator.iter_errors(r))
