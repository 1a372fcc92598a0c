"""``tether ingest otlp``: the command (mounted by ``tether.cli``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group()
def ingest() -> None:
    """Feed tether from other telemetry: OpenTelemetry spans (docs/otel.md)."""


@ingest.command("otlp")
@click.option(
    "--bootstrap",
    metavar="HOST:PORT[,...]",
    help="Kafka bootstrap servers [env TETHER_KAFKA_BOOTSTRAP; default 127.0.0.1:9092].",
)
@click.option(
    "--prefix", help="tether's topic prefix [env TETHER_TOPIC_PREFIX; default 'tether.']."
)
@click.option(
    "--topic",
    envvar="TETHER_OTLP_TOPIC",
    default="otlp_spans",
    show_default=True,
    help="The Collector Kafka exporter's traces topic [env TETHER_OTLP_TOPIC].",
)
@click.option(
    "--encoding",
    envvar="TETHER_OTLP_ENCODING",
    type=click.Choice(["auto", "otlp_proto", "otlp_json"]),
    default="auto",
    show_default=True,
    help="The exporter's traces::encoding; auto tells JSON from protobuf per record "
    "[env TETHER_OTLP_ENCODING].",
)
@click.option(
    "--group",
    envvar="TETHER_OTLP_GROUP",
    help="Consumer group [env TETHER_OTLP_GROUP; default '<prefix>otel-ingest'].",
)
@click.option(
    "--mapping",
    envvar="TETHER_OTLP_MAPPING",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Mapping file (YAML) [env TETHER_OTLP_MAPPING; default: built-in defaults].",
)
@click.option(
    "--trace-idle",
    "trace_idle_s",
    type=click.FloatRange(min=0.01),
    help="Seconds a trace without its root span is held after its last span "
    "[default: the mapping's trace_idle_s, 10].",
)
@click.option(
    "--source-key",
    envvar="TETHER_OTLP_SOURCE_KEY",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="This source's key file (`tether keys source NAME`): sign every event "
    "[env TETHER_OTLP_SOURCE_KEY].",
)
@click.option(
    "--source",
    "source_name",
    envvar="TETHER_OTLP_SOURCE",
    help="Its name in the worker's sources.yaml [env TETHER_OTLP_SOURCE; default: the "
    "mapping's source, 'otel'].",
)
@click.option(
    "--create-topics/--no-create-topics",
    "create",
    default=True,
    show_default=True,
    help="Create tether's topics (tether.coverage among them) at start-up.",
)
@click.option(
    "--loglevel",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def otlp(  # noqa: PLR0913, PLR0917  # click passes every option
    bootstrap: str | None,
    prefix: str | None,
    topic: str,
    encoding: str,
    group: str | None,
    mapping: Path | None,
    trace_idle_s: float | None,
    source_key: Path | None,
    source_name: str | None,
    create: bool,
    loglevel: str,
) -> None:
    """Read OTLP traces that the OpenTelemetry Collector's Kafka exporter writes, and produce
    tether events to <prefix>intents, keyed by workflow id.

    GenAI execute_tool, MCP tools/call and OpenInference TOOL spans become tool_call.intent
    events attributed to the nearest invoke_agent span of their trace; the root agent span
    starts and completes the workflow; an agent span under another agent's is a delegation.
    Credentials and grants come from tether.* attributes (the SDK's TetherSpanProcessor sets
    them) or the mapping file. What a check lacked is counted on <prefix>coverage; records and
    spans that cannot be decoded or mapped go to <prefix>deadletter with their reason.
    At least once: offsets are committed only after the produced records are acknowledged.

    \b
    Examples:
      tether ingest otlp                                    otlp_spans, auto-detected encoding
      tether ingest otlp --topic otel.traces --encoding otlp_json --mapping otel-mapping.yaml
      TETHER_OTLP_TOPIC=otlp_spans TETHER_KAFKA_BOOTSTRAP=kafka:9092 tether ingest otlp
      tether keys source otel --dir keys && tether ingest otlp --source-key keys/otel.jwk.json

    \b
    Environment (flags win): TETHER_KAFKA_BOOTSTRAP, TETHER_TOPIC_PREFIX, TETHER_OTLP_TOPIC,
    TETHER_OTLP_ENCODING, TETHER_OTLP_GROUP, TETHER_OTLP_MAPPING, TETHER_OTLP_SOURCE_KEY,
    TETHER_OTLP_SOURCE, and the Kafka security
    settings TETHER_KAFKA__* (docs/kafka-security.md); TETHER_METRICS_ADDR (127.0.0.1:9470),
    TETHER_LOG_FORMAT (text | json).
    """
    from tether.adapters.kafka_admin import (  # noqa: PLC0415  # keep `tether --help` fast
        TopicError,
        create_topics,
    )
    from tether.logs import configure  # noqa: PLC0415
    from tether.metrics import READINGS, labelled  # noqa: PLC0415
    from tether.observe import serving  # noqa: PLC0415
    from tether.otel.adapter import OtlpIngest, tune_gc  # noqa: PLC0415
    from tether.otel.config import MappingConfig  # noqa: PLC0415
    from tether.security.proof import SourceKey  # noqa: PLC0415
    from tether.settings import Settings  # noqa: PLC0415
    from tether.topics import topic_specs  # noqa: PLC0415

    overrides = {"kafka_bootstrap": bootstrap, "topic_prefix": prefix}
    settings = Settings.model_validate({k: v for k, v in overrides.items() if v is not None})
    configure(
        loglevel,
        fmt=settings.log_format,
        text="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = MappingConfig.load(mapping)
    except (ValueError, OSError) as exc:
        raise click.ClickException(f"mapping file {mapping}: {exc}") from exc
    if trace_idle_s is not None:
        config = config.model_copy(update={"trace_idle_s": trace_idle_s})
    if source_name is not None:
        config = config.model_copy(update={"source": source_name})
    key = None
    if source_key is not None:
        try:
            key = SourceKey.load(config.source, source_key)
        except (ValueError, OSError) as exc:
            raise click.ClickException(f"source key {source_key}: {exc}") from exc
    if create:
        specs = topic_specs(
            settings.topic_prefix,
            settings.partitions,
            min_insync_replicas=settings.kafka.min_insync_replicas,
            decisions_retention_ms=settings.decisions_retention_ms,
        )
        try:
            create_topics(settings, specs)
        except (TopicError, TimeoutError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(69)
    adapter = OtlpIngest(
        settings,
        config,
        source_topic=topic,
        encoding=encoding,  # type: ignore[arg-type]  # one of click's choices
        group_id=group,
        source_key=key,
    )
    adapter.install_signal_handlers()
    tune_gc()
    READINGS.add(
        "ingest",
        lambda: [labelled("tether_ingest", "OTLP ingest counts, by kind", "kind", adapter.stats)],
    )
    click.echo(
        f"tether ingest otlp: {topic} ({encoding}) -> {settings.topic('intents')}, "
        f"group {adapter.group_id}",
        err=True,
    )
    with serving("ingest", settings):  # /metrics, /healthz, /readyz (docs/monitoring.md)
        adapter.run()
