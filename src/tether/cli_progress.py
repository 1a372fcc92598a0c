"""A progress bar on stderr for long inputs (only when stderr is a terminal)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

_MIN_BYTES = 8 * 1024 * 1024


class _Lines:
    """The input's lines, plus a byte counter that feeds the bar."""

    def __init__(self, stream: IO[bytes], advance: Callable[[int], object] | None) -> None:
        self._stream = stream
        self._advance = advance
        self._pending = 0

    def lines(self) -> Iterator[bytes]:
        """Iterate the input line by line."""
        return iter(self._stream)

    def tick(self, nbytes: int) -> None:
        """Account for one line of ``nbytes``."""
        if self._advance is None:
            return
        self._pending += nbytes
        if self._pending >= 1 << 20:
            self._advance(self._pending)
            self._pending = 0


@contextmanager
def progress_reader(stream: IO[bytes], name: str, *, enabled: bool) -> Iterator[_Lines]:
    """Wrap ``stream``; show a byte-based progress bar for large regular files on a TTY."""
    size = 0
    if enabled and name != "-" and sys.stderr.isatty():
        try:
            size = os.fstat(stream.fileno()).st_size
        except (OSError, ValueError):
            size = 0
    if size < _MIN_BYTES:
        yield _Lines(stream, None)
        return
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
        console=Console(stderr=True),
        redirect_stdout=False,
        redirect_stderr=False,
    ) as bar:
        task = bar.add_task(f"replaying {os.path.basename(name)}", total=size)
        yield _Lines(stream, lambda n: bar.advance(task, n))
