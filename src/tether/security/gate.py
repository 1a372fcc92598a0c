"""The source gate: between decoding and the core, decides how far to believe each record.

For every decoded event it checks, in order: the record's proof (which registered source sent
it), what that source may assert (``sources.yaml``), and the presented token, if any (against
the trusted issuers). The outcome is one of:

- the event, labelled with a ``Trust`` (its source, whether it was authenticated, whether its
  credential was verified, and which responses it may not cause), for the core to apply;
- a ``Rejected`` (``unauthenticated_source`` / ``unauthorized_assertion``) for the dead-letter
  topic, in ``enforce`` mode: the record changes no state;
- ``None``: the presented token failed verification and the event is not applied (enforce); a
  ``credential_invalid`` finding went to ``out``.

In ``audit`` mode nothing is refused and no response is held back: every record is applied and
labelled (``authenticated: false`` when it would have been refused). The rules and their reasons
are in docs/SECURITY.md. The gate does no I/O of its own (key sets reread through ``KeySource``).
"""

from __future__ import annotations

import binascii
import hashlib
from binascii import a2b_base64
from collections.abc import Callable
from hmac import compare_digest
from time import monotonic
from typing import Any, Final

from tether.core import codes as C
from tether.core.config import DetectionConfig
from tether.core.violations import Outbox, Stamp, Violation, emit
from tether.models.codec import Rejected
from tether.models.events import Credential, InputEvent, Trust
from tether.security.proof import (
    _MAC_B64_LEN,
    _MARK,
    _SEARCH,
    _TAIL,
    _URL_TO_STD,
    check_mac,
    hmac_states,
    parse_header,
    split,
)
from tether.security.sources import Registry, Source, secret_of
from tether.security.tokens import TokenVerifier

Initiator = Callable[[str], str | None]
"""The initiator of a workflow, if tether has seen it start (a session lookup)."""

_FIRED_MAX: Final = 65536
_HEADERS_MAX: Final = 4096
_MARK_LEN: Final = len(_MARK)
_TAIL_LEN: Final = len(_TAIL)
_RECHECK_S: Final = 1.0  # how long a proof header's source and key are taken as known

_Signer = tuple[Source | str, bytes, float, bool, tuple[Any, Any] | None]
"""A proof header's source and secret (or why it has none), when to look again, whether its
payload is unencoded (RFC 7797), and the HMAC states with the key and header hashed in."""


