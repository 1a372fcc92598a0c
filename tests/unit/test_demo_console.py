"""`tether demo --console`: the zero-setup demo, shown in the live console as it runs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import orjson

TOKEN = "demo-console-credential-0123456789"


def get(url: str, token: str = TOKEN) -> object:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310  # loopback
        return orjson.loads(resp.read())


def test_demo_console_shows_the_fleet_and_keeps_serving_until_stopped() -> None:
    env = {**os.environ, "TETHER_CONSOLE_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tether.cli",
            "demo",
            "--console",
            "--no-live",
            "--rate",
            "0",
            "--workflows",
            "40",
            "--attack-rate",
            "0.5",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        base = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline().decode()
            if m := re.search(r"(http://127\.0\.0\.1:\d+)/", line):
                base = base or m.group(1)
            if "still serving" in line:
                break
        assert base, "no console URL"
        feed = get(f"{base}/api/feed")
        assert isinstance(feed, list)
        findings = [i for i in feed if i["kind"] == "finding"]
        assert findings
        assert any(i["kind"] == "revocation" for i in feed)
        started = next(i for i in findings if i["code"] != "unknown_workflow")
        wf = get(f"{base}/api/workflow/{started['workflow_id']}")
        assert isinstance(wf, dict)
        assert any(e["what"].startswith("finding:") for e in wf["timeline"])
        assert any(e["what"] == "workflow.started" for e in wf["timeline"])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
