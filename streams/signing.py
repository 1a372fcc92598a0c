"""Signing revocations off the worker's event loop, in a process of its own.

An RS256 signature costs a few hundred microseconds and ``cryptography`` holds the GIL while it
computes one, so a signing *thread* takes that time from the event loop (and waits up to the
interpreter's switch interval for the GIL each time). ``SigningPool`` hands the serialized
claims to a child process that holds only the private key; the event loop builds the claims and
awaits the tokens. If the child is gone (killed, out of memory), the batch is signed on a thread
in the worker instead and a new child is started: a revocation is never dropped for want of a
signer.

The revocations findings raise are signed on the event loop instead (``sign_now``: the first
``TETHER_SIGNING_INLINE_MAX`` of a batch, as each is raised; the worker decides): a round trip
to the child passes through four threads and two processes, each waiting for a core on a busy
host, and measured ~10 ms more per detection at half the worker's maximum rate
(benchmarks/latency_hops.py) than the ~0.3 ms a signature costs here. Task-completion
revocations (routine, and ~97% of all in the benchmark fleet) and bursts of findings still go
to the child, which signs them while the next batch is applied.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from joserfc.jwk import JWKRegistry

from tether.models.outputs import Revocation
from tether.security import SetSigner

_log = logging.getLogger("tether.worker")

_child: SetSigner | None = None  # the signer inside a signing process


def signed_inline(
    revocations: Sequence[Revocation], budget: int
) -> tuple[list[Revocation], list[Revocation]]:
    """The one rule for signing on the event loop: ``(here, later)``.

    The revocations a finding raised (``finding_id`` set) are signed here, all of them, if
    they fit in ``budget`` (what is left of the step's ``TETHER_SIGNING_INLINE_MAX``); the rest
    (task-completion revocations, or every one of a burst that does not fit) go to the signing
    process. A burst is never split: its revocations leave together, in one place."""
    urgent = [r for r in revocations if r.finding_id is not None]
    if not urgent or len(urgent) > budget:
        return [], list(revocations)
    return urgent, [r for r in revocations if r.finding_id is None]


def _start_child(jwk: dict[str, Any], issuer: str) -> None:
    global _child  # noqa: PLW0603  # one signer per child process
    if sys.platform.startswith("linux"):  # die with the worker, even on SIGKILL
        import ctypes  # noqa: PLC0415  # linux only

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when to stop
    _child = SetSigner(JWKRegistry.import_key(jwk), issuer=issuer)


def _sign_in_child(payloads: Sequence[bytes]) -> list[bytes]:
    assert _child is not None  # noqa: S101  # set by the initializer
    sign = _child.sign_payload
    return [sign(p) for p in payloads]


def _ready() -> int:
    return os.getpid()


class SigningPool:
    """Signs serialized SET claims with ``signer``'s key in ``processes`` child processes (0:
    on a thread of the calling process)."""

    def __init__(self, signer: SetSigner, processes: int = 1) -> None:
        self.signer = signer
        self.processes = processes
        self.inline = 0  # batches signed by ``sign_now``
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="tether-sign")
        self._pool: ProcessPoolExecutor | None = None
        self.fallbacks = 0
        self.queued = 0  # revocations handed to ``sign`` and not signed yet

    def start(self) -> None:
        """Start the child processes now (the first revocation should not wait for them)."""
        if self.processes > 0 and self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_child,
                initargs=(self.signer.private_jwk(), self.signer.issuer),
            )
            for _ in range(self.processes):
                self._pool.submit(_ready)

    def sign_now(self, payloads: Sequence[bytes]) -> list[bytes]:
        """The compact SETs of ``payloads``, signed on the calling thread (an error propagates:
        the caller hands the revocations to ``sign`` instead)."""
        sign = self.signer.sign_payload
        tokens = [sign(p) for p in payloads]
        self.inline += 1
        return tokens

    async def sign(self, payloads: Sequence[bytes]) -> list[bytes]:
        """The compact SETs of ``payloads``, in order."""
        self.queued += len(payloads)
        try:
            return await self._sign(payloads)
        finally:
            self.queued -= len(payloads)

    async def _sign(self, payloads: Sequence[bytes]) -> list[bytes]:
        loop = asyncio.get_running_loop()
        if self.processes > 0:
            self.start()
            pool: Executor | None = self._pool
            try:
                return await loop.run_in_executor(pool, _sign_in_child, list(payloads))
            except Exception as exc:  # a broken child must not drop a revocation
                self.fallbacks += 1
                _log.warning("signing process failed (%r): signing here, restarting it", exc)
                self._restart()
        return await loop.run_in_executor(self._thread, self._sign_here, list(payloads))

    def _sign_here(self, payloads: list[bytes]) -> list[bytes]:
        sign = self.signer.sign_payload
        return [sign(p) for p in payloads]

    def _restart(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the child processes and the thread."""
        self._restart()
        self._thread.shutdown(wait=False)
