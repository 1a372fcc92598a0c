"""``tether tuning check`` and ``tether finding ack|resolve|suppress`` (mounted by
``tether.cli``; docs/tuning.md)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
import orjson

if TYPE_CHECKING:
    from tether.models.outputs import Finding
    from tether.security.operators import OperatorSigner
    from tether.settings import Settings


def _settings(**overrides: object) -> Settings:
    from tether.cli import _settings as make  # noqa: PLC0415

    return make(**overrides)


@click.group()
def tuning() -> None:
    """The tuning file: per finding code enabled, severity, response, shadow, and exceptions."""


@tuning.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def tuning_check(file: Path) -> None:
    """Validate FILE and print the effective tuning (with the environment's) and its revision.

    Exit status 1 with the file, line, field and known codes when it is invalid.

    \b
    Example:
      tether tuning check examples/tuning.yaml | jq .tuning_revision

    \b
    Environment: TETHER_DISABLED, TETHER_SEVERITY, TETHER_RESPONSE, TETHER_SHADOW_CODES,
    TETHER_SHADOW, TETHER_CREDENTIAL_SHARED_ACROSS_WORKFLOWS (applied before the file).
    """
    from tether.tuning import TuningError, describe  # noqa: PLC0415

    settings = _settings(tuning=file)
    try:
        cfg = settings.detection()
    except TuningError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.stdout.buffer.write(orjson.dumps(describe(cfg), option=orjson.OPT_INDENT_2) + b"\n")


@click.group()
def finding() -> None:
    """Operator actions on a finding, each signed with an operator key and recorded on
    <prefix>finding-actions (who, why, when)."""


_reason = click.option("--reason", required=True, help="Why (recorded with the action).")
_by = click.option(
    "--by", help="Who [default: TETHER_OPERATOR_NAME, else the key's operator name, else $USER]."
)
_key = click.option(
    "--key",
    "key_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The operator's private key, as for `tether revoke` [default: TETHER_OPERATOR_KEY, "
    "else $TETHER_HOME/operator/operator.jwk.json].",
)


def _publish(settings: Settings, key: str, value: bytes, timeout: float = 15.0) -> None:
    """Produce one record and wait for the broker's acknowledgement."""
    from confluent_kafka import KafkaError, Producer  # noqa: PLC0415

    from tether.adapters.kafka_config import producer_config  # noqa: PLC0415
    from tether.topics import FINDING_ACTIONS  # noqa: PLC0415

    errors: list[KafkaError] = []

    def done(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    p = Producer(producer_config(settings, client_id="tether-cli-finding"))
    p.produce(settings.topic(FINDING_ACTIONS), value=value, key=key.encode(), on_delivery=done)
    left = p.flush(timeout)
    if left or errors:
        raise click.ClickException(
            f"the action was not recorded on {settings.topic(FINDING_ACTIONS)}: "
            f"{errors[0] if errors else 'no acknowledgement'} (nothing else was done)"
        )


def _kafka_lines(settings: Settings, timeout: float = 30.0) -> Iterator[bytes]:
    """Every record of the findings topic, from the beginning to its current end."""
    import time  # noqa: PLC0415

    from confluent_kafka import Consumer, TopicPartition  # noqa: PLC0415

    from tether.adapters.kafka_config import consumer_config  # noqa: PLC0415
    from tether.finding_actions import scan_group  # noqa: PLC0415
    from tether.topics import FINDINGS  # noqa: PLC0415

    topic = settings.topic(FINDINGS)
    c = Consumer(
        consumer_config(
            settings,
            group_id=scan_group(),
            client_id="tether-cli-finding",
            overrides={"enable.auto.commit": False},
        )
    )
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise click.ClickException(f"cannot read {topic}")
        ends: dict[int, int] = {}
        tps = []
        for p in meta.partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                tps.append(TopicPartition(topic, p, low))
        if not tps:
            return
        c.assign(tps)
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error() is not None:
                    continue
                value = m.value()
                if value:
                    yield value
                part, off = m.partition(), m.offset()
                if part in ends and off is not None and off + 1 >= ends[part]:
                    del ends[part]
        if ends:
            raise click.ClickException(f"{topic}: not read to its end within {timeout:.0f} s")
    finally:
        c.close()


def _operator(
    settings: Settings, key_path: Path | None, by: str | None
) -> tuple[OperatorSigner, str]:
    """The operator's signer, loaded the one way ``tether revoke`` loads it (a worker's key is
    refused), and who acts: ``--by``, else the operator's configured name."""
    from tether.security.operators import load_operator_signer  # noqa: PLC0415

    try:
        signer = load_operator_signer(settings, key_path)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    who = (by if by is not None else signer.name).strip()
    if not who:
        raise click.UsageError("name the operator with --by (or TETHER_OPERATOR_NAME)")
    return signer, who


def _find(settings: Settings, finding_id: str, findings: Path | None) -> Finding:
    from tether.finding_actions import find_in_lines  # noqa: PLC0415

    if findings is not None:
        with findings.open("rb") as f:
            found = find_in_lines(f, finding_id)
        where = str(findings)
    else:
        found = find_in_lines(_kafka_lines(settings), finding_id)
        where = settings.topic("findings")
    if found is None:
        raise click.ClickException(f"finding {finding_id} not found in {where}")
    return found


def _act(  # the options of the three commands
    action: str,
    finding_id: str,
    reason: str,
    by: str | None,
    key_path: Path | None,
    *,
    until: str | None = None,
    tuning_file: Path | None = None,
    findings: Path | None = None,
) -> None:
    from tether.finding_actions import (  # noqa: PLC0415
        FindingAction,
        action_id,
        parse_until,
        sign_action,
        suppression,
        with_exception,
        write_atomically,
    )
    from tether.tuning import TuningError, load_tuning  # noqa: PLC0415

    settings = _settings()
    why = reason.strip()
    if not why:
        raise click.UsageError("--reason must say why")
    signer, who = _operator(settings, key_path, by)
    now = datetime.now(UTC).replace(microsecond=0)
    aid = action_id(action, finding_id, who, now)
    fields: dict[str, object] = {}
    new_text = None
    path = None
    if action == "suppress":
        path = tuning_file or settings.tuning
        if path is None:
            raise click.UsageError(
                "suppress writes the tuning file the workers read: --tuning FILE or TETHER_TUNING"
            )
        try:
            expires = parse_until(until, now)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--until") from exc
        f = _find(settings, finding_id, findings)
        exc_ = suppression(f, action=aid, reason=f"{why} (by {who}, {aid})", until=expires)
        try:
            text = path.read_text(encoding="utf-8") if path.exists() else ""
            new_text = with_exception(text, exc_, str(path))
        except (TuningError, OSError) as err:
            raise click.ClickException(str(err)) from err
        fields = {
            "until": expires,
            "code": f.code,
            "workload_id": f.workload_id,
            "workflow_id": f.workflow_id,
            "tool": f.tool,
            "exception": exc_.id,
            "tuning_file": str(path),
        }
    record = FindingAction.model_validate(
        {
            "action_id": aid,
            "action": action,
            "finding_id": finding_id,
            "by": who,
            "reason": why,
            "at": now,
            **fields,
        }
    )
    if new_text is not None and path is not None:
        # the revision the workers will record once they have read it
        import tempfile  # noqa: PLC0415

        with tempfile.TemporaryDirectory() as d:
            probe = Path(d) / "tuning.yaml"
            probe.write_text(new_text, encoding="utf-8")
            probe.chmod(0o600)
            rev = load_tuning(probe, settings.detection(tuning=False)).tuning_revision
        record = record.model_copy(update={"tuning_revision": rev})
    _publish(settings, finding_id, sign_action(signer, record))
    if new_text is not None and path is not None:
        try:
            write_atomically(path, new_text)
        except OSError as err:
            raise click.ClickException(
                f"recorded {aid}, but could not write {path}: {err.strerror}"
            ) from err
    sys.stdout.buffer.write(orjson.dumps(record.model_dump(mode="json", exclude_none=True)) + b"\n")


@finding.command("ack")
@click.argument("finding_id")
@_reason
@_by
@_key
def finding_ack(finding_id: str, reason: str, by: str | None, key_path: Path | None) -> None:
    """Acknowledge FINDING_ID: someone is on it (recorded, signed; nothing else changes).

    \b
    Example:
      tether finding ack f-3c1d... --reason "triaging, INC-981" --by alice --key op.jwk.json

    \b
    Environment: TETHER_OPERATOR_KEY, TETHER_OPERATOR_NAME (the default --by),
    TETHER_OPERATOR_ISSUER, TETHER_KAFKA_BOOTSTRAP, TETHER_TOPIC_PREFIX (the record goes to
    <prefix>finding-actions).
    """
    _act("ack", finding_id, reason, by, key_path)


@finding.command("resolve")
@click.argument("finding_id")
@_reason
@_by
@_key
def finding_resolve(finding_id: str, reason: str, by: str | None, key_path: Path | None) -> None:
    """Resolve FINDING_ID (recorded, signed; a revocation is lifted by `tether reinstate`).

    \b
    Example:
      tether finding resolve f-3c1d... --reason "token rotated" --key op.jwk.json

    \b
    Environment: TETHER_OPERATOR_KEY, TETHER_OPERATOR_NAME (the default --by),
    TETHER_OPERATOR_ISSUER, TETHER_KAFKA_BOOTSTRAP, TETHER_TOPIC_PREFIX.
    """
    _act("resolve", finding_id, reason, by, key_path)


@finding.command("suppress")
@click.argument("finding_id")
@_reason
@_by
@_key
@click.option(
    "--until", help="Expiry: RFC 3339 with a zone, or 30m / 12h / 7d [default: 24h; at most 90d]."
)
@click.option(
    "--tuning",
    "tuning_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The tuning file the workers read [env TETHER_TUNING].",
)
@click.option(
    "--findings",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Find the finding in this file of tether's output (JSON lines) instead of the "
    "findings topic.",
)
def finding_suppress(
    finding_id: str,
    reason: str,
    by: str | None,
    key_path: Path | None,
    until: str | None,
    tuning_file: Path | None,
    findings: Path | None,
) -> None:
    """Suppress FINDING_ID's pattern until --until: an exception for its code, acting workload,
    workflow and tool is added to the tuning file (workers re-read it within
    TETHER_TUNING_POLL_S); later findings of that pattern are reported with "exception" and
    revoke nothing. Revocations already issued stay (lift them with `tether reinstate`).

    \b
    Example:
      tether finding suppress f-3c1d... --reason "approved export, CHG-42" --until 7d \\
        --tuning /etc/tether/tuning.yaml --key op.jwk.json

    \b
    Environment: TETHER_TUNING, TETHER_OPERATOR_KEY, TETHER_OPERATOR_NAME, TETHER_OPERATOR_ISSUER,
    TETHER_KAFKA_BOOTSTRAP, TETHER_TOPIC_PREFIX.
    """
    _act(
        "suppress",
        finding_id,
        reason,
        by,
        key_path,
        until=until,
        tuning_file=tuning_file,
        findings=findings,
    )
