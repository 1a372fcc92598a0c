"""`tether demo --kafka`: the demo fleet through the real pipeline scores every attack."""

from __future__ import annotations

import io
import uuid

from tether.demo.kafka import run_kafka_demo
from tether.settings import Settings


def test_demo_through_kafka_catches_every_attack(kafka_bootstrap: str, redis_url: str) -> None:
    prefix = f"d{uuid.uuid4().hex[:10]}."
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=prefix,
        partitions=3,
        app_id=f"{prefix}monitor",
    )
    out = io.StringIO()
    code = run_kafka_demo(
        settings, workflows=80, seed=3, attack_rate=0.3, rate=0, start_worker=True, out=out
    )
    text = out.getvalue()
    assert code == 0, text
    assert "benign workflows with findings: 0" in text
    assert "PASS:" in text
