"""Hands the worker's freed heap memory back to the operating system, every few seconds.

CPython keeps small objects in arenas of its own, but dict tables, lists and byte strings over
512 bytes come from the C library's ``malloc``. glibc keeps memory freed in the middle of its
heap for reuse instead of returning it, so a worker that caught up on a backlog, or recovered its
state, goes on paying for the transient buffers of that work (record batches, output records,
state snapshots) long after it freed them. ``malloc_trim(0)`` returns every free page of the
heap (not only its top). It runs on a thread of its own and ctypes releases the GIL for it, so
the event loop never waits for it. Other C libraries have no ``malloc_trim``: there it is off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable

_log = logging.getLogger("tether.memory")


def libc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None where the C library has none)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]  # a ctypes function: (int) -> int


class HeapTrimmer:
    """Calls ``malloc_trim(0)`` every ``interval_s`` seconds on a daemon thread."""

    def __init__(
        self, interval_s: float, trim: Callable[[int], int] | None = None, *, find: bool = True
    ) -> None:
        self.interval_s = interval_s
        self._trim = trim if trim is not None or not find else libc_malloc_trim()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.trims = 0

    def start(self) -> bool:
        """Start trimming; False when it is off (interval 0, or no ``malloc_trim`` here)."""
        if self.interval_s <= 0 or self._trim is None or self._thread is not None:
            return self._thread is not None
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="tether-heap-trim", daemon=True)
        self._thread.start()
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop trimming."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        trim = self._trim
        if trim is None:  # start() does not start the thread then
            return
        while not self._stopping.wait(self.interval_s):
            try:
                trim(0)
            except Exception:  # never let the trimmer take anything else down
                _log.exception("malloc_trim failed; heap trimming stops")
                return
            self.trims += 1
