"""The layers hold: the pure core imports no I/O, and the package never imports the faust shell.

``tether.core`` and ``tether.models`` are a pure fold (``(session, event) -> (session,
outputs)``): no I/O, no clock, no randomness, so that replay, the demo and the streaming workers
give the same answers from the same events. Two checks enforce it:

* **Direct imports** (read from the source, so an import inside a function counts too): a module
  of ``tether.core`` or ``tether.models`` imports none of ``FORBIDDEN_IN_CORE`` and nothing of
  tether outside ``tether.core`` and ``tether.models``. The list names the Kafka, Redis and HTTP
  clients, faust and its runtime, Cedar (evaluated behind a port, ``tether.core.ports``), the
  signing libraries, and the standard library's network, process, thread, file-system, logging,
  clock and randomness modules. ``sys`` stays allowed (``sys.intern``, ``sys.getsizeof``), and
  so do ``orjson`` and ``pydantic``: the contracts are pydantic models encoded with orjson.
* **Transitive imports** (a fresh interpreter imports every module of both packages): none of
  the third-party I/O libraries, and no adapter layer of tether, is loaded. The standard
  library's modules cannot be checked this way (pydantic itself loads ``socket`` and
  ``threading``).

``src/`` never imports ``streams`` (the faust shell imports tether, not the reverse): the CLI
finds the worker through ``tether.streaming``, by the runtime package's name.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PURE = ("tether.core", "tether.models")

FORBIDDEN_IN_CORE = frozenset(
    {
        # third-party I/O and runtimes
        "confluent_kafka",
        "faust",
        "aiokafka",
        "mode",
        "redis",
        "requests",
        "httpx",
        "aiohttp",
        "cedarpy",
        "joserfc",
        "cryptography",
        "rich",
        "click",
        # the standard library's I/O, processes, threads, clock and randomness
        "socket",
        "ssl",
        "http",
        "urllib",
        "asyncio",
        "selectors",
        "subprocess",
        "multiprocessing",
        "threading",
        "concurrent",
        "os",
        "io",
        "pathlib",
        "shutil",
        "tempfile",
        "glob",
        "logging",
        "time",
        "random",
        "secrets",
        "uuid",
        # the repository's faust shell
        "streams",
    }
)
THIRD_PARTY_IO = (
    "confluent_kafka",
    "faust",
    "aiokafka",
    "mode",
    "redis",
    "requests",
    "httpx",
    "cedarpy",
    "joserfc",
    "tether.adapters",
    "tether.sdk",
    "tether.security",
    "tether.settings",
    "tether.policy",
    "streams",
)
#: Modules of src/ that import ``streams``: none (the CLI finds the worker through
#: ``tether.streaming.RUNTIME``, by name).
KNOWN_STREAMS_IMPORTERS: frozenset[str] = frozenset()


def _imports(path: Path, *, located: Path | None = None) -> list[tuple[int, str]]:
    """Every module a file imports (absolute names; relative imports resolved), with its line.

    ``located``: where under src/ the file counts as living (for its relative imports).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join((located or path).relative_to(SRC).with_suffix("").parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def _modules(*packages: str) -> list[Path]:
    return sorted(
        path for package in packages for path in (SRC / package.replace(".", "/")).rglob("*.py")
    )


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def test_the_pure_core_imports_no_io_library() -> None:
    offences = [
        f"{path.relative_to(SRC)}:{line}: imports {name}"
        for path in _modules(*PURE)
        for line, name in _imports(path)
        if _top(name) in FORBIDDEN_IN_CORE or (_top(name) == "tether" and not name.startswith(PURE))
    ]
    assert offences == [], "tether.core and tether.models must stay pure:\n" + "\n".join(offences)


def test_importing_the_pure_core_loads_no_io_library() -> None:
    probe = (
        "import importlib, pkgutil, sys\n"
        f"for pkg in {PURE!r}:\n"
        "    mod = importlib.import_module(pkg)\n"
        "    for info in pkgutil.walk_packages(mod.__path__, pkg + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "print('\\n'.join(sys.modules))\n"
    )
    done = subprocess.run(  # our own interpreter, a fixed script
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(SRC)},
    )
    loaded = done.stdout.split()
    leaked = sorted(
        name
        for name in loaded
        if any(name == b or name.startswith(b + ".") for b in THIRD_PARTY_IO)
    )
    assert leaked == []


def test_the_layering_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = SRC / "tether" / "core" / "_layering_probe.py"  # never written: parsed from tmp
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    import redis\n    from ..adapters import kafka_admin\n")
    tree_imports = _imports(source, located=module)
    assert (2, "redis") in tree_imports
    assert (3, "tether.adapters") in tree_imports


def _streams_importers() -> set[str]:
    return {
        str(path.relative_to(SRC))
        for path in _modules("tether")
        for _, name in _imports(path)
        if _top(name) == "streams"
    }


def test_src_imports_streams_nowhere_new() -> None:
    assert _streams_importers() - KNOWN_STREAMS_IMPORTERS == set()


def test_src_never_imports_streams() -> None:
    assert _streams_importers() == set()
