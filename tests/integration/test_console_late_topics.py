"""A console started before the pipeline's topics exist picks them up once they are created."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid

import orjson
from test_alerts import finding, publish

from tether.adapters.kafka_admin import create_topics
from tether.settings import Settings

TOKEN = "late-topics-credential-0123456789"


def test_console_reads_topics_created_after_it_started(kafka_bootstrap: str) -> None:
    prefix = f"it-{uuid.uuid4().hex[:10]}."
    env = {
        **os.environ,
        "TETHER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TETHER_TOPIC_PREFIX": prefix,
        "TETHER_CONSOLE_TOKEN": TOKEN,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether.cli", "console", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        m = re.search(rb"http://127\.0\.0\.1:(\d+)/", proc.stdout.readline())
        assert m
        url = f"http://127.0.0.1:{int(m.group(1))}/api/feed"
        settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, partitions=2)
        create_topics(settings)
        publish(settings, [finding(7)])
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
        deadline = time.monotonic() + 30
        ids: list[str] = []
        while time.monotonic() < deadline and not ids:
            with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310  # loopback
                ids = [i["finding_id"] for i in orjson.loads(resp.read())]
            time.sleep(0.5)
        assert ids == ["f-00007"]
    finally:
        proc.terminate()
        proc.wait(15)
