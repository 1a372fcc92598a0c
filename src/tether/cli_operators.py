"""``tether revoke`` and ``tether reinstate``: operators' signed actions (docs/operators.md).

Each action is a record (who, why, when) signed with the operator's key (never the worker's)
and published on the revocations topic keyed like the target's revocations, so every gateway's
watcher, the registry sync, the ledger and the SSF transmitter apply it. Mounted by ``tether.cli``.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from tether.models.outputs import Reinstatement, Revocation
    from tether.security.operators import OperatorSigner
    from tether.settings import Settings

_log = logging.getLogger("tether.operators")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}

_target_argument = click.argument("target", metavar="KIND:ID")
_reason_option = click.option(
    "--reason", required=True, help="Why (recorded in the signed record)."
)
_by_option = click.option(
    "--by", help="Who [default: TETHER_OPERATOR_NAME, else the key's operator name, else $USER]."
)
_key_option = click.option(
    "--key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The operator's private key [default: TETHER_OPERATOR_KEY].",
)
_dry_run_option = click.option(
    "--dry-run", is_flag=True, help="Print the signed record, publish nothing."
)


def parse_until(text: str, now: datetime) -> datetime:
    """``--until``: an ISO 8601 instant with a zone (``2026-12-07T09:00:00Z``) or a duration
    from now (``90s``, ``30m``, ``4h``, ``2d``).

    Raises:
        click.BadParameter: neither.
    """
    match = _DURATION.fullmatch(text.strip())
    if match:
        return now + timedelta(seconds=float(match[1]) * _UNIT_S[match[2]])
    try:
        until = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: an ISO 8601 time or 30m/4h/2d") from exc
    if until.tzinfo is None:
        raise click.BadParameter(f"{text!r}: give a time zone (Z or +hh:mm)")
    return until


def _signer(key: Path | None) -> tuple[Settings, OperatorSigner]:
    from pydantic import ValidationError  # noqa: PLC0415  # keep `tether --help` fast

    from tether.security.operators import load_operator_signer  # noqa: PLC0415
    from tether.settings import Settings  # noqa: PLC0415

    try:
        settings = Settings()
        return settings, load_operator_signer(settings, key)
    except (ValueError, ValidationError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


def _publish(settings: Settings, record: Revocation | Reinstatement, token: bytes) -> None:
    """Publish the signed record, keyed ``<kind>:<id>``, and wait for the broker's ack."""
    from confluent_kafka import KafkaException, Producer  # noqa: PLC0415

    from tether.adapters.kafka_config import producer_config  # noqa: PLC0415
    from tether.topics import REVOCATIONS  # noqa: PLC0415

    topic = settings.topic(REVOCATIONS)
    errors: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    try:
        producer = Producer(producer_config(settings, client_id="tether-operator"))
        producer.produce(topic, key=record.target.key, value=token, on_delivery=delivered)
        left = producer.flush(15.0)
    except (KafkaException, BufferError) as exc:
        raise click.ClickException(f"cannot publish to {topic}: {exc}") from exc
    if errors or left:
        reason = "; ".join(errors) or "no acknowledgement within 15 s"
        raise click.ClickException(f"not published to {topic}: {reason}")


def _act(settings: Settings, record: Revocation | Reinstatement, token: bytes, dry: bool) -> None:
    from tether.models.codec import encode  # noqa: PLC0415

    click.echo(encode(record).decode())
    if dry:
        click.echo(token.decode(), err=True)
        return
    _publish(settings, record, token)
    from tether.models.outputs import Reinstatement  # noqa: PLC0415

    verb, why = (
        ("reinstated", record.reason)
        if isinstance(record, Reinstatement)
        else ("revoked", record.note)
    )
    _log.warning("operator %s %s %s: %s", record.by, verb, record.target.key, why)
    click.echo(
        f"{verb} {record.target.key} (published to {settings.topic('revocations')})", err=True
    )


@click.command()
@_target_argument
@_reason_option
@click.option(
    "--until",
    help="An ISO 8601 time (2026-12-07T09:00:00Z) or a duration (30m, 4h, 2d) "
    "[default: TETHER_OPERATOR_REVOKE_S, 24 h; at most TETHER_OPERATOR_WINDOW_S, 7 d].",
)
@_by_option
@_key_option
@_dry_run_option
def revoke(  # one parameter per option
    target: str, reason: str, until: str | None, by: str | None, key: Path | None, dry_run: bool
) -> None:
    """Revoke KIND:ID by hand (KIND: token, workflow, workload or delegation).

    Publishes a revocation signed with the operator's key onto the revocations topic: every
    gateway denies the target within the pipeline's latency, the registry and SSF receivers
    get it like any other. It records who (--by), why (--reason) and when.

    \b
    Examples:
      tether revoke workload:spiffe://acme/agent/coder --reason "laptop stolen" --until 4h
      tether revoke token:jti-7f3a --reason "leaked in a ticket"

    Environment: TETHER_OPERATOR_KEY (the private key; default
    $TETHER_HOME/operator/operator.jwk.json), TETHER_OPERATOR_NAME (the default --by),
    TETHER_OPERATOR_ISSUER, TETHER_OPERATOR_REVOKE_S, TETHER_OPERATOR_WINDOW_S,
    TETHER_KAFKA_BOOTSTRAP, TETHER_TOPIC_PREFIX, TETHER_SET_AUDIENCE.
    """
    from tether.security.operators import parse_target, utc_now  # noqa: PLC0415

    settings, signer = _signer(key)
    now = utc_now()
    try:
        end = (
            parse_until(until, now)
            if until
            else now + timedelta(seconds=settings.operator_revoke_s)
        )
        record = signer.revocation(parse_target(target), reason=reason, now=now, until=end, by=by)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    _act(settings, record, signer.sign(record), dry_run)


@click.command()
@_target_argument
@_reason_option
@_by_option
@_key_option
@_dry_run_option
def reinstate(target: str, reason: str, by: str | None, key: Path | None, dry_run: bool) -> None:
    """Lift the revocations of KIND:ID issued until now (a false positive).

    Publishes a reinstatement signed with the operator's key: watchers, the registry sync and
    the ledger lift every revocation of the target issued at or before this moment. A
    revocation issued later (a new violation) still applies. Watchers accept it only from a
    key in TETHER_OPERATOR_JWKS; SSF receivers get no event (CAEP has no "un-revoke").

    \b
    Example:
      tether reinstate workload:spiffe://acme/agent/coder --reason "FP: approved batch job"

    Environment: TETHER_OPERATOR_KEY (the private key; default
    $TETHER_HOME/operator/operator.jwk.json), TETHER_OPERATOR_NAME (the default --by),
    TETHER_OPERATOR_ISSUER, TETHER_OPERATOR_REVOKE_S, TETHER_OPERATOR_WINDOW_S,
    TETHER_KAFKA_BOOTSTRAP, TETHER_TOPIC_PREFIX, TETHER_SET_AUDIENCE.
    """
    from tether.security.operators import parse_target, utc_now  # noqa: PLC0415

    settings, signer = _signer(key)
    try:
        record = signer.reinstatement(parse_target(target), reason=reason, now=utc_now(), by=by)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    _act(settings, record, signer.sign(record), dry_run)
