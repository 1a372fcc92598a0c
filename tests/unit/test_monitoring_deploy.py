"""The monitoring contract in the repository: metric names (Prometheus conventions), the Grafana
dashboard, the Kubernetes manifests and the compose file (docs/monitoring.md)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

from tether.health import PORTS, Health
from tether.kafka_settings import KafkaSettings
from tether.metrics import NAMES, READ_NAMES
from tether.observe import watch_feed
from tether.sdk.revocation_set import WatcherStats
from tether.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def exported() -> dict[str, str]:
    """Metric family name (as exposed: counters with _total) -> type, from the registry."""
    out = {}
    for family in REGISTRY.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        out[name] = family.type
    return out


def test_every_static_metric_is_registered_with_its_conventional_name() -> None:
    families = exported()
    static = NAMES - set(READ_NAMES)
    assert static <= families.keys()
    for name in NAMES:
        assert re.fullmatch(r"tether_[a-z_]+", name), name
        kind = families.get(name)
        if kind == "counter" or (kind is None and name in READ_NAMES):
            continue
        assert not name.endswith("_total"), f"{name}: only counters end in _total"
    for name, kind in families.items():
        if name.startswith("tether_"):
            assert name in NAMES, f"{name} is exported but not listed in tether.metrics.NAMES"
            assert (kind == "counter") == name.endswith("_total"), name
        assert "_milliseconds" not in name, "base units: seconds"
        assert "_ms" not in name, "base units: seconds"


def test_every_metric_read_from_a_component_is_exported_by_some_reader() -> None:
    sources = "".join(
        (ROOT / p).read_text()
        for p in ("src/tether/observe.py", "streams/observe.py", "src/tether/otel/cli.py")
    )
    for name in READ_NAMES:
        base = name.removesuffix("_total")
        assert f'"{base}"' in sources, f"no reader exports {name}"


def dashboard_exprs() -> list[str]:
    doc = json.loads((ROOT / "deploy/grafana/tether.json").read_text())
    return [t["expr"] for panel in doc["panels"] for t in panel["targets"]]


def test_the_grafana_dashboard_uses_only_exported_metric_names() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    used = set()
    for expr in exprs:
        for name in re.findall(r"\btether_[a-z_]+", expr):
            base = name
            for suffix in HISTOGRAM_SUFFIXES:
                if name.endswith(suffix) and name.removesuffix(suffix) in NAMES:
                    base = name.removesuffix(suffix)
            assert base in NAMES, f"dashboard expression uses unknown metric {name}: {expr}"
            used.add(base)
    # the list: each is on the dashboard
    for name in (
        "tether_events_total",
        "tether_deadletters_total",
        "tether_findings_total",
        "tether_revocations_total",
        "tether_decision_latency_seconds",
        "tether_input_lag_records",
        "tether_epoch_commit_seconds",
        "tether_state_keys",
        "tether_signing_queue_revocations",
        "tether_gateway_checks_total",
        "tether_fail_open_total",
        "tether_feed_staleness_seconds",
    ):
        assert name in used, name


# -- Kubernetes ----------------------------------------------------------------------------


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((ROOT / "deploy/k8s").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def setting_names() -> set[str]:
    names = {f"TETHER_{n.upper()}" for n in Settings.model_fields}
    names |= {f"TETHER_KAFKA__{n.upper()}" for n in KafkaSettings.model_fields}
    return names


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc["spec"]["template"]["spec"]["containers"])


def test_workers_are_a_statefulset_named_by_their_pods() -> None:
    (sts,) = [d for d in manifests() if d["kind"] == "StatefulSet"]
    (worker,) = containers(sts)
    assert worker["args"][:2] == ["tether", "worker"]
    env = {e["name"]: e for e in worker["env"]}
    assert env["TETHER_WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert sts["spec"]["serviceName"]
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("kind", ["StatefulSet", "Deployment"])
def test_probes_point_at_the_served_paths_and_port(kind: str) -> None:
    docs = [d for d in manifests() if d["kind"] == kind]
    assert docs
    for doc in docs:
        for c in containers(doc):
            process = c["args"][1]
            env = {e["name"]: e.get("value") for e in c["env"]}
            assert set(env) <= setting_names(), set(env) - setting_names()
            addr = env["TETHER_METRICS_ADDR"]
            host, _, port = addr.rpartition(":")
            assert int(port) == PORTS[process]  # the documented port of the process
            assert host == "0.0.0.0"  # noqa: S104  # the kubelet probes the pod's IP
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            assert ports["metrics"] == int(port)
            assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
            assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
            assert c["resources"]["requests"]["cpu"]
            assert c["resources"]["requests"]["memory"]
            annotations = doc["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/port"] == port
            # the home is a writable volume: the root filesystem is read-only
            home = env["TETHER_HOME"]
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert home in mounts


# -- compose ---------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return doc


def test_every_compose_service_has_a_healthcheck() -> None:
    services = compose()["services"]
    missing = [name for name, svc in services.items() if "healthcheck" not in svc]
    assert missing == []


def test_the_compose_worker_is_healthy_only_when_ready() -> None:
    worker = compose()["services"]["worker"]
    assert "/readyz" in " ".join(worker["healthcheck"]["test"])
    env = worker["environment"]
    assert env["TETHER_METRICS_ADDR"].endswith(f":{PORTS['worker']}")
    assert set(env) <= setting_names()


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="no docker-compose binary")
def test_docker_compose_config_validates() -> None:
    done = subprocess.run(  # the real tool's own schema check (Debian's docker-compose)
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_docs_monitoring_lists_every_metric_and_port() -> None:
    doc = (ROOT / "docs/monitoring.md").read_text()
    missing = [name for name in sorted(NAMES) if f"`{name}`" not in doc]
    assert missing == []
    for process, port in PORTS.items():
        assert f"| {port} |" in doc, process


def test_no_metric_family_is_exported_twice() -> None:
    """With the watcher's readers registered beside the static metrics (a gateway process)."""
    watcher = SimpleNamespace(
        ready=threading.Event(),
        revocations=SimpleNamespace(is_fresh=lambda: False),
        stats=WatcherStats(lag=3),
        last_heartbeat=None,
    )
    watch_feed(Health("gateway"), watcher)  # type: ignore[arg-type]  # the attributes it reads
    text = generate_latest(REGISTRY).decode()
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))
    assert "tether_feed_staleness_seconds +Inf" in text
    assert "tether_feed_lag_records 3.0" in text
