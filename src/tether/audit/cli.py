"""``tether audit verify|export``: check the decision log, and export one workflow's evidence."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from tether.audit.verify import Report
    from tether.security.sets import KeyLookup
    from tether.settings import Settings

INTACT, TAMPERED, USAGE = 0, 1, 2


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(USAGE)


def _settings(bootstrap: str | None, prefix: str | None) -> Settings:
    from tether.settings import Settings  # noqa: PLC0415

    overrides = {"kafka_bootstrap": bootstrap, "topic_prefix": prefix}
    return Settings.model_validate({k: v for k, v in overrides.items() if v is not None})


def _broker(settings: Settings) -> None:
    """One clear line and exit 2 if Kafka does not answer (not librdkafka's retries)."""
    from tether.cli_stream import require_broker  # noqa: PLC0415

    require_broker(settings, 10.0, exit_code=USAGE)


def _keys(settings: Settings, jwks: Path | None) -> tuple[KeyLookup, dict[str, Any]]:
    """The verification keys (``--jwks``, else ``TETHER_JWKS``, else the development JWKS) and
    the JWKS document they came from."""
    import orjson  # noqa: PLC0415

    from tether.audit.checkpoint import keys_of  # noqa: PLC0415
    from tether.security.keys import JWKS_FILE, dev_keys_dir  # noqa: PLC0415

    location: str | Path = jwks or settings.jwks or dev_keys_dir(settings) / JWKS_FILE
    if isinstance(location, str) and location.startswith(("http://", "https://")):
        from tether.security.keys import KeySource  # noqa: PLC0415

        source = KeySource(location, allow_http=settings.jwks_allow_http)
        data = source._read()  # the raw document, for the bundle
    else:
        try:
            data = Path(location).read_bytes()
        except OSError as exc:
            _fail(f"cannot read the JWKS {location}: {exc}")
    try:
        doc = orjson.loads(data)
        return keys_of(doc), {"keys": list(doc.get("keys", []))}
    except (orjson.JSONDecodeError, AttributeError, ValueError) as exc:
        _fail(f"the JWKS {location} is not a JWKS: {exc}")


def _print(report: Report, source: str, as_json: bool) -> None:
    import orjson  # noqa: PLC0415

    if as_json:
        doc = {"source": source, **report.as_dict()}
        click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    parts = len(report.partitions)
    click.echo(
        f"{source}: {report.records:,} records on {parts} partition(s), "
        f"{report.checkpoints:,} valid checkpoint(s)"
        + (f", {report.ignored:,} other records skipped" if report.ignored else "")
        + (
            f", {report.before_chain:,} unlinked records from before the chain began"
            if report.before_chain
            else ""
        )
    )
    for p in sorted(report.partitions):
        r = report.partitions[p]
        span = f"seq {r.first_seq}..{r.last_seq}" if r.first_seq is not None else "no links"
        if r.checkpoint_seq is not None:
            at = datetime.fromtimestamp(r.checkpoint_at or 0, UTC).isoformat()
            cover = f"last checkpoint seq {r.checkpoint_seq} at {at}, {r.after_checkpoint} after it"
        else:
            cover = f"no checkpoint: {r.after_checkpoint} link(s) unprotected against truncation"
        click.echo(f"  partition {p}: {r.records:,} records, {span}; {cover}")
    if report.ok:
        click.echo("INTACT: every link and checkpoint verifies")
        return
    click.echo(f"TAMPERED: {len(report.issues)} issue(s)")
    for issue in report.issues:
        click.echo(f"  {issue.line()}")


@click.group()
def audit() -> None:
    """The tamper-evident decision log: verify it, export a workflow's evidence (docs/audit.md).

    \b
    Every decision carries a hash link to the one before it on its partition, and each worker
    publishes signed checkpoints of its partitions' chain heads to <prefix>audit-checkpoints.
    """


@audit.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--topic", help="Verify this decisions topic [default: <prefix>decisions].")
@click.option(
    "--checkpoints-topic", help="Read checkpoints here [default: <prefix>audit-checkpoints]."
)
@click.option(
    "--checkpoints",
    "checkpoints_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="With FILE: its signed checkpoints, one per line (or give --checkpoints-topic) "
    "[default: none: a truncated tail is then undetectable].",
)
@click.option(
    "--bundle",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Verify an evidence bundle offline (tether audit export).",
)
@click.option(
    "--jwks",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Verification keys [default: TETHER_JWKS; with --bundle: the bundle's own].",
)
@click.option("--partial", is_flag=True, help="FILE may start after seq 0 (a cut export).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--bootstrap", help="Kafka bootstrap servers [default: TETHER_KAFKA_BOOTSTRAP].")
@click.option("--prefix", help="Topic prefix [default: TETHER_TOPIC_PREFIX].")
def verify(  # noqa: PLR0913  # one parameter per option
    *,
    file: Path | None,
    topic: str | None,
    checkpoints_topic: str | None,
    checkpoints_file: Path | None,
    bundle: Path | None,
    jwks: Path | None,
    partial: bool,
    as_json: bool,
    bootstrap: str | None,
    prefix: str | None,
) -> None:
    """Verify the decision log: its hash links and its signed checkpoints.

    Reports each decision changed, inserted, removed or reordered, a fork (two writers of one
    partition), a tail truncated (detectable only against a checkpoint: say how many links
    each partition has after its last one), and any checkpoint or revocation that does not
    verify.

    \b
    Exit codes: 0 intact; 1 tampered (issues printed); 2 usage or input error (unreadable
    file, topic missing, broker unreachable, bad JWKS).

    \b
    Examples:
      tether audit verify                                  # <prefix>decisions on Kafka
      tether audit verify --topic copy.decisions --checkpoints-topic tether.audit-checkpoints
      tether audit verify decisions.jsonl --checkpoints checkpoints.txt
      tether replay events.jsonl --decisions > out.jsonl && tether audit verify out.jsonl
      tether audit verify --bundle wf-42.bundle.json --jwks /etc/tether/keys/jwks.json

    \b
    Environment: TETHER_KAFKA_BOOTSTRAP, TETHER_TOPIC_PREFIX, TETHER_JWKS (or the development
    JWKS under TETHER_HOME), TETHER_ISSUER, TETHER_KAFKA__* (authentication).
    """
    from tether.audit.verify import Entry, verify_log  # noqa: PLC0415

    settings = _settings(bootstrap, prefix)
    if bundle is not None:
        if file is not None or topic is not None:
            _fail("--bundle verifies a bundle alone: no FILE or --topic with it")
        _verify_bundle(settings, bundle, jwks, as_json)
        return
    keys, _ = _keys(settings, jwks)
    tokens: list[tuple[bytes, str]] = []
    if file is not None:
        if topic is not None:
            _fail("give a FILE or --topic, not both")
        try:
            lines = file.read_bytes().splitlines()
        except OSError as exc:
            _fail(f"cannot read {file}: {exc}")
        entries = [Entry(line, f"line {n}") for n, line in enumerate(lines, 1) if line.strip()]
        if checkpoints_file is not None:
            tokens = [
                (line.strip(), f"{checkpoints_file.name} line {n}")
                for n, line in enumerate(checkpoints_file.read_bytes().splitlines(), 1)
                if line.strip()
            ]
        elif checkpoints_topic is not None:
            _broker(settings)
            tokens = _checkpoint_tokens(settings, checkpoints_topic)
        report = verify_log(entries, tokens, keys, only_decisions=True, complete=not partial)
        _print(report, str(file), as_json)
    else:
        from tether.audit.kafka import TopicUnreadable, read_topic  # noqa: PLC0415
        from tether.topics import AUDIT_CHECKPOINTS, DECISIONS  # noqa: PLC0415

        name = topic or settings.topic(DECISIONS)
        _broker(settings)
        try:
            read = read_topic(settings, name)
        except TopicUnreadable as exc:
            _fail(str(exc))
        entries = [Entry(r.value, f"offset {r.offset}", r.partition) for r in read.records]
        tokens = _checkpoint_tokens(
            settings, checkpoints_topic or settings.topic(AUDIT_CHECKPOINTS)
        )
        report = verify_log(entries, tokens, keys, complete=read.complete, before_chain=True)
        _print(report, name, as_json)
    sys.exit(INTACT if report.ok else TAMPERED)


def _checkpoint_tokens(settings: Settings, topic: str) -> list[tuple[bytes, str]]:
    from tether.audit.kafka import TopicUnreadable, read_topic  # noqa: PLC0415

    try:
        read = read_topic(settings, topic)
    except TopicUnreadable as exc:
        _fail(str(exc))
    return [(r.value, f"{topic}[{r.partition}]@{r.offset}") for r in read.records]


def _verify_bundle(settings: Settings, path: Path, jwks: Path | None, as_json: bool) -> None:
    import orjson  # noqa: PLC0415

    from tether.audit.bundle import BadBundle, check  # noqa: PLC0415
    from tether.audit.checkpoint import keys_of  # noqa: PLC0415

    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        _fail(f"cannot read the bundle {path}: {exc}")
    if jwks is not None:
        keys, _ = _keys(settings, jwks)
    else:
        try:
            keys = keys_of(doc.get("jwks") or {"keys": []})
        except (ValueError, AttributeError) as exc:
            _fail(f"the bundle's jwks is not a JWKS: {exc}")
    try:
        report = check(doc, keys)
    except BadBundle as exc:
        _fail(f"{path}: {exc}")
    _print(report, f"{path} (workflow {doc.get('workflow_id')})", as_json)
    if not as_json:
        click.echo(
            f"  with it: {len(doc.get('events', []))} event(s), {len(doc.get('findings', []))} "
            f"finding(s), {len(doc.get('revocations', []))} revocation(s) (signatures checked)"
        )
    sys.exit(INTACT if report.ok else TAMPERED)


@audit.command()
@click.argument("workflow_id")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the bundle here [default: <WORKFLOW_ID>.bundle.json].",
)
@click.option(
    "--jwks",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Verification keys to include [default: TETHER_JWKS].",
)
@click.option("--bootstrap", help="Kafka bootstrap servers [default: TETHER_KAFKA_BOOTSTRAP].")
@click.option("--prefix", help="Topic prefix [default: TETHER_TOPIC_PREFIX].")
def export(
    workflow_id: str,
    out: Path | None,
    jwks: Path | None,
    bootstrap: str | None,
    prefix: str | None,
) -> None:
    """Write the evidence bundle of one workflow, for an auditor to check offline.

    The bundle holds the workflow's input events, its decisions (with the chain segments that
    link them to signed checkpoints; other workflows' records in between appear only as
    hashes), its findings and revocations, the checkpoints, and the public JWKS. It reads the
    intents, decisions, audit-checkpoints, findings and revocations topics from their start.

    \b
    Examples:
      tether audit export wf-42 --out wf-42.bundle.json
      tether audit verify --bundle wf-42.bundle.json

    \b
    Exit codes: 0 written; 2 usage or input error.

    \b
    Environment: TETHER_KAFKA_BOOTSTRAP, TETHER_TOPIC_PREFIX, TETHER_JWKS, TETHER_KAFKA__*.
    """
    import orjson  # noqa: PLC0415

    from tether.audit.bundle import Sources, build  # noqa: PLC0415
    from tether.audit.kafka import TopicUnreadable, read_topic  # noqa: PLC0415
    from tether.topics import (  # noqa: PLC0415
        AUDIT_CHECKPOINTS,
        DECISIONS,
        FINDINGS,
        INTENTS,
        REVOCATIONS,
    )

    settings = _settings(bootstrap, prefix)
    keys, doc = _keys(settings, jwks)
    _broker(settings)
    try:
        read = {
            name: read_topic(settings, settings.topic(name)).records
            for name in (INTENTS, DECISIONS, AUDIT_CHECKPOINTS, FINDINGS, REVOCATIONS)
        }
    except TopicUnreadable as exc:
        _fail(str(exc))
    bundle = build(
        workflow_id,
        Sources(
            read[INTENTS],
            read[DECISIONS],
            read[AUDIT_CHECKPOINTS],
            read[FINDINGS],
            read[REVOCATIONS],
        ),
        keys=keys,
        jwks=doc,
        log=settings.topic(DECISIONS),
        created_at=datetime.now(UTC).isoformat(),
    )
    target = out or Path(f"{workflow_id}.bundle.json")
    target.write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2))
    decisions = sum(1 for seg in bundle["decisions"].values() for i in seg if "value" in i)
    click.echo(
        f"{target}: {len(bundle['events'])} event(s), {decisions} decision(s), "
        f"{len(bundle['checkpoints'])} checkpoint(s), {len(bundle['findings'])} finding(s), "
        f"{len(bundle['revocations'])} revocation(s)"
    )
    if not decisions:
        click.echo(
            f"warning: no chained decision of {workflow_id} on the decisions topic", err=True
        )
