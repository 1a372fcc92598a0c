"""Revocations signed in a child process are the SETs the worker would sign itself, and a dead
signing process never costs a revocation."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from sdk_helpers import revocation
from streams.signing import SigningPool, _ready
from tether.security import SetSigner, SetVerifier, StaticKeys, generate_key

ISSUER = "https://tether.test"


@pytest.fixture(scope="module")
def signer() -> SetSigner:
    return SetSigner(generate_key("RS256"), issuer=ISSUER)


def _payloads(signer: SetSigner, n: int) -> list[bytes]:
    return [
        signer.revocation_payload(revocation("token", f"jti-{i}", rid=f"rv-{i}")) for i in range(n)
    ]


@pytest.mark.parametrize("processes", [0, 1])
def test_the_pool_signs_exactly_what_the_signer_signs(signer: SetSigner, processes: int) -> None:
    pool = SigningPool(signer, processes)
    try:
        payloads = _payloads(signer, 5)
        tokens = asyncio.run(pool.sign(payloads))
    finally:
        pool.close()
    # RS256 (PKCS#1 v1.5) is deterministic: byte for byte the in-process SETs
    assert tokens == [signer.sign_payload(p) for p in payloads]
    verifier = SetVerifier(StaticKeys([signer.public_jwk()]), issuer=ISSUER)
    assert [verifier.verify(t).revocation_id for t in tokens] == [f"rv-{i}" for i in range(5)]  # type: ignore[union-attr]
    assert pool.fallbacks == 0


def test_a_killed_signing_process_is_replaced_and_nothing_is_lost(signer: SetSigner) -> None:
    pool = SigningPool(signer, 1)
    try:

        async def scenario() -> tuple[list[bytes], list[bytes]]:
            pool.start()
            assert pool._pool is not None
            child = await asyncio.get_running_loop().run_in_executor(pool._pool, _ready)
            os.kill(child, signal.SIGKILL)
            await asyncio.sleep(0.5)
            first = await pool.sign(_payloads(signer, 3))  # signed here while it restarts
            second = await pool.sign(_payloads(signer, 3))  # by a new child
            return first, second

        first, second = asyncio.run(scenario())
    finally:
        pool.close()
    expected = [signer.sign_payload(p) for p in _payloads(signer, 3)]
    assert first == expected
    assert second == expected
    assert pool.fallbacks == 1
