"""Locate the policies in Cedar source text, so that errors can name a line."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Statement:
    """One top-level statement of a policy file (a policy, or a fragment that fails to parse).

    Attributes:
        line: The 1-based line of its first token (its first annotation, usually).
        text: Its source, up to and including the closing `;`.
    """

    line: int
    text: str


def statements(source: str) -> list[Statement]:
    """Split Cedar policy text at top-level semicolons, skipping comments and string literals.

    Cedar parses a policy set positionally (its policies get ids `policy0`, `policy1`, ...), so
    the i-th statement here is the i-th policy of a file that parses.

    Args:
        source: The text of one policy file.

    Returns:
        The statements in order; trailing text without a `;` is a last statement.
    """
    found: list[Statement] = []
    start: int | None = None
    start_line = line = 1
    i, n = 0, len(source)
    while i < n:
        char = source[i]
        if char == "\n":
            line += 1
        elif char == "/" and source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end
            continue
        elif not char.isspace():
            if start is None:
                start, start_line = i, line
            if char == '"':
                i, line = _skip_string(source, i, line)
                continue
            if char == ";":
                found.append(Statement(start_line, source[start : i + 1]))
                start = None
        i += 1
    if start is not None:
        found.append(Statement(start_line, source[start:]))
    return found


def _skip_string(source: str, i: int, line: int) -> tuple[int, int]:
    """Return the index after the string literal opening at `i`, and the line it ends on."""
    i += 1
    while i < len(source) and source[i] != '"':
        step = 2 if source[i] == "\\" else 1
        line += source.count("\n", i, i + step)
        i += step
    return i + 1, line
