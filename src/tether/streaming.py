"""Where the streaming worker lives: the one place the CLI finds it.

The worker runtime (the faust app) is the repository's ``streams/`` folder. It imports tether;
tether never imports it, so the package stays usable (replay, the SDK, watchers, gateways)
without faust. An installed wheel ships the folder as ``tether_streams`` (pyproject.toml:
``[tool.hatch.build.targets.wheel.sources]``), so that nothing is installed under a
generic top-level name; a repository checkout imports it as ``streams``. ``RUNTIME`` lists both,
in that order, and ``run_worker`` runs the first one present.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import NoReturn

from tether.settings import Settings

RUNTIME = ("tether_streams", "streams")
"""The worker runtime's package: as installed from the wheel, then as in a repository checkout."""


class RuntimeVersionError(RuntimeError):
    """An installed faust-streaming or aiokafka is not the version the runtime is pinned to
    (``streams.faust_fixes.PINNED``); raised by the runtime at start-up."""


class RuntimeMissingError(RuntimeError):
    """Neither name in ``RUNTIME`` can be imported: tether was installed without its worker."""


def runtime_package() -> str:
    """The name the worker runtime is importable under here.

    Raises:
        RuntimeMissingError: it is not installed.
    """
    for name in RUNTIME:
        if importlib.util.find_spec(name) is not None:
            return name
    raise RuntimeMissingError(
        f"tether's worker runtime is not installed (looked for {' and '.join(RUNTIME)}): "
        "install tether from its wheel or run from a checkout of the repository"
    )


def run_worker(settings: Settings, *, loglevel: str = "warning") -> NoReturn:
    """Create missing topics, then run the faust worker until it is stopped (SIGTERM/SIGINT)."""
    main = importlib.import_module(f"{runtime_package()}.main")
    main.run_worker(settings, loglevel=loglevel)
    raise SystemExit(0)  # the faust worker exits the process itself


def run_registry_sync(settings: Settings) -> None:
    """Keep the Redis registry in step with the revocations topic until SIGTERM/SIGINT."""
    main = importlib.import_module(f"{runtime_package()}.main")
    main.run_registry_sync(settings)
