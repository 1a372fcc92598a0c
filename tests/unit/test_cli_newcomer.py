"""Errors and help a newcomer understands.

* With Kafka unreachable, every command that needs it prints ONE line (where it looked, why it
  failed, what to check and which setting to change) and exits with its documented code: 69
  (EX_UNAVAILABLE), or 3 ("cannot tell") for ``tether watch --check``. Before, librdkafka printed
  a line per connection attempt (~1,000 before the command gave up) and the worker ended in a
  traceback. Run as real processes: librdkafka writes to the process's stderr, not click's.
* ``tether watch`` never claims to verify with a development JWKS file that does not exist.
* Every command's ``--help`` has an example and names the environment variables it reads.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tether.cli import main
from tether.security import keys
from tether.settings import Settings

SRC = Path(__file__).resolve().parents[2] / "src"
UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1: connection refused at once


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["emit", "{events}", "--wait", "2"], 69),
        (["watch", "--wait", "2"], 69),
        (["watch", "--check", "token:jti-1", "--wait", "2"], 3),
        (["worker", "--wait", "2"], 69),
        (["topics", "create", "--wait", "2"], 69),
    ],
    ids=["emit", "watch", "watch-check", "worker", "topics-create"],
)
def test_kafka_unreachable_is_one_clear_line(tmp_path, args, code):
    events = tmp_path / "events.jsonl"
    events.write_text('{"schema_version":1}\n')
    env = {**os.environ, "TETHER_KAFKA_BOOTSTRAP": UNREACHABLE, "TETHER_HOME": str(tmp_path)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "tether.cli", *(a.format(events=events) for a in args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    lines = done.stderr.splitlines()
    assert done.returncode == code, done.stderr[-2000:]
    assert len(lines) == 1, done.stderr[-2000:]
    (line,) = lines
    for must in (UNREACHABLE, "Connection refused", "TETHER_KAFKA_BOOTSTRAP", "running"):
        assert must in line
    assert "Traceback" not in done.stderr


def test_watch_does_not_claim_a_development_jwks_that_is_not_there(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=keys.__name__)
    keys.key_source_from_settings(Settings(home=tmp_path / "nothing-here"))
    text = caplog.text
    assert "verifying revocations with the DEVELOPMENT JWKS" not in text
    assert "no development JWKS" in text
    assert "TETHER_JWKS" in text


def test_watch_names_the_development_jwks_when_it_exists(tmp_path, caplog):
    files = keys.ensure_dev_keys(tmp_path / "keys", "ES256")
    caplog.set_level(logging.WARNING, logger=keys.__name__)
    keys.key_source_from_settings(Settings(home=tmp_path))
    assert f"verifying revocations with the DEVELOPMENT JWKS {files.jwks}" in caplog.text


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


ALL_COMMANDS = _commands(main)


def test_every_command_is_checked():
    assert {"replay", "demo", "worker", "emit", "watch"} <= {c[-1] for c in ALL_COMMANDS}
    assert ("topics", "create") in ALL_COMMANDS
    assert ("keys", "rotate") in ALL_COMMANDS


@pytest.mark.parametrize("command", [(), *ALL_COMMANDS], ids=lambda c: " ".join(c) or "tether")
def test_help_has_an_example_and_names_its_environment(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "Example" in text, f"tether {' '.join(command)} --help has no example"
    assert "TETHER_" in text or "Environment: none" in text, (
        f"tether {' '.join(command)} --help names no environment variable"
    )


def test_help_cites_only_documents_in_the_repository():
    root = SRC.parent
    for command in [(), *ALL_COMMANDS]:
        text = CliRunner().invoke(main, [*command, "--help"]).output
        for raw in text.split():
            word = raw.strip(".,;:()'\"`")
            if word.startswith("docs/") and word.endswith(".md"):
                assert (root / word).is_file(), f"tether {' '.join(command)} cites {word}"
