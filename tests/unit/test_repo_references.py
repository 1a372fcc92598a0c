"""Nothing in the repository points outside it: the contract a user needs is docs/contract.md.

The event contract once lived in a design file beside the repository, which a user who clones it
does not have. Code, help texts, tests, schemas and docs now cite ``docs/contract.md``; this test
fails when any tracked file cites the old location again, or when a citation of the contract
names a file that does not exist.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Spelled in pieces so that this file matches neither itself nor a grep for the old location.
OUTSIDE = ("/".join(["..", "shared", ""]), "DESIGN" + ".md")
DOC_LINK = re.compile(r"docs/[A-Za-z_-]+\.md")


def _tracked() -> list[Path]:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    listed = subprocess.run(  # a fixed git command in the repository
        [git, "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    return [ROOT / name for name in listed.decode().split("\0") if name]


def _texts() -> list[tuple[Path, str]]:
    out = []
    for path in _tracked():
        if not path.is_file():
            continue  # deleted in the working tree, not yet committed
        try:
            out.append((path, path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            continue  # binary
    return out


def test_no_tracked_file_points_outside_the_repository() -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path, text in _texts()
        for n, line in enumerate(text.splitlines(), 1)
        if any(marker in line for marker in OUTSIDE)
    ]
    assert hits == [], "cite docs/contract.md instead:\n" + "\n".join(hits)


def test_every_cited_doc_exists() -> None:
    """Code, help texts and docs cite only docs that exist (notes/, the engineers' working
    papers, may name docs still to be written)."""
    missing = sorted(
        {
            f"{path.relative_to(ROOT)}: {doc}"
            for path, text in _texts()
            if path.relative_to(ROOT).parts[0] != "notes"
            for doc in DOC_LINK.findall(text)
            if not (ROOT / doc).is_file()
        }
    )
    assert missing == []