class SourceGate:
    """Authenticates and authorizes input records (see the module docstring)."""

    def __init__(
        self,
        registry: Registry | None,
        tokens: TokenVerifier | None,
        cfg: DetectionConfig,
    ) -> None:
        self.registry = registry
        self.tokens = tokens
        self.cfg = cfg
        self.enforce = registry is not None and registry.mode == "enforce"
        self._signers: dict[bytes, _Signer] = {}
        self._trusts: dict[tuple[object, ...], Trust] = {}
        # the trust of every authorized, unverified event of a source whose responses do not
        # depend on the workflow (it checks credentials and may complete any workflow)
        self._static: dict[str, Trust] = {
            s.name: self._trust(s.name, True, False, ())
            for s in (registry.sources.values() if registry is not None else ())
            if s.trusted_credentials and s.complete == "any"
        }
        self._fired: set[str] = set()

    def admit(
        self, data: bytes, event: InputEvent, initiator: Initiator, now: Stamp, out: Outbox
    ) -> InputEvent | Rejected | None:
        """Label ``event`` (decoded from ``data``), refuse it, or consume it (see module)."""
        if self.enforce and event.presented_token is None:
            trust = self._fast(data, event, initiator)
            if trust is not None:
                event.__dict__["trust"] = trust
                return event  # (anything else takes the full path, which says why)
        return self._admit(data, event, initiator, now, out)

    def _admit(
        self, data: bytes, event: InputEvent, initiator: Initiator, now: Stamp, out: Outbox
    ) -> InputEvent | Rejected | None:
        source: Source | None = None
        problem: tuple[str, str] | None = None
        if self.registry is not None:
            found = self._authenticate(data)
            if isinstance(found, str):
                problem = ("unauthenticated_source", found)
            else:
                source = found
                why = _authorize(source, event, initiator)
                if why is not None:
                    problem = ("unauthorized_assertion", why)
        if problem is not None and self.enforce:
            return Rejected(problem[0], problem[1], event.workflow_id, event.event_id)  # type: ignore[arg-type]  # one of the two reasons
        authenticated = source is not None and problem is None
        token = event.presented_token
        verified = False
        if token is not None:
            verified = self._verify_token(event, token, authenticated, source, now, out)
            if not verified and self.enforce:
                return None
        if source is not None and authenticated and not verified:
            why = _asserted_credential(source, event)
            if why is not None:
                if self.enforce:
                    return Rejected(
                        "unauthorized_assertion", why, event.workflow_id, event.event_id
                    )
                authenticated = False
        withhold: tuple[str, ...] = ()
        if self.enforce and source is not None:
            withhold = _withhold(source, event, initiator, verified)
        if self.registry is None and not verified and token is None:
            return event  # no registry and nothing verified: today's behaviour, unlabelled
        event.__dict__["trust"] = self._trust(
            source.name if source is not None else None, authenticated, verified, withhold
        )
        return event

    def _fast(  # noqa: PLR0911  # a flat hot path: one early exit per check
        self, data: bytes, event: InputEvent, initiator: Initiator
    ) -> Trust | None:
        """The hot path of ``enforce``: a well-formed, authorized record from a known source
        (the rules of ``_authenticate``, ``_authorize`` and ``_asserted_credential``, inlined
        for the common cases; None sends the record down the full path, which says why)."""
        if not data.endswith(_TAIL):
            return None  # (the full path forgives trailing whitespace)
        at = data.rfind(_MARK, max(0, len(data) - _SEARCH))
        if at < 0:
            return None
        parts = data[at + _MARK_LEN : -_TAIL_LEN].split(b".")
        if len(parts) != 3 or parts[1] or len(parts[2]) != _MAC_B64_LEN:  # noqa: PLR2004
            return None
        signer = self._signers.get(parts[0])
        if signer is None or monotonic() >= signer[2]:
            return None
        source, _, _, _, states = signer
        if type(source) is not Source or states is None:
            return None
        try:
            mac = a2b_base64(parts[2].translate(_URL_TO_STD) + b"=", strict_mode=True)
        except binascii.Error:
            return None
        inner, outer = states[0].copy(), states[1].copy()
        inner.update(memoryview(data)[:at])
        inner.update(b"}")
        outer.update(inner.digest())
        if not compare_digest(outer.digest(), mac):
            return None
        workloads = source.workloads
        kind = event.event_type
        agent = event.agent.workload_id
        if kind not in source.event_types or agent not in workloads:
            return None
        if kind != "tool_call.intent" and not (
            (kind == "workflow.started" and source.start and source.workflow_ids is None)
            or (kind == "delegation.granted" and agent in source.delegate_for)
            or (kind == "workflow.completed" and source.complete == "any")
        ):
            return None
        cred = event.credential
        if cred is not None and not source.trusted_credentials and cred.subject not in workloads:
            return None
        static = self._static.get(source.name)
        if static is not None:
            return static
        return self._trust(source.name, True, False, _withhold(source, event, initiator, False))

    def _verify_token(
        self,
        event: InputEvent,
        token: str,
        authenticated: bool,
        source: Source | None,
        now: Stamp,
        out: Outbox,
    ) -> bool:
        """Put the verified credential in place of the asserted one; False (and a finding)
        when the token does not verify."""
        cred = self.tokens.verify(token) if self.tokens is not None else "no trusted issuers"
        if isinstance(cred, str):
            self._invalid(event, token, cred, authenticated, source, now, out)
            return False
        _replace_credential(event, cred)
        return True

    def _authenticate(self, data: bytes) -> Source | str:
        proof = split(data)
        if isinstance(proof, str):
            return proof
        now = monotonic()
        signer = self._signers.get(proof.header_b64)
        if signer is None or now >= signer[2]:
            signer = self._signer(proof.header_b64, now)
        found, secret, _, unencoded, _ = signer
        if isinstance(found, str):
            return found
        if not check_mac(proof, secret, unencoded=unencoded):
            return f"the proof does not verify with the key of source {found.name!r}"
        return found

    def _signer(self, header_b64: bytes, now: float) -> _Signer:
        """The source and secret a proof header names (rechecked every ``_RECHECK_S``, so a
        key removed from its key set stops verifying once the set is reread)."""
        header = parse_header(header_b64)
        signer: _Signer
        if isinstance(header, str):
            signer = (header, b"", now + _RECHECK_S, True, None)
        else:
            assert self.registry is not None  # noqa: S101  # only called with a registry
            source = self.registry.sources.get(header.source)
            key = source.keys.find(header.kid) if source is not None else None
            if source is None:
                why = f"source {header.source!r} is not in the registry"
                signer = (why, b"", now + _RECHECK_S, True, None)
            elif key is None:
                why = f"source {source.name!r} has no key {header.kid!r}"
                signer = (why, b"", now + _RECHECK_S, True, None)
            else:
                secret = secret_of(key)
                states = hmac_states(secret, header_b64 + b".") if header.unencoded else None
                signer = (source, secret, now + _RECHECK_S, header.unencoded, states)
        if len(self._signers) >= _HEADERS_MAX:
            self._signers.clear()
        self._signers[header_b64] = signer
        return signer

    def _invalid(
        self,
        event: InputEvent,
        token: str,
        why: str,
        authenticated: bool,
        source: Source | None,
        now: Stamp,
        out: Outbox,
    ) -> None:
        """``credential_invalid``: quarantine the presenter, only on its own source's word.

        No token is revoked: an invalid token's ``jti`` is the presenter's word, and revoking
        it would let anyone revoke any token id by presenting garbage under that id."""
        digest = hashlib.sha256(token.encode()).hexdigest()[:16]
        agent = event.agent.workload_id
        withhold = () if authenticated and self.enforce else ("quarantine_workload",)
        v = Violation(
            code=C.CREDENTIAL_INVALID,
            key=(event.workflow_id, agent, digest),
            workflow_id=event.workflow_id,
            workload_id=agent,
            event_time=event.t,
            evidence=(event.event_id,),
            summary=f"{agent} presented a token that does not verify: {why}",
            trust=self._trust(source.name if source else None, authenticated, False, withhold),
        )
        fid = v.finding_id
        if fid in self._fired or not self.cfg.enabled(v.code):
            return
        if len(self._fired) >= _FIRED_MAX:
            self._fired.clear()
        self._fired.add(fid)
        emit(v, self.cfg, now, out)

    def _trust(
        self, source: str | None, authenticated: bool, verified: bool, withhold: tuple[str, ...]
    ) -> Trust:
        key = (source, authenticated, verified, withhold)
        trust = self._trusts.get(key)
        if trust is None:
            trust = Trust(
                source=source,
                authenticated=authenticated,
                credential_verified=verified,
                withhold=list(withhold),
            )
            self._trusts[key] = trust
        return trust


