"""``tether topics|emit|watch``: the Kafka side of the command line (mounted by ``tether.cli``)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Final

import click
import orjson

if TYPE_CHECKING:
    from click.decorators import FC

    from tether.models.outputs import TargetKind
    from tether.sdk.watcher import Watcher
    from tether.security.sets import FeedRecord
    from tether.settings import Settings
    from tether.topics import TopicSpec

EXIT_REVOKED: Final = 1
EXIT_UNKNOWN: Final = 3
EXIT_UNREACHABLE: Final = 69  # sysexits.h EX_UNAVAILABLE: a service the command needs is down
_PROGRESS_EVERY_S: Final = 2.0
_SLOW_BOOTSTRAP_S: Final = 5.0
_TARGET_KINDS: Final = ("token", "workflow", "workload", "delegation")

_bootstrap_option = click.option(
    "--bootstrap",
    metavar="HOST:PORT[,...]",
    help="Kafka bootstrap servers [env TETHER_KAFKA_BOOTSTRAP; default 127.0.0.1:9092].",
)
_prefix_option = click.option(
    "--prefix", help="Topic name prefix [env TETHER_TOPIC_PREFIX; default 'tether.']."
)


def _wait_option(default: float) -> Callable[[FC], FC]:
    return click.option(
        "--wait",
        "wait_s",
        type=click.FloatRange(min=0.1),
        default=default,
        show_default=True,
        help="Seconds to keep trying to reach Kafka before giving up (exit 69).",
    )


def unreachable(bootstrap: str, wait_s: float, reason: str, *, label: str = "error") -> str:
    """The one line a command prints when Kafka cannot be reached: what, why, what to change."""
    return (
        f"{label}: cannot reach Kafka at {bootstrap} (tried for {wait_s:g} s: {reason}); "
        "check that the broker is running (`make services` starts one on 127.0.0.1:9092) and "
        "set TETHER_KAFKA_BOOTSTRAP (or --bootstrap) to its HOST:PORT"
    )


def require_broker(settings: Settings, wait_s: float, *, exit_code: int = EXIT_UNREACHABLE) -> None:
    """Wait up to ``wait_s`` for Kafka; if it never answers, print one line and exit.

    librdkafka itself would print a line for each failed connection attempt (about 20 a second,
    ~1,000 before a command gave up) and the command then ended in a traceback; this probe is
    silent and reports once.
    """
    from tether.adapters.kafka_admin import (  # noqa: PLC0415  # confluent-kafka loads on use
        BrokerUnavailableError,
        wait_for_broker,
    )

    try:
        wait_for_broker(settings, timeout=wait_s)
    except BrokerUnavailableError as exc:
        label = "unknown" if exit_code == EXIT_UNKNOWN else "error"
        click.echo(unreachable(settings.kafka_bootstrap, wait_s, exc.reason, label=label), err=True)
        sys.exit(exit_code)


def _settings(bootstrap: str | None, prefix: str | None, partitions: int | None = None) -> Settings:
    """Settings from TETHER_* env, with the command-line options that were given on top."""
    from tether.settings import Settings  # noqa: PLC0415  # keep `tether --help` fast

    given = {"kafka_bootstrap": bootstrap, "topic_prefix": prefix, "partitions": partitions}
    values: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    return Settings(**values)


# -- tether topics ---------------------------------------------------------------------------


@click.group()
def topics() -> None:
    """Kafka topics tether uses (created explicitly, never by broker auto-creation).

    \b
    Example:
      tether topics create
    """


@topics.command("create")
@_bootstrap_option
@_prefix_option
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    help="Partitions per topic [env TETHER_PARTITIONS; default 6].",
)
@_wait_option(30.0)
def topics_create(
    bootstrap: str | None, prefix: str | None, partitions: int | None, wait_s: float
) -> None:
    """Create tether's topics with their partition counts and configs; safe to re-run.

    Prints one line per topic: "created" or "exists". An existing topic with a different
    partition count or cleanup.policy is an error (exit 1) naming the topic: tether's tables
    are co-partitioned with their input topics, and gateways bootstrap from the compacted
    revocations topic. Kafka unreachable for --wait seconds: one line, exit 69. The topics
    and their keys: docs/contract.md.

    \b
    Examples:
      tether topics create
      tether topics create --bootstrap kafka:9092 --partitions 12
      TETHER_TOPIC_PREFIX=staging.tether. tether topics create

    \b
    Environment: TETHER_KAFKA_BOOTSTRAP (127.0.0.1:9092), TETHER_TOPIC_PREFIX ('tether.'),
    TETHER_PARTITIONS (6).
    """
    from tether.adapters.kafka_admin import (  # noqa: PLC0415  # confluent-kafka loads on use
        TopicError,
        create_topics,
    )
    from tether.topics import topic_specs  # noqa: PLC0415

    settings = _settings(bootstrap, prefix, partitions)
    specs = topic_specs(
        settings.topic_prefix,
        settings.partitions,
        min_insync_replicas=settings.kafka.min_insync_replicas,
        decisions_retention_ms=settings.decisions_retention_ms,
    )
    require_broker(settings, wait_s)
    try:
        created = set(create_topics(settings, specs))
    except TopicError as exc:
        raise click.ClickException(str(exc)) from exc
    width = max(len(spec.name) for spec in specs)
    replicas = settings.kafka.replication_factor
    for spec in specs:
        state = "created" if spec.name in created else "exists "
        click.echo(f"{state}  {spec.name:<{width}}  {_describe(spec, replicas)}")


def _describe(spec: TopicSpec, replicas: int) -> str:
    configs = ", ".join(f"{k}={v}" for k, v in spec.config.items())
    return f"{spec.partitions} partitions, {replicas} replica(s), key {spec.key}" + (
        f", {configs}" if configs else ""
    )


@topics.command("acls")
@_bootstrap_option
@_prefix_option
@click.option(
    "--worker", "worker", default="User:worker", show_default=True, help="Worker principal."
)
@click.option("--agent", "agent", default="User:agent", show_default=True, help="Agent principal.")
@click.option(
    "--gateway", "gateway", default="User:gateway", show_default=True, help="Gateway principal."
)
@click.option(
    "--operator",
    default="User:operator",
    show_default=True,
    help="Operator principal (tether revoke, reinstate, finding ack|resolve|suppress).",
)
@click.option(
    "--ingest", default="User:ingest", show_default=True, help="tether ingest otlp's principal."
)
@click.option(
    "--otlp-topic",
    default="otlp_spans",
    show_default=True,
    help="The Collector's traces topic tether ingest otlp reads [TETHER_OTLP_TOPIC].",
)
@click.option(
    "--alerts", default="User:alerts", show_default=True, help="tether alerts' principal."
)
@click.option("--ssf", default="User:ssf", show_default=True, help="tether ssf's principal.")
@click.option(
    "--ocsf", default="User:ocsf", show_default=True, help="tether ocsf-forward's principal."
)
@click.option(
    "--console", default="User:console", show_default=True, help="tether console's principal."
)
@click.option(
    "--gateway-group",
    "gateway_groups",
    multiple=True,
    metavar="PREFIX",
    help="Start of the gateways' group ids: their Watcher client ids (repeatable) "
    "[default: tether-watcher, tether-cli-watch].",
)
@click.option(
    "--command-config",
    default="admin.properties",
    show_default=True,
    help="The admin client properties file named in the printed commands.",
)
@click.option("--apply", "apply", is_flag=True, help="Create the ACLs (as a super user).")
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=30.0,
    show_default=True,
    help="With --apply: seconds to wait for the broker to answer.",
)
def topics_acls(  # noqa: PLR0913  # one option per principal, all keyword-only
    *,
    bootstrap: str | None,
    prefix: str | None,
    worker: str,
    agent: str,
    gateway: str,
    operator: str,
    ingest: str,
    otlp_topic: str,
    alerts: str,
    ssf: str,
    ocsf: str,
    console: str,
    gateway_groups: tuple[str, ...],
    command_config: str,
    apply: bool,
    wait_s: float,
) -> None:
    """Kafka ACLs per principal: agents write intents only, the worker alone writes outputs
    (operators add revocations and finding actions, each signed with an operator key).

    Prints the kafka-acls.sh commands (docs/kafka-security.md explains each); with --apply,
    creates them through the Admin API, logged in with the TETHER_KAFKA__* settings of a
    super user. The app id (TETHER_APP_ID, default <prefix>monitor) names the worker's groups
    and changelogs.

    \b
    Examples:
      tether topics acls > acls.sh
      eval "$(scripts/services.sh env-secure admin)"; tether topics acls --apply
    """
    from tether.adapters.kafka_acls import (  # noqa: PLC0415  # confluent-kafka loads on use
        GATEWAY_GROUP_PREFIXES,
        Principals,
        acl_grants,
        apply_acls,
        kafka_acls_commands,
    )

    settings = _settings(bootstrap, prefix)
    principals = Principals(
        worker=worker,
        agent=agent,
        gateway=gateway,
        gateway_groups=gateway_groups or GATEWAY_GROUP_PREFIXES,
        operator=operator,
        ingest=ingest,
        otlp_topic=otlp_topic,
        alerts=alerts,
        ssf=ssf,
        ocsf=ocsf,
        console=console,
    )
    grants = acl_grants(settings, principals)
    if not apply:
        for command in kafka_acls_commands(
            grants, bootstrap=settings.kafka_bootstrap, command_config=command_config
        ):
            click.echo(command)
        return
    from confluent_kafka import KafkaException  # noqa: PLC0415

    require_broker(settings, wait_s)
    try:
        count = apply_acls(settings, grants, timeout=wait_s)
    except KafkaException as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{count} ACL bindings for prefix {settings.topic_prefix!r} in place")


# -- tether emit -----------------------------------------------------------------------------


@click.command()
@click.argument("file", type=click.Path(allow_dash=True, dir_okay=False, path_type=str))
@_bootstrap_option
@_prefix_option
@click.option("--topic", help="Destination topic [default: <prefix>intents].")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the broker to acknowledge a record before failing.",
)
@_wait_option(10.0)
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
def emit(
    file: str,
    bootstrap: str | None,
    prefix: str | None,
    topic: str | None,
    timeout: float,
    wait_s: float,
    quiet: bool,
) -> None:
    """Produce FILE, a JSON Lines file of input events ('-' for stdin), to tether.intents.

    Each non-blank line becomes one record, byte for byte: lines that are not valid events
    are produced too, so the worker dead-letters them as it would any producer's. The key is
    the line's workflow_id when it can be read, else none. The producer is idempotent with
    acks=all; the command waits until Kafka has acknowledged every record, prints the count,
    and exits 1 if any record was not delivered, 69 if Kafka cannot be reached within --wait
    seconds. The contract of each line: docs/contract.md; `tether demo --write FILE` writes a
    sample.

    \b
    Examples:
      tether demo --write events.jsonl && tether emit events.jsonl
      zcat events.jsonl.gz | tether emit -
      tether emit --bootstrap kafka:9092 --topic staging.tether.intents events.jsonl

    \b
    Environment: TETHER_KAFKA_BOOTSTRAP (127.0.0.1:9092), TETHER_TOPIC_PREFIX ('tether.').
    """
    from tether.sdk.emitter import EmitFailedError, Emitter  # noqa: PLC0415

    settings = _settings(bootstrap, prefix)
    require_broker(settings, wait_s)
    emitter = Emitter(settings, topic, client_id="tether-cli-emit", delivery_timeout_s=timeout)
    produced = skipped = 0
    progress = _Progress(enabled=not quiet)
    try:
        with _open_input(file) as stream:
            for raw in stream:
                line = raw.rstrip(b"\r\n")
                if not line.strip():
                    skipped += 1
                    continue
                emitter.emit_raw(line, _workflow_key(line))
                produced += 1
                progress.tick(produced)
        delivered = emitter.flush(timeout + 5.0)
    except EmitFailedError as exc:
        click.echo(f"error: {exc}", err=True)
        unconfirmed = exc.failed + exc.pending
        click.echo(
            f"emitted {produced} records to {emitter.topic}; {unconfirmed} not acknowledged",
            err=True,
        )
        sys.exit(1)
    finally:
        with suppress(EmitFailedError):  # already reported above; this only releases the producer
            emitter.close(0)
    blank = f" ({skipped} blank lines skipped)" if skipped else ""
    click.echo(
        f"emitted {produced} records to {emitter.topic}{blank}: "
        f"{delivered} acknowledged by Kafka (acks=all)"
    )


def _workflow_key(line: bytes) -> bytes | None:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    workflow_id = doc.get("workflow_id") if isinstance(doc, dict) else None
    if isinstance(workflow_id, str) and 0 < len(workflow_id) <= 256:  # noqa: PLR2004  # the contract's bound
        return workflow_id.encode()
    return None


@contextmanager
def _open_input(file: str) -> Iterator[IO[bytes]]:
    if file == "-":
        yield sys.stdin.buffer
        return
    try:
        stream = open(file, "rb")  # noqa: SIM115  # closed below
    except OSError as exc:
        raise click.ClickException(f"cannot read {file}: {exc.strerror}") from exc
    with stream:
        yield stream


class _Progress:
    """Occasional "emitted N records" lines on stderr for long inputs."""

    def __init__(self, *, enabled: bool) -> None:
        self._enabled = enabled
        self._next = time.monotonic() + _PROGRESS_EVERY_S

    def tick(self, count: int) -> None:
        if self._enabled and count % 1000 == 0 and time.monotonic() >= self._next:
            self._next = time.monotonic() + _PROGRESS_EVERY_S
            click.echo(f"... {count} records produced", err=True)


# -- tether watch ----------------------------------------------------------------------------


@click.command()
@_bootstrap_option
@_prefix_option
@click.option("--topic", help="Revocations topic [default: <prefix>revocations].")
@click.option(
    "--from-beginning/--tail",
    default=True,
    show_default=True,
    help="Bootstrap from the start of the compacted topic (every live revocation), or print "
    "only what is issued from now on.",
)
@click.option("--heartbeats", is_flag=True, help="Also print heartbeat records.")
@click.option(
    "--check",
    "checks",
    multiple=True,
    metavar="KIND:ID",
    help="Bootstrap, answer whether KIND:ID is revoked, and exit (repeatable). KIND is token, "
    "workflow, workload or delegation.",
)
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for the bootstrap (with --check).",
)
@_wait_option(10.0)
def watch(
    bootstrap: str | None,
    prefix: str | None,
    topic: str | None,
    from_beginning: bool,
    heartbeats: bool,
    checks: tuple[str, ...],
    timeout: float,
    wait_s: float,
) -> None:
    """Follow the revocations topic as a gateway does, printing each record as a JSON line.

    Reads the compacted topic from the beginning (every revocation it holds, expired ones
    included; stderr says how many are still in force), then keeps following it until
    interrupted; a summary goes to stderr. With --check, waits for
    the bootstrap, answers for each KIND:ID and exits: 0 when none is revoked and the feed is
    live, 1 when any is revoked, 3 when it cannot tell (the bootstrap did not finish within
    --timeout, or no heartbeat within TETHER_STALENESS_S: the feed may be dead, or Kafka
    could not be reached within --wait seconds). Without --check, Kafka unreachable for --wait
    seconds is one line and exit 69. Records are verified against TETHER_JWKS (default: the
    development JWKS a worker started in this directory creates); the record formats:
    docs/contract.md.

    \b
    Examples:
      tether watch                                   # the whole topic, then new records
      tether watch --tail --heartbeats               # only what happens from now on
      tether watch --check token:jti-8c1             # exit 1 if revoked
      tether watch --check workflow:wf-42 --check workload:spiffe://acme.example/agent/x

    \b
    Environment: TETHER_KAFKA_BOOTSTRAP (127.0.0.1:9092), TETHER_TOPIC_PREFIX ('tether.'),
    TETHER_JWKS (file or https URL), TETHER_ISSUER (urn:tether:monitor), TETHER_STALENESS_S (5),
    TETHER_HOME (.tether: where the development JWKS lives), TETHER_METRICS_ADDR
    (127.0.0.1:9466: /metrics, /healthz, /readyz while following; docs/monitoring.md).
    """
    from tether.sdk.watcher import Watcher  # noqa: PLC0415

    settings = _settings(bootstrap, prefix)
    if checks:
        targets = [_parse_target(check) for check in checks]
        if not from_beginning:
            raise click.UsageError("--check needs the whole topic: drop --tail")
        require_broker(settings, wait_s, exit_code=EXIT_UNKNOWN)
        watcher = Watcher(settings, topic=topic, client_id="tether-cli-watch")
        sys.exit(_check(watcher, targets, timeout))
    require_broker(settings, wait_s)
    printer = _Printer(heartbeats=heartbeats)
    watcher = Watcher(
        settings,
        topic=topic,
        from_beginning=from_beginning,
        on_record=printer,
        client_id="tether-cli-watch",
    )
    from tether.observe import start, watch_feed  # noqa: PLC0415

    probes, ops = start("watch", settings)  # /metrics, /healthz, /readyz (docs/monitoring.md)
    watch_feed(probes, watcher)
    try:
        with watcher:
            _follow(watcher)
    finally:
        if ops is not None:
            ops.stop()


def _parse_target(text: str) -> tuple[TargetKind, str]:
    kind, sep, ident = text.partition(":")
    if not sep or kind not in _TARGET_KINDS or not ident:
        raise click.BadParameter(
            f"{text!r}: expected KIND:ID with KIND one of {', '.join(_TARGET_KINDS)}",
            param_hint="--check",
        )
    return kind, ident  # type: ignore[return-value]  # checked against the kinds above


def _check(watcher: Watcher, targets: list[tuple[TargetKind, str]], timeout: float) -> int:
    with watcher:
        if not watcher.wait_ready(timeout):
            reason = watcher.last_error or "no answer"
            click.echo(
                f"unknown: the revocations feed {watcher.topic} was not read within "
                f"{timeout:g} s ({reason})",
                err=True,
            )
            return EXIT_UNKNOWN
    revocations = watcher.revocations
    fresh = revocations.is_fresh()
    revoked = False
    for kind, ident in targets:
        until = revocations.revoked_until(kind, ident)
        if until is not None:
            revoked = True
            click.echo(f"revoked      {kind}:{ident}  until {_iso(until)}")
        elif fresh:
            click.echo(f"not revoked  {kind}:{ident}")
        else:
            click.echo(
                f"unknown      {kind}:{ident}  (not revoked in the topic, but {_stale(watcher)})"
            )
    if revoked:
        return EXIT_REVOKED
    return 0 if fresh else EXIT_UNKNOWN


def _stale(watcher: Watcher) -> str:
    last = watcher.last_heartbeat
    if last is None:
        return "the feed has no heartbeat: is a tether worker running?"
    return f"the last heartbeat is {time.time() - last:.1f} s old"


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


class _Printer:
    """Writes each record as one JSON line (from the watcher's thread)."""

    def __init__(self, *, heartbeats: bool) -> None:
        self._heartbeats = heartbeats
        self._lock = threading.Lock()

    def __call__(self, record: FeedRecord) -> None:
        from tether.models.codec import encode  # noqa: PLC0415
        from tether.models.outputs import Heartbeat  # noqa: PLC0415

        if isinstance(record, Heartbeat) and not self._heartbeats:
            return
        line = encode(record) + b"\n"
        with self._lock:
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()


def _follow(watcher: Watcher) -> None:
    """Block until Ctrl-C, telling stderr when the bootstrap is done (or slow)."""
    started = time.monotonic()
    announced = warned = False
    try:
        while True:
            if announced:
                time.sleep(0.5)
            elif watcher.ready.wait(0.1):
                announced = True
                live = len(watcher.revocations)
                click.echo(f"# following {watcher.topic}: {live} live revocations", err=True)
            elif not warned and time.monotonic() - started > _SLOW_BOOTSTRAP_S:
                warned = True
                click.echo(f"# still waiting for {watcher.topic}: {watcher.last_error}", err=True)
    except KeyboardInterrupt:
        pass
    finally:
        stats = watcher.stats
        click.echo(
            f"# {stats.records} records: {stats.revocations} revocations, "
            f"{stats.heartbeats} heartbeats, {stats.bad_records} unreadable",
            err=True,
        )
