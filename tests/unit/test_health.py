"""The operations endpoint: /metrics, /healthz and /readyz over real HTTP on loopback."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import orjson
import pytest

from tether.health import PORTS, Health, OpsServer, address, serve
from tether.metrics import EVENTS_TOTAL


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310  # loopback
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def endpoint() -> Iterator[tuple[Health, OpsServer]]:
    health = Health("worker", alive_s=0.3)
    ops = serve("127.0.0.1:0", health)
    assert ops is not None
    yield health, ops
    ops.stop()


def test_readyz_names_the_failing_checks_and_turns_ready(
    endpoint: tuple[Health, OpsServer],
) -> None:
    health, ops = endpoint
    state = {"recovered": False}
    health.check("tables_recovered", lambda: state["recovered"])
    health.check("input_assigned", lambda: True)
    status, body = get(f"{ops.url}/readyz")
    assert status == 503
    assert orjson.loads(body)["checks"] == {"tables_recovered": False, "input_assigned": True}
    state["recovered"] = True
    status, body = get(f"{ops.url}/readyz")
    assert (status, orjson.loads(body)["ready"]) == (200, True)


def test_a_check_that_raises_is_not_ready(endpoint: tuple[Health, OpsServer]) -> None:
    health, ops = endpoint
    health.check("broken", lambda: 1 / 0 == 0)
    assert get(f"{ops.url}/readyz")[0] == 503


def test_healthz_fails_once_the_work_loop_stops_beating(
    endpoint: tuple[Health, OpsServer],
) -> None:
    health, ops = endpoint
    health.beat()
    assert get(f"{ops.url}/healthz")[0] == 200
    time.sleep(0.4)
    status, body = get(f"{ops.url}/healthz")
    assert status == 503
    assert orjson.loads(body)["alive"] is False
    health.beat()
    assert get(f"{ops.url}/healthz")[0] == 200


def test_metrics_are_served_in_prometheus_text(endpoint: tuple[Health, OpsServer]) -> None:
    _, ops = endpoint
    EVENTS_TOTAL.add("tool_call.intent", 0)
    status, body = get(f"{ops.url}/metrics")
    assert status == 200
    assert b"# TYPE tether_events_total counter" in body
    assert b"tether_decision_latency_seconds_bucket" in body
    assert get(f"{ops.url}/nothing")[0] == 404


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (None, ("127.0.0.1", PORTS["gateway"])),
        ("off", None),
        ("", None),
        ("0.0.0.0:9999", ("0.0.0.0", 9999)),  # noqa: S104  # parsing, not binding
        (":9999", ("127.0.0.1", 9999)),
        ("9999", ("127.0.0.1", 9999)),
        ("[::1]:9999", ("::1", 9999)),
    ],
)
def test_address(setting: str | None, expected: tuple[str, int] | None) -> None:
    assert address(setting, "gateway") == expected


def test_every_process_has_its_own_default_port() -> None:
    assert len(set(PORTS.values())) == len(PORTS)
    assert all(p > 1024 for p in PORTS.values())  # a non-root user may bind them


def test_a_taken_port_or_bad_address_warns_instead_of_stopping_the_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve(f"127.0.0.1:{port}", Health("worker")) is None
    assert serve("not-an-address", Health("worker")) is None
    assert serve("off", Health("worker")) is None
    assert "TETHER_METRICS_ADDR" in caplog.text
