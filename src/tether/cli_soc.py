"""``tether alerts`` and ``tether ocsf-forward``: findings handed to the SOC (docs/soc.md)."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from tether.cli_stream import _settings, require_broker


def _stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM: the loops finish their delivery, commit, and exit."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


_bootstrap = click.option("--bootstrap", help="Kafka HOST:PORT [env TETHER_KAFKA_BOOTSTRAP].")
_prefix = click.option("--prefix", help="Topic name prefix [env TETHER_TOPIC_PREFIX].")


@click.command("alerts")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The sinks (YAML): webhook, slack, splunk_hec; see docs/soc.md.",
)
@_bootstrap
@_prefix
def alerts(config_path: Path, bootstrap: str | None, prefix: str | None) -> None:
    """Deliver findings to alert sinks: generic JSON webhook, Slack incoming webhook, Splunk HEC.

    Each sink keeps its own position on the findings topic (consumer group
    <prefix>alerts.<name>), committed only after delivery; retries with backoff while a
    receiver fails; de-duplicates by finding id; filters by severity; summarises a storm
    past its rate limit. Stops cleanly on SIGINT/SIGTERM. The config format is in
    docs/soc.md.

    \b
    Examples:
      SPLUNK_HEC_TOKEN=... tether alerts --config alerts.yaml

    \b
    Environment: TETHER_KAFKA_BOOTSTRAP, TETHER_TOPIC_PREFIX, and the variables the sinks'
    token_env name; TETHER_METRICS_ADDR (127.0.0.1:9468), TETHER_LOG_FORMAT (text | json).
    """
    from pydantic import ValidationError  # noqa: PLC0415

    from tether.logs import configure  # noqa: PLC0415
    from tether.observe import serving  # noqa: PLC0415
    from tether.soc.alert_config import load_alerts_config  # noqa: PLC0415
    from tether.soc.alerts import run_alerts  # noqa: PLC0415

    try:
        config = load_alerts_config(config_path)
        for sc in config.sinks:
            sc.token()  # a missing secret fails now, not at the first alert
    except (ValidationError, ValueError, OSError) as exc:
        raise click.ClickException(f"{config_path}: {exc}") from exc
    settings = _settings(bootstrap, prefix)
    require_broker(settings, 30.0)
    configure("INFO", fmt=settings.log_format, text="%(asctime)s %(levelname)s %(message)s")
    stop = _stop_on_signals()
    with serving("alerts", settings):  # /metrics, /healthz, /readyz (docs/monitoring.md)
        delivered = run_alerts(settings, config, stop)
    for s in delivered:
        click.echo(
            f"{s.sink.name}: sent {s.sent}, summaries {s.summaries}, "
            f"filtered {s.filtered}, duplicates {s.duplicates}, refused {s.rejected}",
            err=True,
        )


@click.command("ocsf-forward")
@_bootstrap
@_prefix
def ocsf_forward(bootstrap: str | None, prefix: str | None) -> None:
    """Re-publish every finding as an OCSF 1.8.0 Detection Finding on <prefix>findings.ocsf.

    At-least-once: input offsets are committed only after the broker acknowledged the OCSF
    records (consumer group <prefix>ocsf-forward). Creates the topic if it is missing.
    Mapping: docs/soc.md.

    \b
    Examples:
      tether ocsf-forward
      tether ocsf-forward --prefix staging.

    \b
    Environment: TETHER_KAFKA_BOOTSTRAP, TETHER_TOPIC_PREFIX, TETHER_PARTITIONS (of the new
    topic), TETHER_METRICS_ADDR (127.0.0.1:9471), TETHER_LOG_FORMAT (text | json).
    """
    from tether.logs import configure  # noqa: PLC0415
    from tether.observe import serving  # noqa: PLC0415
    from tether.soc.ocsf_forward import run_ocsf_forward  # noqa: PLC0415

    settings = _settings(bootstrap, prefix)
    require_broker(settings, 30.0)
    configure("INFO", fmt=settings.log_format, text="%(asctime)s %(levelname)s %(message)s")
    with serving("ocsf-forward", settings):  # /metrics, /healthz, /readyz (docs/monitoring.md)
        fwd = run_ocsf_forward(settings, _stop_on_signals())
    click.echo(f"published {fwd.published}, skipped {fwd.skipped}", err=True)


@click.command("console")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=int, default=8765, show_default=True)
@click.option(
    "--history",
    type=click.IntRange(min=0),
    default=2000,
    show_default=True,
    help="Records read back per topic partition at start.",
)
@_bootstrap
@_prefix
def console(host: str, port: int, history: int, bootstrap: str | None, prefix: str | None) -> None:
    """A live web console: findings and revocations as they happen, each workflow's timeline
    and delegation chain, pipeline health.

    Sign-in needs the credential in TETHER_CONSOLE_TOKEN (it will not start without one).
    Binds to 127.0.0.1 unless --host says otherwise. docs/soc.md has a tour.

    \b
    Examples:
      TETHER_CONSOLE_TOKEN=$(openssl rand -hex 24) tether console
      tether console --port 9000 --history 10000

    \b
    Environment: TETHER_CONSOLE_TOKEN (required), TETHER_KAFKA_BOOTSTRAP, TETHER_TOPIC_PREFIX,
    TETHER_METRICS_ADDR (127.0.0.1:9469).
    """
    import asyncio  # noqa: PLC0415
    import os  # noqa: PLC0415

    from tether.observe import serving  # noqa: PLC0415
    from tether.soc.console import serve  # noqa: PLC0415

    token = os.environ.get("TETHER_CONSOLE_TOKEN", "")
    if len(token) < 16:  # noqa: PLR2004
        raise click.ClickException(
            "set TETHER_CONSOLE_TOKEN to a credential of at least 16 characters "
            "(there is no anonymous access to findings)"
        )
    settings = _settings(bootstrap, prefix)
    require_broker(settings, 30.0)

    def started(bound: int) -> None:
        click.echo(f"tether console on http://{host}:{bound}/ (sign in with the credential)")

    with serving("console", settings), contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings, token, host=host, port=port, history=history, started=started))


def demo_console(workflows: int, seed: int, attack_rate: float, rate: float, *, live: bool) -> int:
    """``tether demo --console``: the in-process demo, shown in a local console as it runs."""
    import os  # noqa: PLC0415
    import secrets  # noqa: PLC0415

    from tether.demo.run import run_demo  # noqa: PLC0415
    from tether.soc.console import LocalConsole  # noqa: PLC0415

    token = os.environ.get("TETHER_CONSOLE_TOKEN") or secrets.token_urlsafe(18)
    local = LocalConsole(token)
    port = local.start()
    click.echo(f"tether console on http://127.0.0.1:{port}/ (sign in with: {token})", err=True)
    code = run_demo(
        workflows=workflows, seed=seed, attack_rate=attack_rate, rate=rate, live=live, tap=local.tap
    )
    click.echo(f"console still serving at http://127.0.0.1:{port}/ (Ctrl-C to stop)", err=True)
    _stop_on_signals().wait()
    local.stop()
    return code
