"""`tether console` in Debian's headless Chromium, driven by Selenium, over the real pipeline.

A real `tether worker` runs; the console runs as its own process (`tether console`). The test
signs in, opens the live feed, injects a violation into the intents topic and sees it appear in
the feed without a reload; opens its workflow page and sees the timeline and the delegation
chain; and checks that requests without the credential are refused. Screenshots are saved
(under the test's tmp dir; with TETHER_UPDATE_SCREENSHOTS=1 also as docs/img/console-*.png).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from pipeline import PARTITIONS, Pipeline

import builders
from tether.adapters.kafka_admin import create_topics
from tether.settings import Settings

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "console-test-credential-0123456789"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


@pytest.fixture
def pipe(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(kafka_bootstrap, redis_url, tmp_path)
    create_topics(
        Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=p.prefix, partitions=PARTITIONS)
    )
    yield p
    p.stop_all()


@pytest.fixture
def console(pipe: Pipeline, tmp_path: Path) -> Iterator[str]:
    env = {
        **pipe.env("console"),
        "TETHER_CONSOLE_TOKEN": TOKEN,
    }
    log = open(tmp_path / "console.log", "w+b")  # noqa: SIM115  # owned by the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether.cli", "console", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    assert m, f"console did not start: {line!r} {(tmp_path / 'console.log').read_text()}"
    try:
        yield f"http://127.0.0.1:{m.group(1)}"
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.fixture
def browser() -> Iterator[object]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.fail("Debian's chromium and chromium-driver are needed: bash scripts/browser.sh")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    opts.add_argument("--window-size=1400,900")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def refused(url: str) -> int:
    req = urllib.request.Request(url)  # noqa: S310  # a loopback test URL
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310  # loopback test URL
            return resp.status if not resp.url.endswith("/login") else 302
    except urllib.error.HTTPError as exc:
        return exc.code


def violation(monkeypatch: pytest.MonkeyPatch, wf: str) -> list[bytes]:
    monkeypatch.setattr(
        builders, "T0", datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    )
    events = [
        builders.started(wf, "planner", "tok-p", scopes=["crm:read"], t=0),
        builders.delegate(wf, "planner", "researcher", "tok-p", did=f"{wf}-d1", t=0.5),
        builders.delegate(wf, "researcher", "writer", "tok-r", did=f"{wf}-d2", t=1.0),
        builders.call(wf, "writer", "tok-w", destination="paste.attacker.example", t=2),
    ]
    return [orjson.dumps(e) for e in events]


def save(driver: object, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    assert path.stat().st_size > 10_000
    if os.environ.get("TETHER_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_IMG / name)


def test_a_violation_reaches_the_live_console(
    pipe: Pipeline,
    console: str,
    browser: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    d = browser
    # no credential, no findings
    assert refused(f"{console}/api/feed") == 401
    assert refused(f"{console}/events") == 401
    assert refused(f"{console}/api/health") == 401
    assert refused(f"{console}/") == 302  # the page sends you to sign in

    pipe.start_worker("w1")
    pipe.wait_heartbeat("w1")

    d.get(f"{console}/login")  # type: ignore[attr-defined]
    d.find_element(By.ID, "token").send_keys("wrong-credential")  # type: ignore[attr-defined]
    d.find_element(By.ID, "signin").click()  # type: ignore[attr-defined]
    wait = WebDriverWait(d, 30)
    # the refusal is a new page: wait for it (on a loaded machine it is not there at once)
    wait.until(ec.presence_of_element_located((By.ID, "login-error")))
    d.find_element(By.ID, "token").send_keys(TOKEN)  # type: ignore[attr-defined]
    d.find_element(By.ID, "signin").click()  # type: ignore[attr-defined]
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "live"))
    d.execute_script("window.__sameLoad = 'yes';")  # type: ignore[attr-defined]

    wf = f"wf-console-{int(time.time())}"
    injected_at = time.monotonic()
    pipe.produce([*violation(monkeypatch, wf), b'{"schema_version": 1, "event_type": "nope"'])
    row = wait.until(
        ec.presence_of_element_located(
            (By.XPATH, f"//table[@id='feed']//tr[contains(@class,'finding')][td/a[text()='{wf}']]")
        )
    )
    seen_after = time.monotonic() - injected_at
    assert "destination_not_granted" in row.text
    assert d.execute_script("return window.__sameLoad;") == "yes"  # type: ignore[attr-defined]
    wait.until(
        ec.presence_of_element_located(
            (
                By.XPATH,
                f"//table[@id='feed']//tr[contains(@class,'revocation')][td/a[text()='{wf}']]",
            )
        )
    )
    save(d, tmp_path, "console-feed.png")
    print(f"violation visible in the live feed {seen_after:.2f} s after it was produced")

    row.find_element(By.LINK_TEXT, wf).click()
    wait.until(ec.presence_of_element_located((By.ID, "timeline")))
    timeline = d.find_element(By.ID, "timeline").text  # type: ignore[attr-defined]
    assert "tool_call.intent" in timeline
    assert "finding: destination_not_granted" in timeline
    assert "revocation: token" in timeline
    nodes = d.find_elements(By.CSS_SELECTOR, "#chain svg g.node")  # type: ignore[attr-defined]
    labels = {n.get_attribute("data-workload") for n in nodes}
    assert labels == {builders.ORG + n for n in ("planner", "researcher", "writer")}
    assert d.find_elements(By.CSS_SELECTOR, "#chain svg g.node.flagged")  # type: ignore[attr-defined]
    assert len(d.find_elements(By.CSS_SELECTOR, "#chain svg line.edge")) == 2  # type: ignore[attr-defined]
    assert "paste.attacker.example" not in d.find_element(By.ID, "grant").text  # type: ignore[attr-defined]
    save(d, tmp_path, "console-workflow.png")

    d.get(f"{console}/health")  # type: ignore[attr-defined]
    wait.until(lambda drv: "w1" in drv.find_element(By.ID, "workers").text)
    wait.until(lambda drv: "invalid_json" in drv.find_element(By.ID, "deadletters").text)
    latency = d.find_element(By.ID, "latency").text  # type: ignore[attr-defined]
    assert re.search(r"count\s+[1-9]", latency), latency
    save(d, tmp_path, "console-health.png")