def _authorize(source: Source, event: InputEvent, initiator: Initiator) -> str | None:  # noqa: PLR0911  # one return per rule reads best
    """Why ``source`` may not assert ``event`` (None: it may)."""
    kind = event.event_type
    name = source.name
    if kind not in source.event_types:
        return f"source {name!r} may not emit {kind}"
    agent = event.agent.workload_id
    if agent not in source.workloads:
        return f"source {name!r} may not speak for workload {agent}"
    if kind == "workflow.started":
        if not source.start:
            return f"source {name!r} may not start workflows (assert grants)"
        ids = source.workflow_ids
        if ids is not None and event.workflow_id not in ids:
            return f"source {name!r} may not start workflow {event.workflow_id!r} (workflow_ids)"
    if kind == "delegation.granted" and agent not in source.delegate_for:
        return f"source {name!r} may not grant delegations on behalf of {agent}"
    if kind == "workflow.completed" and source.complete != "any":
        if source.complete == "none":
            return f"source {name!r} may not complete workflows"
        started_by = initiator(event.workflow_id)
        if started_by is None:
            return f"source {name!r} may complete only workflows it started; this one has not"
        if started_by not in source.workloads:
            return f"source {name!r} may not complete a workflow started by {started_by}"
    return None


def _asserted_credential(source: Source, event: InputEvent) -> str | None:
    """An unverified credential is believed only for subjects its source speaks for."""
    cred = event.credential
    if cred is None or source.trusted_credentials or cred.subject in source.workloads:
        return None
    return (
        f"source {source.name!r} asserts a credential of {cred.subject}, a workload it may not "
        "speak for (present the token itself to have it verified)"
    )


def _withhold(
    source: Source, event: InputEvent, initiator: Initiator, verified: bool
) -> tuple[str, ...]:
    """The responses this event may not cause: a token only on a verified credential or a
    source trusted to check them; a workflow only on the word of an orchestrator or of a source
    that speaks for the workflow's initiator."""
    withhold: list[str] = []
    if not verified and not source.trusted_credentials:
        withhold.append("revoke_token")
    if source.complete != "any" and event.event_type != "workflow.started":
        started_by = initiator(event.workflow_id)
        if started_by is None or started_by not in source.workloads:
            withhold.append("revoke_workflow")
    return tuple(withhold)


def _replace_credential(event: InputEvent, cred: Credential) -> None:
    """The verified credential stands in for the asserted one (the event is fresh from the
    decoder and not shared). The token itself is dropped: a check that waits keeps its event
    in the session's state, and a bearer token has no business in a changelog topic."""
    cred.__dict__["expires_t"] = cred.expires_at.timestamp()
    event.__dict__["credential"] = cred
    event.__dict__["presented_token"] = None
