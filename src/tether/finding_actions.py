"""Operators' actions on findings: ``tether finding ack|resolve|suppress FINDING_ID``.

Each action is a record (who, why, when; ``FindingAction``) signed with an operator's key as a
compact JWS and published on ``<prefix>finding-actions``, keyed by the finding id: the topic is
the audit trail, and the signature says which operator key vouched for it (never the worker's:
a key bound to another issuer than the operators' is refused).

``suppress`` puts an exception in force by writing it into the tuning file the workers read
(docs/tuning.md), scoped to the finding's code, acting workload, workflow (exactly) and tool,
until ``--until``. Why the file and not the worker consuming the topic: the file is already
re-read on change by every worker, validated, revisioned and reviewed like the rest of the
tuning; a suppression is then one more reviewed, expiring exception, visible in the file, and
no new input path into the worker exists for an attacker who can write a topic. The fields the
exception is scoped to come from the finding as tether published it (the findings topic, which
only the worker writes, or a file of tether's output the operator names), never typed by hand.

The key is the one ``tether revoke`` and ``tether reinstate`` use, loaded the same way
(:func:`tether.security.operators.load_operator_signer`: ``TETHER_OPERATOR_KEY``, bound to
``TETHER_OPERATOR_ISSUER``; a worker's key is refused). A reader verifies a record against the
operators' JWKS (``TETHER_OPERATOR_JWKS``, :func:`verify_action_with`), as watchers verify a
reinstatement: one operator key, one way to load it, one set of keys trusted for it.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson
import yaml
from joserfc import jws
from pydantic import AwareDatetime, Field

from tether.core.config import TuningException
from tether.models.common import Record
from tether.models.outputs import Finding
from tether.security.sets import DEFAULT_OPERATOR_ISSUER, KEY_ISSUER, KeyLookup
from tether.tuning import TuningError, parse

if TYPE_CHECKING:
    from tether.security.operators import OperatorSigner
    from tether.settings import Settings

ActionKind = Literal["ack", "resolve", "suppress"]
AUDIENCE: Final = "urn:tether:finding-actions"
CLAIM: Final = "tether_finding_action"
DEFAULT_SUPPRESS: Final = timedelta(hours=24)
MAX_SUPPRESS: Final = timedelta(days=90)
"""The longest a suppression may last: a longer one belongs in the tuning file, reviewed."""


class FindingAction(Record):
    """One operator action on one finding (a record of ``<prefix>finding-actions``)."""

    kind: Literal["finding_action"] = "finding_action"
    action_id: str
    action: ActionKind
    finding_id: str
    by: str = Field(min_length=1, description="the operator")
    reason: str = Field(min_length=1)
    at: AwareDatetime = Field(description="when the operator acted")
    until: AwareDatetime | None = Field(None, description="suppress: the exception's expiry")
    code: str | None = None
    workload_id: str | None = None
    workflow_id: str | None = None
    tool: str | None = None
    exception: str | None = Field(None, description="suppress: the id of the exception written")
    tuning_file: str | None = Field(None, description="suppress: the tuning file written")
    tuning_revision: str | None = Field(
        None, description="suppress: the file's revision with the exception"
    )


def action_id(action: str, finding_id: str, by: str, at: datetime) -> str:
    """Derived from what was done to what, by whom and when."""
    text = "\x1f".join((action, finding_id, by, at.isoformat()))
    return "fa-" + hashlib.sha256(text.encode()).hexdigest()[:32]


def sign_action(operator: OperatorSigner, action: FindingAction) -> bytes:
    """The compact JWS of ``action``, signed with the operator's key (audience: finding
    actions, so the record is never mistaken for a revocation SET)."""
    claims = {
        "iss": operator.signer.issuer,
        "aud": AUDIENCE,
        "iat": int(action.at.timestamp()),
        "jti": action.action_id,
        CLAIM: action.model_dump(mode="json", exclude_none=True),
    }
    return operator.signer.sign_payload(orjson.dumps(claims))


def verify_action_with(data: bytes, settings: Settings) -> FindingAction:
    """The action a record holds, verified against the operators' JWKS (``TETHER_OPERATOR_JWKS``,
    else the development one) and ``TETHER_OPERATOR_ISSUER``, as reinstatements are.

    Raises:
        ValueError: no operator JWKS configured, or the record does not verify.
    """
    from tether.security.operators import operator_key_source  # noqa: PLC0415

    keys = operator_key_source(settings)
    if keys is None:
        raise ValueError("no operator is trusted: set TETHER_OPERATOR_JWKS")
    return verify_action(data, keys, settings.operator_issuer)


def verify_action(
    data: bytes, keys: KeyLookup, issuer: str = DEFAULT_OPERATOR_ISSUER
) -> FindingAction:
    """The action a record holds, if an operator key of ``keys`` bound to ``issuer`` signed it.

    Raises:
        ValueError: unsigned, unknown key, bad signature, or another issuer or audience.
    """
    try:
        header = orjson.loads(_b64(data.split(b".")[0]))
    except (ValueError, IndexError) as exc:
        raise ValueError("not a compact JWS") from exc
    kid = header.get("kid") if isinstance(header, dict) else None
    key = keys.find(kid) if isinstance(kid, str) else None
    if key is None:
        raise ValueError(f"unknown key {kid!r}")
    if key.get(KEY_ISSUER) != issuer:
        raise ValueError(f"key {kid!r} is not bound to the operators' issuer {issuer!r}")
    alg = header.get("alg")
    if alg not in ("RS256", "ES256"):
        raise ValueError(f"algorithm {alg!r} not accepted")
    try:
        obj = jws.deserialize_compact(data, key, algorithms=[alg])
    except Exception as exc:  # joserfc raises several types for a bad signature
        raise ValueError(f"bad signature: {exc}") from exc
    claims = orjson.loads(obj.payload)
    if claims.get("iss") != issuer or claims.get("aud") != AUDIENCE:
        raise ValueError("wrong issuer or audience")
    return FindingAction.model_validate(claims[CLAIM])


def _b64(segment: bytes) -> bytes:
    import base64  # noqa: PLC0415

    return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))


def parse_until(text: str | None, now: datetime) -> datetime:
    """``--until``: RFC 3339 with a zone, or a duration from now (``12h``, ``7d``, ``30m``).

    Raises:
        ValueError: unreadable, not in the future, or further than ``MAX_SUPPRESS``.
    """
    if text is None:
        until = now + DEFAULT_SUPPRESS
    else:
        m = re.fullmatch(r"\s*(\d+)\s*([mhd])\s*", text)
        if m:
            unit = {"m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
            until = now + timedelta(**{unit: int(m.group(1))})
        else:
            try:
                until = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
            except ValueError as exc:
                raise ValueError(f"--until {text!r}: RFC 3339 (with a zone) or 30m/12h/7d") from exc
            if until.tzinfo is None:
                raise ValueError(f"--until {text!r} needs a zone (Z or +hh:mm)")
    if until <= now:
        raise ValueError("--until must be in the future")
    if until - now > MAX_SUPPRESS:
        raise ValueError(
            f"--until is more than {MAX_SUPPRESS.days} days away: a longer exception belongs in "
            "the tuning file, reviewed"
        )
    return until.astimezone(UTC)


def find_in_lines(lines: Iterable[bytes], finding_id: str) -> Finding | None:
    """The finding ``finding_id`` among JSON lines of tether's output (the last one wins)."""
    found = None
    needle = finding_id.encode()
    for line in lines:
        if needle not in line:
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if (
            isinstance(doc, dict)
            and doc.get("kind") == "finding"
            and doc.get("finding_id") == finding_id
        ):
            found = Finding.model_validate(doc)
    return found


