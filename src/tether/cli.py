"""The ``tether`` command."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from tether import __version__

if TYPE_CHECKING:
    from tether.settings import Settings


def _settings(**overrides: object) -> Settings:
    from pydantic import ValidationError  # noqa: PLC0415

    from tether.settings import Settings  # noqa: PLC0415  # keep `tether --help` fast

    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings.model_validate(clean)
    except ValidationError as exc:  # a misspelt setting value: say which, never a traceback
        raise click.ClickException(f"invalid settings (TETHER_* or flags):\n{exc}") from exc


def _detection_ready(settings: Settings) -> None:
    """Read the tuning file (and the environment's tuning) once, before any input is read: a
    mistake stops the command with its file, line and field instead of being ignored."""
    from tether.tuning import TuningError  # noqa: PLC0415

    misspelt = settings.misspelt_tuning()
    if misspelt:
        raise click.ClickException("\n".join(misspelt))
    try:
        settings.detection()
    except TuningError as exc:
        raise click.ClickException(str(exc)) from exc


_TUNING = click.option(
    "--tuning",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Tuning file (YAML, docs/tuning.md): per-code enabled, severity, response, shadow "
    "and scoped exceptions [env TETHER_TUNING].",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tether")
def main() -> None:
    """tether: continuous authorization for AI agents and other non-human identities.

    tether correlates agent telemetry (workflow started, tool-call intents, delegations,
    workflow completed) into per-workflow sessions, detects permission drift and broken
    identity handoffs at every tool call, and turns a "no" into a revocation.

    \b
    Examples (start here):
      tether demo                         a synthetic fleet with injected attacks, live
      tether demo --write events.jsonl    the same fleet's telemetry as a sample file
      tether replay events.jsonl          run the detectors over a JSON Lines file
      tether policy validate DIR          check a directory of Cedar policies
      tether worker / emit / watch        the streaming pipeline over Kafka

    Settings come from flags and TETHER_* environment variables (each command's --help names
    its own; docs/operations.md lists them all). The record formats: docs/contract.md.
    """


@main.command()
@click.argument("file", type=click.Path(allow_dash=True, dir_okay=False, path_type=str))
@click.option("--decisions", is_flag=True, help="Also write one decision per tool-call intent.")
@click.option("--shadow", is_flag=True, default=None, help="Report findings, issue no revocations.")
@click.option("--grace", "grace_s", type=float, help="Event-time grace in seconds [default: 5].")
@click.option("--max-chain", "max_chain_length", type=int, help="Max delegation hops [default: 3].")
@click.option(
    "--policy-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Directory of Cedar policies [default: the packaged pack].",
)
@click.option(
    "--policy-pack",
    type=click.Choice(["default", "strict"]),
    help="Built-in Cedar pack when no --policy-dir [default: default].",
)
@click.option("--no-policy", is_flag=True, help="Skip per-call Cedar policy.")
@click.option(
    "--clock",
    type=click.Choice(["event", "wall"]),
    default="event",
    show_default=True,
    help="Stamp records with event time (reproducible) or the wall clock.",
)
@click.option(
    "--sources",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Source registry (sources.yaml): authenticate and authorize every event "
    "[env TETHER_SOURCES].",
)
@click.option(
    "--sources-mode",
    type=click.Choice(["enforce", "audit"]),
    help="When the registry names no mode: enforce refuses, audit labels [default: enforce].",
)
@_TUNING
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary on stderr.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["tether", "ocsf"]),
    default="tether",
    show_default=True,
    help="tether records, or findings only as OCSF 1.8.0 Detection Findings (docs/soc.md).",
)
def replay(
    file: str,
    decisions: bool,
    shadow: bool | None,
    grace_s: float | None,
    max_chain_length: int | None,
    policy_dir: Path | None,
    policy_pack: str | None,
    no_policy: bool,
    clock: str,
    sources: Path | None,
    sources_mode: str | None,
    tuning: Path | None,
    quiet: bool,
    fmt: str,
) -> None:
    """Run the detectors over FILE, a JSON Lines file of input events ('-' for stdin).

    File order is arrival order. Writes one JSON object per line to stdout, each with a
    "kind": finding, revocation, deadletter (and decision with --decisions). Every line that
    is not a valid event becomes a deadletter with its reason and line number; blank lines
    are skipped. Checks waiting on late events are decided when event time has moved past
    their grace period, and at end of input. Exit status is 0 whenever the input was read,
    whatever it contained.

    \b
    Examples:
      tether replay events.jsonl > out.jsonl
      tether replay --shadow --policy-dir ./policies yesterday.jsonl | jq 'select(.kind=="finding")'
      cat events.jsonl | tether replay - --decisions
      tether replay --format ocsf events.jsonl > detection_findings.jsonl
      tether replay --tuning tuning.yaml events.jsonl
      TETHER_DISABLED=unknown_workflow TETHER_SEVERITY=tool_not_granted=high tether replay e.jsonl

    \b
    Environment (flags win): TETHER_GRACE_S (5), TETHER_MAX_CHAIN_LENGTH (3), TETHER_SHADOW,
    TETHER_POLICY_DIR, TETHER_POLICY_PACK (default), TETHER_POLICY (true),
    TETHER_CREDENTIAL_SHARED_ACROSS_WORKFLOWS (true), TETHER_TUNING, TETHER_DISABLED,
    TETHER_SEVERITY, TETHER_RESPONSE, TETHER_SHADOW_CODES (docs/tuning.md), TETHER_AUDIT_CHAIN
    (true: with --decisions, each decision is hash-linked to the one before; tether audit
    verify FILE).

    \b
    One event per line (docs/contract.md has the contract; `tether demo --write FILE` writes
    a sample), e.g.:
      {"schema_version":1,"event_type":"tool_call.intent","event_id":"01JDX3Q9V7K2",
       "occurred_at":"2026-11-28T14:00:00.120Z","workflow_id":"wf-42","agent":{...},
       "credential":{...},"action":{"tool":"crm.search","operation":"read",...}}
    """
    from tether.bootstrap import monitor, source_gate  # noqa: PLC0415
    from tether.cli_progress import progress_reader  # noqa: PLC0415
    from tether.ocsf import ocsf_writer  # noqa: PLC0415
    from tether.replay import Replayer, summary_lines  # noqa: PLC0415

    settings = _settings(
        shadow=shadow,
        grace_s=grace_s,
        max_chain_length=max_chain_length,
        policy=False if no_policy else None,
        policy_pack=policy_pack,
        sources=sources,
        sources_mode=sources_mode,
        tuning=tuning,
    )
    _detection_ready(settings)
    try:
        mon = monitor(settings, policy_dir=policy_dir, decisions=decisions)
        gate = source_gate(settings, mon.ctx.cfg)
    except Exception as exc:  # a policy error must name its file and stop before reading input
        raise click.ClickException(str(exc)) from exc
    out = sys.stdout.buffer
    write = out.write if fmt == "tether" else ocsf_writer(out.write)
    rep = Replayer(
        mon,
        write,
        source=file,
        decisions=decisions,
        clock=clock,
        gate=gate,
        chain=decisions and settings.audit_chain and fmt == "tether",  # docs/audit.md
    )
    with _open_input(file) as stream, progress_reader(stream, file, enabled=not quiet) as lines:
        stats = rep.run(lines.lines(), lines.tick)
    out.flush()
    if not quiet:
        for line in summary_lines(stats):
            click.echo(line, err=True)


def _open_input(file: str) -> IO[bytes]:
    if file == "-":
        return sys.stdin.buffer
    try:
        return open(file, "rb")  # closed by the caller's with-block
    except OSError as exc:
        raise click.ClickException(f"cannot read {file}: {exc.strerror}") from exc


@main.command()
@click.option(
    "--workflows",
    type=click.IntRange(min=0),
    default=400,
    show_default=True,
    help="Workflows to run.",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Random seed.")
@click.option(
    "--attack-rate",
    type=click.FloatRange(0, 1),
    default=0.08,
    show_default=True,
    help="Fraction of workflows carrying one injected attack.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=400.0,
    show_default=True,
    help="Average events per second to replay at (0: as fast as possible); the default takes ~30 s.",
)
@click.option("--no-live", is_flag=True, help="Print findings as lines instead of a live view.")
@click.option(
    "--kafka",
    is_flag=True,
    help="Run the fleet through the real pipeline: emit to Kafka, a worker, follow findings "
    "(needs `make services`; TETHER_KAFKA_BOOTSTRAP).",
)
@click.option("--no-worker", is_flag=True, help="With --kafka: use the workers already running.")
@click.option(
    "--console",
    "open_console",
    is_flag=True,
    help="Also show the fleet in the live web console (docs/soc.md), on 127.0.0.1; it keeps "
    "serving after the run until Ctrl-C.",
)
@click.option(
    "--otel",
    is_flag=True,
    help="The same fleet as OpenTelemetry GenAI spans, through `tether ingest otlp`'s "
    "decoding and mapping (docs/otel.md), in process.",
)
@click.option(
    "--write",
    "write_to",
    metavar="FILE",
    type=click.Path(allow_dash=True, dir_okay=False, path_type=str),
    help="Write the fleet's telemetry to FILE as JSON Lines ('-' for stdout) and exit, instead "
    "of running it: a sample events.jsonl for `tether replay` and `tether emit`.",
)
def demo(  # click passes every option
    workflows: int,
    seed: int,
    attack_rate: float,
    rate: float,
    no_live: bool,
    kafka: bool,
    no_worker: bool,
    otel: bool,
    write_to: str | None,
    open_console: bool,
) -> None:
    """Run a synthetic agent fleet with injected attacks through the detectors, live.

    Nothing else needs to be running: the fleet (planners, researchers, summarizers, coders,
    billing and SRE bots; delegation chains, token refreshes, long batch jobs) is generated in
    process and replayed in real time through the same core that `tether replay` and the
    streaming workers run. Injected attacks: a stolen token replayed by another workload, scope
    escalation mid-workflow, a sub-agent acting with no handoff, exfiltration to an ungranted
    destination, activity after completion, and more. Ends with a summary: events, findings by
    code, revocations, detection latency, and whether every injected attack was caught.

    With --write FILE, nothing runs: the same fleet (--workflows, --seed, --attack-rate), with
    three malformed lines for the dead-letter topic, is written to FILE as one input event per
    line, dated so that the fleet ends a minute before now: a streaming worker accepts every
    event (it dead-letters events dated ahead of its clock), and the last workflows'
    revocations are still in force. The contract of each line: docs/contract.md.

    \b
    Examples:
      tether demo                                   # ~30 s, live view, then the scorecard
      tether demo --no-live --rate 0                # as fast as possible, plain lines
      tether demo --write events.jsonl              # a sample file: try `tether replay` on it
      tether demo --kafka                           # through Kafka and a worker (make services)
      tether demo --console                         # and in the live web console
      tether demo --otel                            # the fleet as OpenTelemetry spans

    \b
    Environment (--kafka only): TETHER_KAFKA_BOOTSTRAP (127.0.0.1:9092), TETHER_REDIS_URL,
    TETHER_TOPIC_PREFIX ('tether.').

    Exit status: 0 when every injected attack was caught and no benign workflow raised a
    finding, 1 otherwise, 130 when interrupted with Ctrl-C (the summary covers what arrived);
    with --write, 0 once the file is written; with --kafka, 69 when Kafka cannot be reached.
    """
    if write_to is not None:
        _write_sample(write_to, workflows=workflows, seed=seed, attack_rate=attack_rate)
        return
    if otel:
        from tether.otel.demo import run_otel_demo  # noqa: PLC0415

        sys.exit(run_otel_demo(workflows=workflows, seed=seed, attack_rate=attack_rate))
    if kafka:
        from tether.cli_stream import require_broker  # noqa: PLC0415
        from tether.demo.kafka import run_kafka_demo  # noqa: PLC0415

        require_broker(_settings(), 10.0)
        sys.exit(
            run_kafka_demo(
                _settings(),
                workflows=workflows,
                seed=seed,
                attack_rate=attack_rate,
                rate=rate,
                start_worker=not no_worker,
            )
        )
    if open_console:
        from tether.cli_soc import demo_console  # noqa: PLC0415

        sys.exit(demo_console(workflows, seed, attack_rate, rate, live=not no_live))
    from tether.demo.run import run_demo  # noqa: PLC0415

    code = run_demo(
        workflows=workflows, seed=seed, attack_rate=attack_rate, rate=rate, live=not no_live
    )
    sys.exit(code)


def _write_sample(target: str, *, workflows: int, seed: int, attack_rate: float) -> None:
    """``tether demo --write``: the fleet as JSON Lines, its last event a minute before now."""
    from datetime import UTC, datetime  # noqa: PLC0415

    from tether.demo.sample import ending_before, write_sample  # noqa: PLC0415

    start = ending_before(
        datetime.now(UTC), workflows=workflows, seed=seed, attack_rate=attack_rate
    )
    try:
        with _open_output(target) as out:
            stats = write_sample(
                out, start=start, workflows=workflows, seed=seed, attack_rate=attack_rate
            )
    except OSError as exc:
        raise click.ClickException(f"cannot write {target}: {exc.strerror}") from exc
    click.echo(
        f"wrote {stats.events:,} events ({stats.workflows} workflows, {stats.attacked} attacked) "
        f"and {stats.malformed} malformed lines to {'stdout' if target == '-' else target}",
        err=True,
    )


@contextmanager
def _open_output(target: str) -> Iterator[IO[bytes]]:
    if target == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with open(target, "wb") as out:
        yield out


@main.command()
@click.option("--bootstrap", envvar="TETHER_KAFKA_BOOTSTRAP", help="Kafka bootstrap servers.")
@click.option("--prefix", help="Topic name prefix [env TETHER_TOPIC_PREFIX; default 'tether.'].")
@click.option("--partitions", type=int, help="Partitions of tether's topics [default: 6].")
@click.option("--shadow", is_flag=True, default=None, help="Report findings, revoke nothing.")
@_TUNING
@click.option(
    "--worker-id",
    help="Stable, unique name of this worker [env TETHER_WORKER_ID]: names it in heartbeats and "
    "makes it a static group member, so after a crash it takes its partitions straight back "
    "[default: host-pid].",
)
@click.option("--web-port", type=int, help="Enable faust's web server on this port.")
@click.option(
    "--loglevel",
    default="warning",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds to keep trying to reach Kafka at start-up before giving up (exit 69).",
)
def worker(
    bootstrap: str | None,
    prefix: str | None,
    partitions: int | None,
    shadow: bool | None,
    tuning: Path | None,
    worker_id: str | None,
    web_port: int | None,
    loglevel: str,
    wait_s: float,
) -> None:
    """Run a streaming worker (faust) over Kafka: the production pipeline.

    Consumes tether.intents, correlates per workflow in changelog-backed tables, and publishes
    to tether.findings, tether.decisions and tether.revocations (plus heartbeats), keeping
    the Redis registry in step. Creates tether's topics first if they are missing. Run more
    workers with the same settings to share the partitions (each needs its own --web-port if
    the web server is on). Runs until SIGTERM or Ctrl-C.

    Exit status: 0 when stopped; 69 when Kafka cannot be reached within --wait seconds at
    start-up (one line says where it looked; a supervisor restarts it); 1 when tether's
    topics exist with other partition counts or configs than the settings ask for.

    \b
    Examples:
      tether worker
      TETHER_KAFKA_BOOTSTRAP=kafka:9092 TETHER_REDIS_URL=redis://redis:6379/0 tether worker
      tether worker --worker-id worker-1 --prefix staging.tether.

    \b
    Environment (the main ones; docs/operations.md lists all): TETHER_KAFKA_BOOTSTRAP
    (127.0.0.1:9092), TETHER_REDIS_URL (redis://127.0.0.1:6379/0), TETHER_TOPIC_PREFIX,
    TETHER_PARTITIONS (6), TETHER_WORKER_ID, TETHER_SIGNING_KEY (default: a development key
    under TETHER_HOME, .tether), TETHER_SHADOW, TETHER_POLICY_DIR, TETHER_POLICY_PACK,
    TETHER_TUNING (re-read every TETHER_TUNING_POLL_S, 2 s, when it changes), TETHER_DISABLED,
    TETHER_SEVERITY, TETHER_RESPONSE, TETHER_SHADOW_CODES (docs/tuning.md).
    TETHER_METRICS_ADDR (127.0.0.1:9464: /metrics, /healthz, /readyz; off disables),
    TETHER_LOG_FORMAT (text | json). docs/monitoring.md.
    """
    from tether.adapters.kafka_admin import (  # noqa: PLC0415
        BrokerUnavailableError,
        TopicError,
    )
    from tether.cli_stream import EXIT_UNREACHABLE, require_broker, unreachable  # noqa: PLC0415
    from tether.streaming import (  # noqa: PLC0415
        RuntimeMissingError,
        RuntimeVersionError,
        run_worker,
    )

    settings = _settings(
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        partitions=partitions,
        shadow=shadow,
        tuning=tuning,
        worker_id=worker_id,
        web_port=web_port,
    )
    _detection_ready(settings)
    require_broker(settings, wait_s)
    try:
        run_worker(settings, loglevel=loglevel)
    except BrokerUnavailableError as exc:  # it answered the probe, then went away
        click.echo(unreachable(settings.kafka_bootstrap, wait_s, exc.reason), err=True)
        sys.exit(EXIT_UNREACHABLE)
    except (TopicError, RuntimeVersionError, RuntimeMissingError) as exc:
        raise click.ClickException(str(exc)) from exc


@main.command("registry-sync")
@click.option("--bootstrap", envvar="TETHER_KAFKA_BOOTSTRAP", help="Kafka bootstrap servers.")
@click.option("--prefix", help="Topic name prefix [env TETHER_TOPIC_PREFIX; default 'tether.'].")
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds to keep trying to reach Kafka at start-up before giving up (exit 69).",
)
def registry_sync(bootstrap: str | None, prefix: str | None, wait_s: float) -> None:
    """Keep the Redis revocation registry in step with the revocations topic, without a worker.

    Every `tether worker` runs this sync in a thread; this process joins the same consumer
    group (<app id>.registry) and takes a share of the revocations partitions, so the registry
    stays in step while workers are down or being rolled. Verifies every record against
    TETHER_JWKS. Runs until SIGTERM or Ctrl-C.

    \b
    Examples:
      tether registry-sync
      TETHER_REDIS_URL=redis://redis:6379/0 TETHER_JWKS=/etc/tether/jwks.json tether registry-sync

    \b
    Environment: TETHER_KAFKA_BOOTSTRAP, TETHER_TOPIC_PREFIX, TETHER_APP_ID, TETHER_REDIS_URL,
    TETHER_JWKS, TETHER_ISSUER, TETHER_WORKER_ID (names its Kafka client),
    TETHER_METRICS_ADDR (127.0.0.1:9472: /metrics, /healthz, /readyz), TETHER_LOG_FORMAT
    (text | json). docs/monitoring.md.
    """
    from tether.cli_stream import require_broker  # noqa: PLC0415
    from tether.streaming import RuntimeMissingError, run_registry_sync  # noqa: PLC0415

    settings = _settings(kafka_bootstrap=bootstrap, topic_prefix=prefix)
    require_broker(settings, wait_s)
    try:
        run_registry_sync(settings)
    except (RuntimeMissingError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


_SCHEMA_DIR = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("schemas"),
    show_default=True,
    help="Where the schema files live.",
)


@main.group()
def schemas() -> None:
    """JSON Schemas of every record, generated from the models.

    \b
    Example:
      tether schemas check
    """


@schemas.command("export")
@_SCHEMA_DIR
def schemas_export(directory: Path) -> None:
    """Write the JSON Schema files into DIR (one per input event type and output record).

    \b
    Example:
      tether schemas export --dir schemas

    Environment: none (the schemas come from the models alone).
    """
    from tether.schemas import export  # noqa: PLC0415

    for path in export(directory):
        click.echo(f"wrote {path}")


@schemas.command("check")
@_SCHEMA_DIR
def schemas_check(directory: Path) -> None:
    """Fail (exit 1) when the committed schemas differ from the models.

    \b
    Example:
      tether schemas check --dir schemas

    Environment: none.
    """
    from tether.schemas import REGENERATE, stale  # noqa: PLC0415

    problems = stale(directory)
    if problems:
        click.echo(f"stale schemas in {directory}: {', '.join(problems)}", err=True)
        click.echo(f"regenerate with: {REGENERATE}", err=True)
        sys.exit(1)
    click.echo(f"ok: schemas in {directory} match the models")


@main.group("settings")
def settings_group() -> None:
    """tether's settings: the generated reference (docs/configuration.md).

    \b
    Examples:
      tether settings doc            # rewrite docs/configuration.md
      tether settings doc --check    # exit 1 if it is stale

    Environment: none (the settings are TETHER_* variables; docs/configuration.md lists them).
    """


@settings_group.command("doc")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("docs/configuration.md"),
    show_default=True,
    help="Where the reference is written.",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if the file differs.")
def settings_doc(out: Path, check: bool) -> None:
    """Generate the settings reference from the settings themselves (every TETHER_* variable,
    by section, with its type, default and description; internal tuning knobs last).

    \b
    Examples:
      tether settings doc                  # rewrite docs/configuration.md (make docs)
      tether settings doc --check          # exit 1 if it is stale (a unit test does this)

    Environment: none (it documents the TETHER_* variables; it reads none of them).
    """
    from tether.settings_reference import reference  # noqa: PLC0415

    text = reference()
    if check:
        current = out.read_text(encoding="utf-8") if out.exists() else ""
        if current != text:
            click.echo(f"{out} is stale; regenerate with: tether settings doc", err=True)
            sys.exit(1)
        click.echo(f"ok: {out} matches the settings")
        return
    out.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}")


@main.group()
def policy() -> None:
    """Per-call Cedar policy.

    \b
    Example:
      tether policy validate ./policies
    """


def _mount_policy_commands() -> None:
    from tether.policy.cli import validate  # noqa: PLC0415

    policy.add_command(validate)


_mount_policy_commands()


def _mount_stream_commands() -> None:
    from tether import cli_stream  # noqa: PLC0415  # its commands join the group defined above

    for name in ("topics", "emit", "watch"):
        main.add_command(getattr(cli_stream, name), name)


_mount_stream_commands()


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The request mapping and routes (TOML; docs/gateways.md). Default: bearer jti, XFCC.",
)
@click.option(
    "--http",
    "http_listen",
    default="127.0.0.1:8181",
    show_default=True,
    help="Forward-auth listener HOST:PORT ('' to disable).",
)
@click.option("--grpc", "grpc_listen", default="", help="Envoy ext_authz gRPC HOST:PORT.")
@click.option("--health", "health_listen", default="", help="GET /healthz on its own HOST:PORT.")
def gateway(
    config_path: Path | None, http_listen: str, grpc_listen: str, health_listen: str
) -> None:
    """Answer proxies' authorization checks from the revocations feed (forward-auth, ext_authz).

    2xx allows, 403 denies (header x-tether-reason says why), 503 when it cannot decide and
    the route's tier fails closed. Proxy snippets and the mapping: docs/gateways.md.

    \b
    Examples:
      tether gateway                                  # forward-auth on 127.0.0.1:8181
      tether gateway --grpc 127.0.0.1:9191 --health 127.0.0.1:8182 --config gateway.toml

    \b
    Environment: as `tether watch`: TETHER_KAFKA_BOOTSTRAP, TETHER_TOPIC_PREFIX, TETHER_JWKS,
    TETHER_ISSUER, TETHER_STALENESS_S, TETHER_FAIL_CLOSED_TIERS (unless the mapping sets
    fail_closed_tiers), TETHER_METRICS_ADDR (127.0.0.1:9465: /metrics, /healthz, /readyz),
    TETHER_LOG_FORMAT (text | json). docs/monitoring.md.
    """
    import asyncio  # noqa: PLC0415

    from tether.gateway.server import load_config, serve  # noqa: PLC0415

    try:
        config = load_config(config_path)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from exc
    from tether.logs import configure  # noqa: PLC0415

    settings = _settings()
    configure("INFO", fmt=settings.log_format, text="%(asctime)s %(name)s %(message)s")
    asyncio.run(
        serve(
            settings,
            config,
            http=http_listen or None,
            grpc_listen=grpc_listen or None,
            health=health_listen or None,
        )
    )


@main.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="base_url, state_dir and the receivers (TOML; docs/gateways.md).",
)
@click.option("--listen", default="127.0.0.1:8282", show_default=True, help="HOST:PORT.")
def ssf(config_path: Path, listen: str) -> None:
    """An SSF 1.0 transmitter of the revocations: push (RFC 8935) and poll (RFC 8936).

    Re-signs each revocation for the receiving stream's audience with the worker's key
    (TETHER_SIGNING_KEY; the JWKS at /jwks.json). Each stream's position is its own consumer
    group: a restart loses and skips nothing. Receiver setup: docs/gateways.md.

    \b
    Example:
      tether ssf --config ssf.toml --listen 127.0.0.1:8282

    \b
    Environment: TETHER_KAFKA_BOOTSTRAP, TETHER_TOPIC_PREFIX, TETHER_SIGNING_KEY (the key SETs
    are signed with), TETHER_JWKS (to verify the topic's records), TETHER_ISSUER,
    TETHER_METRICS_ADDR (127.0.0.1:9467), TETHER_LOG_FORMAT (text | json).
    """
    import asyncio  # noqa: PLC0415

    from tether.ssf.server import load_config, serve  # noqa: PLC0415

    try:
        config = load_config(config_path)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from exc
    from tether.logs import configure  # noqa: PLC0415
    from tether.observe import start  # noqa: PLC0415

    settings = _settings()
    configure("INFO", fmt=settings.log_format, text="%(asctime)s %(name)s %(message)s")
    _, ops = start("ssf", settings)  # /metrics, /healthz, /readyz (docs/monitoring.md)
    try:
        asyncio.run(serve(settings, config, listen))
    finally:
        if ops is not None:
            ops.stop()


def _mount_tuning_commands() -> None:
    from tether.cli_tuning import finding, tuning  # noqa: PLC0415

    main.add_command(tuning, "tuning")
    main.add_command(finding, "finding")


_mount_tuning_commands()


def _mount_keys_commands() -> None:
    from tether.cli_keys import keys  # noqa: PLC0415  # signing keys for revocations

    main.add_command(keys, "keys")


_mount_keys_commands()


def _mount_operator_commands() -> None:
    from tether.cli_operators import reinstate, revoke  # noqa: PLC0415  # docs/operators.md

    main.add_command(revoke, "revoke")
    main.add_command(reinstate, "reinstate")


_mount_operator_commands()


def _mount_soc_commands() -> None:
    from tether.cli_soc import alerts, console, ocsf_forward  # noqa: PLC0415  # docs/soc.md

    main.add_command(alerts, "alerts")
    main.add_command(console, "console")
    main.add_command(ocsf_forward, "ocsf-forward")


_mount_soc_commands()


def _mount_ingest_commands() -> None:
    from tether.otel.cli import ingest  # noqa: PLC0415  # OpenTelemetry ingest (docs/otel.md)

    main.add_command(ingest, "ingest")


_mount_ingest_commands()


def _mount_audit_commands() -> None:
    from tether.audit.cli import audit  # noqa: PLC0415  # the tamper-evident log (docs/audit.md)

    main.add_command(audit, "audit")


_mount_audit_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
