"""`tether policy validate DIR`: exit codes and output."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from tether.policy.cli import policy, validate

DEFAULT_DIR = Path(__file__).parents[2] / "src/tether/policy/strict"


def test_a_valid_directory_prints_a_summary_and_exits_0() -> None:
    result = CliRunner().invoke(validate, [str(DEFAULT_DIR)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: 7 policies (tether.admin.high-autonomy, ")
    assert "tether.base.permit-all" in result.output
    assert " revision " in result.output


def test_problems_are_printed_per_file_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "good.cedar").write_text('@id("a") permit (principal, action, resource);')
    (tmp_path / "bad.cedar").write_text('\n@id("b") forbid (principal, action, resource) when {')
    result = CliRunner().invoke(validate, [str(tmp_path)])
    assert result.exit_code == 1
    bad = tmp_path / "bad.cedar"
    assert result.stdout.splitlines() == [f"{bad}: line 2: unexpected end of input"]
    assert "1 problem(s)" in result.stderr


def test_a_missing_directory_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(validate, [str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert "not a directory" in result.stdout


def test_the_group_mounts_validate_with_an_example_in_its_help() -> None:
    result = CliRunner().invoke(policy, ["validate", "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output
    assert "tether policy validate ./policies" in result.output