def glob_escape(text: str) -> str:
    """``text`` as an fnmatch pattern matching only itself."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def suppression(finding: Finding, *, action: str, reason: str, until: datetime) -> TuningException:
    """The exception a suppression puts in force: this finding's code, actor, workflow, tool."""
    return TuningException(
        id=f"suppress-{finding.finding_id}-{action[3:11]}",
        reason=reason,
        expires=until,
        codes=frozenset({finding.code}),
        workload=finding.workload_id,
        tool=finding.tool,
        workflow=glob_escape(finding.workflow_id),
    )


def with_exception(text: str, exc: TuningException, where: str) -> str:
    """``text`` (a tuning file) with ``exc`` appended to its ``exceptions``, comments and layout
    kept. The result is validated and must hold exactly the old exceptions plus this one.

    Raises:
        TuningError: the file is invalid, or cannot be edited safely (the message says what to
            add by hand).
    """
    before = parse(text, where)
    item = _flow(exc)
    root = yaml.compose(text) if text.strip() else None
    node = None
    if isinstance(root, yaml.MappingNode):
        for k, v in root.value:
            if k.value == "exceptions":
                node = v
    base = text if text.endswith("\n") or not text else text + "\n"
    if node is None:
        new = base + "exceptions:\n  - " + item + "\n"
    elif isinstance(node, yaml.SequenceNode) and node.value and not node.flow_style:
        last = node.value[-1]
        pos = last.end_mark.index
        if last.end_mark.column != 0:
            nl = text.find("\n", pos)
            pos = len(text) if nl < 0 else nl + 1
        src = text if pos <= len(text) else base
        prefix = "" if pos == 0 or src[pos - 1 : pos] == "\n" else "\n"
        new = src[:pos] + prefix + " " * node.start_mark.column + "- " + item + "\n" + src[pos:]
    else:  # exceptions: (empty), [] or a flow list: rewritten as a block list
        items = [_flow(e) for e in before.exceptions] + [item]
        block = "".join("\n  - " + i for i in items)
        new = text[: node.start_mark.index].rstrip(" ") + block + text[node.end_mark.index :]
        if not new.endswith("\n"):
            new += "\n"
    after = parse(new, where)
    if after.exceptions != [*before.exceptions, exc] or after.codes != before.codes:
        raise TuningError(
            f"{where}: cannot add the exception safely; add it under exceptions: by hand:\n"
            f"  - {item}"
        )
    return new


def _flow(exc: TuningException) -> str:
    doc: dict[str, Any] = exc.model_dump(mode="json", exclude_none=True)
    doc["codes"] = sorted(exc.codes)
    if not doc["codes"]:
        del doc["codes"]
    return orjson.dumps(doc).decode()


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` at once (a worker polling it never reads half a file)."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def scan_group() -> str:
    """A throwaway consumer group id for reading the findings topic (nothing is committed)."""
    return f"tether-cli-finding-{uuid.uuid4().hex[:12]}"
