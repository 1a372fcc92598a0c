"""docker-compose.yml is valid and runs the same Kafka version as `make services`.

No Docker engine is needed: `docker compose config` / `docker-compose config` only parse and
validate. scripts/services.sh installs Debian's docker-compose so CI always has one; elsewhere
the validation skips when neither tool is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
KAFKA_POM = ROOT / "scripts" / "kafka" / "pom.xml"


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.fixture(scope="module")
def compose() -> list[str]:
    command = _compose_command()
    if command is None:
        pytest.skip(
            "no compose tool: neither `docker compose` nor `docker-compose` is installed "
            "(`make services` installs Debian's docker-compose)"
        )
    return command


def _run(compose: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*compose, "--file", str(COMPOSE_FILE), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_compose_file_is_valid(compose):
    result = _run(compose, "config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_compose_defines_the_stack(compose):
    result = _run(compose, "config", "--services")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {"kafka", "redis", "keys", "worker", "fleet"}


def test_compose_kafka_matches_the_local_broker_version():
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    pom_version = (
        ET.parse(KAFKA_POM).getroot().findtext("m:properties/m:kafka.version", namespaces=namespace)
    )
    images = re.findall(r"image:\s*apache/kafka:(\S+)", COMPOSE_FILE.read_text())
    assert pom_version
    assert images == [pom_version]


def test_compose_worker_image_builds_from_the_repo_dockerfile():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert 'CMD ["tether", "worker"]' in dockerfile
