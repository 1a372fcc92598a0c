"""The settings reference (docs/configuration.md) is generated from the settings, and stays so."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tether.cli import main
from tether.settings import Settings
from tether.settings_reference import REFERENCE, SECTIONS, reference, section_of, unsectioned

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_reference_is_the_generated_one() -> None:
    committed = (ROOT / REFERENCE).read_text(encoding="utf-8")
    assert committed == reference(), "docs/configuration.md is stale: run `tether settings doc`"


def test_every_setting_has_a_section_and_a_description() -> None:
    assert unsectioned() == [], "give each new setting a section in tether.settings_reference"
    undescribed = [n for n, f in Settings.model_fields.items() if not f.description]
    assert undescribed == [], "describe each setting: the reference prints its description"


def test_no_setting_is_in_two_sections() -> None:
    names = [name for section in SECTIONS for name in section.fields]
    assert len(names) == len(set(names))
    assert set(names) == set(Settings.model_fields)


def test_the_internal_knobs_come_last_in_a_section_of_their_own() -> None:
    assert [s.advanced for s in SECTIONS] == [False] * (len(SECTIONS) - 1) + [True]
    for knob in ("batch_max", "state_epoch_ms", "gil_switch_ms", "gc_freeze", "malloc_trim_s"):
        assert section_of(knob).advanced
    for user_setting in ("kafka_bootstrap", "redis_url", "signing_key", "grace_s", "worker_id"):
        assert not section_of(user_setting).advanced


def test_every_variable_is_in_the_reference() -> None:
    text = reference()
    for name in Settings.model_fields:
        if name != "kafka":
            assert f"`TETHER_{name.upper()}`" in text
    assert "`TETHER_KAFKA__SECURITY_PROTOCOL`" in text


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("TETHER_REDIS_URL", "redis://r:1/2", "redis_url", "redis://r:1/2"),
        ("TETHER_KAFKA_BOOTSTRAP", "k:9", "kafka_bootstrap", "k:9"),
        ("TETHER_SIGNING_INLINE_MAX", "3", "signing_inline_max", 3),
        ("TETHER_GRACE_S", "7", "grace_s", 7.0),
    ],
)
def test_the_variables_keep_their_names(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str, expected: object
) -> None:
    monkeypatch.setenv(variable, value)
    got = getattr(Settings(), field)
    assert (got.get_secret_value() if hasattr(got, "get_secret_value") else got) == expected


def test_the_cli_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text("# old\n")
    runner = CliRunner()
    failed = runner.invoke(main, ["settings", "doc", "--check", "--out", str(stale)])
    assert failed.exit_code == 1
    assert runner.invoke(main, ["settings", "doc", "--out", str(stale)]).exit_code == 0
    assert stale.read_text() == reference()
    assert runner.invoke(main, ["settings", "doc", "--check", "--out", str(stale)]).exit_code == 0


def test_the_operations_guide_points_to_the_reference() -> None:
    assert "configuration.md" in (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
