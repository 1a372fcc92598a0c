"""Credential uses on the wire: the worker's own compact topic between the two folds."""

from __future__ import annotations

from sys import intern

import orjson

from tether.core.credentials import CredentialUse
from tether.models.jsonbytes import dumps


def encode_use(use: CredentialUse) -> bytes:
    """A credential use on the wire (compact; the token's issuer last, when known)."""
    fields = [
        use.token_id,
        use.workload_id,
        use.workflow_id,
        use.t,
        use.event_id,
        use.inherited,
        use.expires_at,
        use.owner,
    ]
    if use.issuer is not None:
        fields.append(use.issuer)
    return dumps(fields)


def decode_use(data: bytes) -> CredentialUse:
    """The inverse of ``encode_use`` (also reads uses written without an owner or issuer)."""
    token_id, workload, workflow, t, event_id, inherited, expires, *more = orjson.loads(data)
    owner = bool(more and more[0] is True)
    issuer = intern(more[1]) if len(more) > 1 and isinstance(more[1], str) else None
    # workload ids repeat across the fleet: one copy, shared by every token's state
    return CredentialUse(
        token_id, intern(workload), workflow, t, event_id, inherited, expires, owner, issuer
    )
