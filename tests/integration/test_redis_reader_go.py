"""The Redis contract as a reader in another language sees it: docs/examples/redis-reader-go
(Go, standard library only) against a real Redis, for each state the contract names."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "docs" / "examples" / "redis-reader-go"
GO = shutil.which("go") or (
    "/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None
)

pytestmark = pytest.mark.skipif(GO is None, reason="no Go toolchain")


@pytest.fixture(scope="module")
def reader(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("go") / "reader"
    env = {**os.environ, "GOCACHE": str(out.parent / "cache"), "GOFLAGS": "-mod=mod"}
    env.setdefault("HOME", str(out.parent))
    subprocess.run([GO, "build", "-o", str(out), "."], cwd=SOURCE, env=env, check=True, timeout=300)
    return str(out)


def test_the_go_reader_answers_as_the_contract_says(reader, redis_url, redis_client):
    addr = urlparse(redis_url).netloc.rsplit("@", 1)[-1]
    topic = f"t{uuid.uuid4().hex[:8]}.revocations"
    ident = f"jti-{uuid.uuid4().hex[:8]}"
    keys = [f"tether:revoked:token:{ident}", f"tether:registry:partitions:{topic}"]
    keys += [f"tether:registry:{k}:{topic}:{p}" for k in ("sync", "fresh") for p in (0, 1)]

    def ask(staleness: str = "10s") -> int:
        run = subprocess.run(  # the binary built above
            [reader, "-addr", addr, "-topic", topic, "-staleness", staleness, "token", ident],
            capture_output=True,
            timeout=30,
            check=False,
        )
        return run.returncode

    r = redis_client
    try:
        assert ask() == 3  # nothing vouches for Redis: cannot tell
        now_ms = int(time.time() * 1000)
        r.set(f"tether:registry:partitions:{topic}", 2)
        for p in (0, 1):
            r.set(f"tether:registry:sync:{topic}:{p}", "synced")
            r.set(f"tether:registry:fresh:{topic}:{p}", now_ms)
        assert ask() == 0  # vouched for, key absent: not revoked
        r.set(f"tether:registry:sync:{topic}:1", "rebuilding")
        assert ask() == 3  # a partition being rebuilt
        r.set(f"tether:registry:sync:{topic}:1", "synced")
        r.set(f"tether:registry:fresh:{topic}:0", now_ms - 60_000)
        assert ask() == 3  # the sync's freshness heartbeat is a minute old
        r.delete(f"tether:registry:fresh:{topic}:0")
        assert ask() == 3  # lost
        r.set(keys[0], b"{}", px=60_000)
        assert ask() == 1  # revoked, whatever the marks say
    finally:
        r.delete(*keys)
