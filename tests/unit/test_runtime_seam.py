"""The runtime seam (``streams.faust_fixes``): exact faust and aiokafka versions, refused
otherwise at start-up, and a test that fails loudly when an upgrade changes any code tether
patches, wraps or relies on; no other module touches their private API."""

from __future__ import annotations

import ast
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from streams import faust_fixes
from streams.faust_fixes import FINGERPRINTS, PINNED, RuntimeVersionError, check_versions

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_versions_are_the_pinned_ones() -> None:
    assert {name: metadata.version(name) for name in PINNED} == PINNED


def test_pyproject_pins_the_same_versions_exactly() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {
        m.group(1): m.group(2)
        for d in deps
        if (m := re.fullmatch(r"([a-z-]+)==([0-9.]+)", d.split(";")[0].strip()))
    }
    assert {name: pins.get(name) for name in PINNED} == PINNED


def test_the_code_tether_patches_is_the_code_it_was_written_against() -> None:
    """A failure here means faust or aiokafka changed a function tether patches, wraps or reads
    private state of: read the new code against the patch, adapt it, re-record the digest."""
    assert faust_fixes.fingerprints() == FINGERPRINTS


@pytest.mark.parametrize(
    ("installed", "named"),
    [
        ({"faust-streaming": "0.11.0", "aiokafka": "0.14.0"}, "faust-streaming 0.11.0"),
        ({"faust-streaming": "0.15.3", "aiokafka": "0.11.0"}, "aiokafka 0.11.0"),
        ({"faust-streaming": "0.15.3"}, "aiokafka not installed"),
    ],
)
def test_another_version_stops_the_worker_with_a_clear_error(
    installed: dict[str, str], named: str
) -> None:
    def version(name: str) -> str:
        if name not in installed:
            raise metadata.PackageNotFoundError(name)
        return installed[name]

    with pytest.raises(RuntimeVersionError) as caught:
        check_versions(version)
    message = str(caught.value)
    assert named in message
    assert "expected 0.15.3" in message or "expected 0.14.0" in message


def _private_uses(path: Path) -> list[str]:
    """Attributes with a leading underscore read on anything but ``self``/``cls`` (librdkafka's
    error codes, ``KafkaError._PARTITION_EOF``, are public API despite the underscore)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not node.attr[1:2].isupper()  # librdkafka's public error codes: _PARTITION_EOF
            and not (isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"})
        ):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    return found


def test_no_other_module_touches_a_private_name_of_faust_or_aiokafka() -> None:
    offences = [
        use
        for path in sorted((ROOT / "streams").glob("*.py"))
        if path.name != "faust_fixes.py"
        for use in _private_uses(path)
    ]
    assert offences == []


def test_nothing_is_hung_on_faust_objects() -> None:
    """tether's hooks live in a weak map, never as attributes of the app or its consumer."""
    source = (ROOT / "streams").glob("*.py")
    hung = [
        f"{path.name}: {m.group(0)}"
        for path in source
        for m in re.finditer(r"\b(app|consumer)\.tether_\w+", path.read_text())
    ]
    assert hung == []


@pytest.mark.integration
def test_tether_worker_on_another_version_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    from tether.cli import main

    monkeypatch.setattr(faust_fixes, "PINNED", {"faust-streaming": "9.9.9"})
    result = CliRunner().invoke(main, ["worker", "--wait", "5"], catch_exceptions=False)
    assert result.exit_code == 1
    assert "faust-streaming 0.15.3 (expected 9.9.9)" in result.output
    assert "Traceback" not in result.output
