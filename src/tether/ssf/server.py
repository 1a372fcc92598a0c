"""Running ``tether ssf``: the configuration file, the stream store, the listener."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tomllib
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from tether.security.keys import signer_from_settings
from tether.settings import Settings
from tether.ssf.app import Transmitter, ssf_app, verifier_factory
from tether.ssf.streams import Receiver, StreamStore

_log = logging.getLogger(__name__)


class SsfConfig(BaseModel):
    """``tether ssf --config FILE`` (TOML)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="the URL receivers reach this transmitter at")
    state_dir: Path = Field(Path(".tether/ssf"), description="where the streams are kept")
    receivers: list[Receiver] = Field(min_length=1)


def load_config(path: Path) -> SsfConfig:
    """The transmitter's configuration.

    Raises:
        ValueError: not TOML, or not a valid configuration.
    """
    with path.open("rb") as fh:
        return SsfConfig.model_validate(tomllib.load(fh))


async def serve(
    settings: Settings, config: SsfConfig, listen: str, stop: asyncio.Event | None = None
) -> None:
    """Run the transmitter until ``stop`` (or SIGTERM/SIGINT)."""
    tx = Transmitter(
        settings,
        StreamStore(config.state_dir / "streams.json"),
        signer_from_settings(settings),
        verifier_factory(settings),
        config.receivers,
        config.base_url,
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await tx.start()
    runner = web.AppRunner(ssf_app(tx), access_log=None)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    await web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port)).start()
    _log.info("tether ssf: transmitter %s on %s", config.base_url, listen)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await tx.stop()
