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
    if use.issuer is not None or use.completed or use.done is not None:
        fields.append(use.issuer)
    if use.completed or use.done is not None:
        fields.append(use.completed)  # a completion (tether.core.sharing), not a use
    if use.done is not None:
        fields.append(use.done)  # the use's workflow had completed
    return dumps(fields)


def decode_use(data: bytes) -> CredentialUse:
    """The inverse of ``encode_use`` (also reads uses written without an owner, issuer or
    completion flag)."""
    token_id, workload, workflow, t, event_id, inherited, expires, *more = orjson.loads(data)
    owner, issuer, completed, done = (*more, None, None, None, None)[:4]
    issuer = intern(issuer) if isinstance(issuer, str) else None
    done = float(done) if isinstance(done, int | float) and done is not True else None
    # workload ids repeat across the fleet: one copy, shared by every token's state
    return CredentialUse(
        token_id,
        intern(workload),
        workflow,
        t,
        event_id,
        inherited,
        expires,
        owner is True,
        issuer,
        completed is True,
        done,
    )
