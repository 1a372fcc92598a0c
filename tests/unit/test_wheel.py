"""The built wheel installs nothing under a generic top-level name: the worker runtime (the
repository's ``streams/`` folder) ships as ``tether_streams``, and runs from there."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("tether-*.whl")
    return built


def test_the_wheel_has_no_top_level_streams_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        tops = {name.split("/", 1)[0] for name in z.namelist()}
    assert "streams" not in tops
    assert {"tether", "tether_streams"} <= tops
    assert all(t.startswith("tether") for t in tops)


def test_the_cli_finds_the_worker_in_the_wheel(wheel: Path) -> None:
    """Imported from the wheel alone (a zip on sys.path, as after ``pip install``), the runtime
    is ``tether_streams`` and its modules import each other under that name."""
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import tether.streaming as s, tether_streams.main as m, tether_streams.app as a;"
        "assert m.__file__.startswith(sys.argv[1]), m.__file__;"
        "assert 'streams' not in sys.modules;"
        "print(s.runtime_package())"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(wheel)],
        capture_output=True,
        text=True,
        check=True,
        cwd=wheel.parent,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.stdout.strip() == "tether_streams"


def test_an_editable_install_ships_no_copy_of_the_runtime(tmp_path: Path) -> None:
    """``make venv`` installs tether editable: the worker must run the checkout's streams/,
    not a copy frozen at install time (which the CLI would find first as tether_streams)."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from hatchling.build import build_editable; build_editable(sys.argv[1])",
            str(tmp_path),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (built,) = tmp_path.glob("tether-*.whl")
    with zipfile.ZipFile(built) as z:
        names = z.namelist()
    assert not [n for n in names if n.startswith(("tether_streams/", "streams/"))]
    assert any(n.endswith(".pth") for n in names)
