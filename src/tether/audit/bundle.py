"""Evidence bundles: one workflow's events, decisions, findings and revocations, with what an
auditor needs to check them offline (docs/audit.md).

The decisions come as **chain segments**: for each decisions partition holding the workflow's
decisions, every link from the last checkpoint before its first decision to the first
checkpoint after its last one. The workflow's own decisions are given whole; every other
workflow's record in between only by its link (``seq``, ``prev``, ``hash``), so a bundle shows
no other workflow's content yet proves that nothing between the workflow's decisions was
removed, inserted or reordered, up to a signed head. The checkpoints and revocations are
signed; the public keys (``jwks``) that verify them are in the bundle: an auditor should
compare their ``kid``s (RFC 7638 thumbprints) with keys obtained independently, or pass their
own with ``--jwks``.

``build`` is pure (the caller reads the topics); ``check`` verifies a bundle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
from joserfc import jws
from joserfc.errors import JoseError

from tether.security.sets import KeyLookup, signing_alg, unverified_parts

from .chain import Link, NotChained, unseal
from .checkpoint import BadCheckpoint, Checkpoint, verify_checkpoint
from .kafka import Stored
from .verify import Entry, Issue, Report, verify_log

FORMAT: Final = "tether.audit-bundle.v1"


@dataclass(frozen=True, slots=True)
class Sources:
    """What the exporter read: each topic's records, in storage order."""

    intents: Sequence[Stored]
    decisions: Sequence[Stored]
    checkpoints: Sequence[Stored]
    findings: Sequence[Stored]
    revocations: Sequence[Stored]


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _workflow_of(value: bytes) -> object:
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return doc.get("workflow_id") if isinstance(doc, dict) else None


def build(  # noqa: PLR0912  # one pass per part of the bundle
    workflow_id: str,
    sources: Sources,
    *,
    keys: KeyLookup,
    jwks: Mapping[str, Any],
    log: str,
    created_at: str,
) -> dict[str, Any]:
    """The evidence bundle of ``workflow_id``."""
    valid: list[tuple[Checkpoint, Stored]] = []
    for rec in sources.checkpoints:
        try:
            valid.append((verify_checkpoint(rec.value, keys), rec))
        except BadCheckpoint:
            continue  # a forged checkpoint vouches for nothing; verify on the topic says so
    segments: dict[str, list[dict[str, Any]]] = {}
    used: list[Stored] = []
    by_partition: dict[int, list[tuple[Stored, Link, bool]]] = {}
    for rec in sources.decisions:
        try:
            link = unseal(rec.value).link
        except NotChained:
            continue
        mine = _workflow_of(rec.value) == workflow_id
        by_partition.setdefault(rec.partition, []).append((rec, link, mine))
    for partition, links in sorted(by_partition.items()):
        seqs = [link.seq for _, link, mine in links if mine]
        if not seqs:
            continue
        first, last = min(seqs), max(seqs)
        marks = sorted(c.seq for c, _ in valid if c.partition == partition)
        start = max((s for s in marks if s < first), default=None)
        end = min((s for s in marks if s >= last), default=None)
        lo = start if start is not None else links[0][1].seq
        hi = end if end is not None else max(link.seq for _, link, _ in links)
        segment: list[dict[str, Any]] = []
        for rec, link, mine in links:
            if not lo <= link.seq <= hi:
                continue
            item: dict[str, Any] = {"offset": rec.offset}
            if mine:
                item["value"] = _text(rec.value)
            else:
                item["link"] = {"seq": link.seq, "prev": link.prev, "hash": link.hash}
            segment.append(item)
        segments[str(partition)] = segment
        used.extend(rec for c, rec in valid if c.partition == partition and lo <= c.seq <= hi)
    revocations = []
    for rec in sources.revocations:
        try:
            _, claims = unverified_parts(rec.value)
        except ValueError:
            continue
        tether = claims.get("tether")
        if isinstance(tether, dict) and tether.get("workflow_id") == workflow_id:
            revocations.append(
                {"partition": rec.partition, "offset": rec.offset, "token": _text(rec.value)}
            )
    return {
        "format": FORMAT,
        "workflow_id": workflow_id,
        "created_at": created_at,
        "log": log,
        "jwks": dict(jwks),
        "events": _mine(sources.intents, workflow_id),
        "decisions": segments,
        "checkpoints": [
            {"partition": r.partition, "offset": r.offset, "token": _text(r.value)} for r in used
        ],
        "findings": _mine(sources.findings, workflow_id),
        "revocations": revocations,
    }


def _mine(records: Iterable[Stored], workflow_id: str) -> list[dict[str, Any]]:
    return [
        {"partition": r.partition, "offset": r.offset, "value": _text(r.value)}
        for r in records
        if _workflow_of(r.value) == workflow_id
    ]


class BadBundle(ValueError):
    """Not a bundle this version can read."""


def check(bundle: object, keys: KeyLookup) -> Report:
    """Verify a bundle: its chain segments against its checkpoints, and its revocations'
    signatures, with ``keys``.

    Raises:
        BadBundle: the document is not an evidence bundle.
    """
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise BadBundle(f"not a {FORMAT} document")
    workflow = bundle.get("workflow_id")
    segments = bundle.get("decisions")
    if not isinstance(segments, dict) or not isinstance(workflow, str):
        raise BadBundle("no decisions or workflow_id")
    entries: list[Entry] = []
    foreign: list[Issue] = []
    try:
        for key, segment in segments.items():
            partition = int(key)
            for item in segment:
                where = f"partition {partition} offset {item.get('offset')}"
                if "value" in item:
                    value = str(item["value"]).encode()
                    entries.append(Entry(value, where, partition))
                    if _workflow_of(value) != workflow:
                        foreign.append(
                            Issue(
                                "inserted", partition, None, where, f"not a decision of {workflow}"
                            )
                        )
                else:
                    link = item["link"]
                    stub = Link(partition, int(link["seq"]), str(link["prev"]), str(link["hash"]))
                    entries.append(Entry(b"", where, partition, stub=stub))
        tokens = [
            (
                str(c["token"]).encode(),
                f"checkpoint partition {c.get('partition')} offset {c.get('offset')}",
            )
            for c in bundle.get("checkpoints", [])
        ]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadBundle(f"malformed bundle: {exc!r}") from exc
    report = verify_log(entries, tokens, keys)
    report.issues.extend(foreign)
    for rev in bundle.get("revocations", []):
        where = f"revocation partition {rev.get('partition')} offset {rev.get('offset')}"
        problem = _signature_problem(str(rev.get("token", "")).encode(), keys)
        if problem is not None:
            report.issues.append(Issue("bad_signature", None, None, where, problem))
    return report


def _signature_problem(token: bytes, keys: KeyLookup) -> str | None:
    try:
        header, _ = unverified_parts(token)
    except ValueError as exc:
        return f"not a signed record: {exc}"
    kid = header.get("kid")
    key = keys.find(kid) if isinstance(kid, str) else None
    if key is None:
        return f"signed with unknown key {kid!r}"
    try:
        jws.deserialize_compact(token, key, algorithms=[signing_alg(key)])
    except (JoseError, ValueError) as exc:
        return f"signature does not verify ({exc})"
    return None
