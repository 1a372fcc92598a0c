"""Authentic revocations: tether's records as signed Security Event Tokens (SSF 1.0 / CAEP 1.0).

``sets`` signs and verifies (pure), ``caep`` is the SSF/CAEP vocabulary (pure), ``keys`` reads
and writes keys and JWKS files and URLs (the only I/O). docs/contract.md ("Signed revocations")
has the wire format.
"""

from tether.security.keys import (
    KeySource,
    generate_key,
    signer_from_settings,
    verifier_from_settings,
)
from tether.security.sets import (
    REJECT_REASONS,
    RejectReason,
    SetRejected,
    SetSigner,
    SetVerifier,
    StaticKeys,
    peek,
)

__all__ = [
    "REJECT_REASONS",
    "KeySource",
    "RejectReason",
    "SetRejected",
    "SetSigner",
    "SetVerifier",
    "StaticKeys",
    "generate_key",
    "peek",
    "signer_from_settings",
    "verifier_from_settings",
]
