"""The registry sync writes only verified revocations; what this process signed itself is
recognised by its exact bytes and needs no second verification."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from sdk_helpers import revocation
from streams.registry_sync import REGISTRY_FETCH_WAIT_MS, LocalSignatures, RegistrySync
from tether.adapters.memory_registry import MemoryRegistry
from tether.security import SetSigner, SetVerifier, StaticKeys, generate_key
from tether.settings import Settings

ISSUER = "https://tether.test"


@dataclass
class Msg:
    """What the sync reads of a confluent-kafka message."""

    payload: bytes | None
    at: int = 0
    part: int = 0

    def error(self) -> Any:
        return None

    def value(self) -> bytes | None:
        return self.payload

    def topic(self) -> str:
        return "revocations"

    def offset(self) -> int:
        return self.at

    def partition(self) -> int:
        return self.part


@pytest.fixture(scope="module")
def signer() -> SetSigner:
    return SetSigner(generate_key("ES256"), issuer=ISSUER)


class CountingVerifier(SetVerifier):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def verify(self, token: bytes | str) -> Any:
        self.calls += 1
        return super().verify(token)


def _sync(
    signer: SetSigner, local: LocalSignatures, hold_s: float = 0.0
) -> tuple[RegistrySync, CountingVerifier]:
    verifier = CountingVerifier(StaticKeys([signer.public_jwk()]), issuer=ISSUER)
    sync = RegistrySync(Settings(), MemoryRegistry(), verifier, local=local, hold_s=hold_s)  # type: ignore[arg-type]
    return sync, verifier


def test_a_revocation_signed_here_is_taken_without_verifying_it_again(signer: SetSigner) -> None:
    local = LocalSignatures()
    rev = revocation("token", "jti-1")
    token = signer.revocation(rev)
    local.add(token, rev)
    sync, verifier = _sync(signer, local)
    assert sync.parse([Msg(token)]) == [rev]  # type: ignore[list-item]
    assert verifier.calls == 0
    assert len(local) == 0  # taken once: read again (a duplicate), it is verified as usual
    assert sync.parse([Msg(token)]) == [rev]  # type: ignore[list-item]  # written again: harmless
    assert verifier.calls == 1


def test_other_records_are_verified_and_forgeries_are_rejected(signer: SetSigner) -> None:
    local = LocalSignatures()
    mine = revocation("token", "jti-1", rid="rv-1")
    local.add(signer.revocation(mine), mine)
    sync, verifier = _sync(signer, local)
    theirs = revocation("token", "jti-2", rid="rv-2")  # signed by another worker (same key)
    forged = SetSigner(generate_key("ES256"), issuer=ISSUER).revocation(
        revocation("token", "jti-1", rid="rv-1")  # same claims as ``mine``, another key
    )
    assert sync.parse([Msg(signer.revocation(theirs)), Msg(forged)]) == [theirs]  # type: ignore[list-item]
    assert verifier.calls == 2
    assert sync.skipped == 1


def test_local_signatures_are_bounded() -> None:
    local = LocalSignatures(capacity=3)
    for i in range(10):
        local.add(f"token-{i}".encode(), revocation("token", f"jti-{i}"))
    assert len(local) == 3
    assert local.take(b"token-0") is None
    assert local.take(b"token-9") is not None


def test_a_quiet_topic_is_polled_10_times_a_second_not_200(signer: SetSigner) -> None:
    sync, _ = _sync(signer, LocalSignatures())
    config = sync._config
    assert config["fetch.wait.max.ms"] == REGISTRY_FETCH_WAIT_MS == 100
    assert "fetch.min.bytes" not in config  # one byte: a revocation is answered as it arrives
    assert config["group.id"].endswith(".registry")


def test_a_record_whose_key_is_unknown_stops_its_partition_instead_of_being_skipped(
    signer: SetSigner,
) -> None:
    sync, _ = _sync(signer, LocalSignatures(), hold_s=60.0)
    rotated = SetSigner(generate_key("ES256"), issuer=ISSUER)  # not in the JWKS (yet)
    first = revocation("token", "jti-1", rid="rv-1")
    unknown = revocation("token", "jti-2", rid="rv-2")
    after = revocation("token", "jti-3", rid="rv-3")
    elsewhere = revocation("token", "jti-4", rid="rv-4")
    batch = [
        Msg(signer.revocation(first), at=10),
        Msg(rotated.revocation(unknown), at=11),
        Msg(signer.revocation(after), at=12),
        Msg(signer.revocation(elsewhere), at=5, part=1),
    ]
    assert sync.parse(batch) == [first, elsewhere]  # type: ignore[arg-type]
    assert sync.skipped == 0
    assert sync.held == 1
    offsets = {tp.partition: tp.offset for tp in sync._offsets(batch)}  # type: ignore[arg-type]
    assert offsets == {0: 11, 1: 6}  # never committed past the record that waits
    # read again before the key is known: nothing it skips is committed past the record
    sync._stopped_at = {}
    again = [Msg(rotated.revocation(unknown), at=11), Msg(signer.revocation(after), at=12)]
    sync._waiting[0].reread = True
    assert sync.parse(again) == []  # type: ignore[arg-type]
    stale = [Msg(signer.revocation(after), at=12)]
    sync._stopped_at = {}
    assert {tp.partition: tp.offset for tp in sync._offsets(stale)} == {0: 11}  # type: ignore[arg-type]
