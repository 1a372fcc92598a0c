"""Values the worker holds (state snapshots, credential uses, SET claims awaiting a signature)
are sized to their content, not to orjson's serialization buffer (4 KiB and up since 3.12)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import orjson
import pytest
from test_state_codec import folded

from builders import call, delegate, started
from sdk_helpers import revocation
from streams.credential_uses import encode_use
from tether.core.credentials import CredentialUse
from tether.models.jsonbytes import dumps
from tether.models.session import PairUse, TokenState
from tether.models.state_codec import dump_session, dump_token
from tether.security import SetSigner, generate_key

HELD = 2_000


def held_bytes_each(make: Callable[[], bytes]) -> float:
    """Memory actually allocated per value when ``HELD`` results of ``make`` are kept."""
    make()  # warm any caches first
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        kept = [make() for _ in range(HELD)]
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(kept) == HELD
    return used / HELD


def test_dumps_is_orjson_output_sized_to_its_content() -> None:
    doc = {"k": "jti-1", "p": [["wl", "wf", 1.5, "ev-1", False]], "f": None}
    assert dumps(doc) == orjson.dumps(doc)
    assert dumps({"when": 1}, default=str) == b'{"when":1}'
    each = held_bytes_each(lambda: dumps(doc))
    assert each < 2 * len(dumps(doc)) + 64, each


SESSION = folded(
    [
        started("wf-1", "planner", "tok-p", t=0),
        delegate("wf-1", "planner", "researcher", "tok-p", t=1, did="d-1"),
        call("wf-1", "researcher", "tok-r", t=2),
    ]
)
TOKEN = TokenState("tok-p", 100.0, [PairUse("wl", "wf-1", 1.0, "ev-1", False)], partition=2)
USE = CredentialUse("tok-p", "wl", "wf-1", 1.0, "ev-1", False, 100.0)
SIGNER = SetSigner(generate_key("RS256"), issuer="https://tether.example")


@pytest.mark.parametrize(
    ("what", "make"),
    [
        ("session snapshot", lambda: dump_session(SESSION)),
        ("token snapshot", lambda: dump_token(TOKEN)),
        ("credential use", lambda: encode_use(USE)),
        ("SET claims awaiting a signature", lambda: SIGNER.revocation_payload(revocation())),
    ],
)
def test_values_the_worker_holds_are_sized_to_their_content(
    what: str, make: Callable[[], bytes]
) -> None:
    size = len(make())
    each = held_bytes_each(make)
    assert each < 2 * size + 64, f"{what}: {each:.0f} B held for {size} B of JSON"
