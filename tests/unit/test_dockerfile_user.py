"""The Docker image's non-root user can write what it must, checked without a Docker engine.

The Dockerfile is read (its ``useradd``, ``mkdir``, ``chown``, ``chmod``, ``ENV``, ``WORKDIR`` and
``USER`` lines), and its filesystem is laid out again in a temporary directory with the same
owners and modes. Then a real non-root user of this machine with the image's uid runs tether
there, as the image's user would: ``tether keys generate`` into its home (``TETHER_HOME``) and
into the compose volumes' mount points, and the worker's own start-up step that creates faust's
data directory. A new named volume takes the owner of the image directory it is mounted on, so
a mount point the user owns is a volume it can write.

The layout test needs root (to create the user and chown) and a system Python of the same minor
version as this one (the virtualenv's interpreter may live where the user cannot read); it is
skipped, saying why, elsewhere. The manual check with an engine: docs/monitoring.md.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SIM_USER = "tether-sim"
BUILT_FROM_IMAGE = ("keys", "worker", "fleet")  # compose services running the image


@dataclass
class Image:
    """What the Dockerfile says about users, directories and the environment."""

    uid: int | None = None  # the user USER names, resolved through useradd
    home: str | None = None
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)  # created by mkdir or useradd --create-home
    chowned: list[tuple[str, bool]] = field(default_factory=list)  # (path, recursive) to uid
    modes: dict[str, int] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)  # name -> uid


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    joined = text.replace("\\\n", " ")
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        op, _, rest = stripped.partition(" ")
        yield op.upper(), rest.strip()


def _run(image: Image, command: str) -> None:
    for part in command.split("&&"):
        words = shlex.split(part)
        if not words:
            continue
        cmd, args = words[0], words[1:]
        if cmd == "useradd":
            uid = int(args[args.index("--uid") + 1])
            name = args[-1]
            image.users[name] = uid
            home = args[args.index("--home-dir") + 1] if "--home-dir" in args else f"/home/{name}"
            if "--create-home" in args or "-m" in args:
                image.dirs.add(home)
                image.chowned.append((home, False))  # useradd gives the new home to the user
            image.env.setdefault(f"home:{uid}", home)
        elif cmd == "mkdir":
            image.dirs.update(a for a in args if not a.startswith("-"))
        elif cmd == "chown":
            recursive = "-R" in args
            paths = [a for a in args if not a.startswith("-")]
            owner = paths[0].split(":")[0]
            uid = int(owner) if owner.isdigit() else image.users.get(owner)
            if uid is not None and uid != 0:
                image.chowned.extend((p, recursive) for p in paths[1:])
        elif cmd == "chmod":
            rest = [a for a in args if not a.startswith("-")]
            for p in rest[1:]:
                image.modes[p] = int(rest[0], 8)


def parse(text: str) -> Image:
    """The parts of a Dockerfile that decide what its user may write."""
    image = Image()
    for op, rest in _instructions(text):
        if op == "RUN":
            _run(image, rest)
        elif op == "ENV":
            for word in shlex.split(rest):
                key, _, value = word.partition("=")
                image.env[key] = value
        elif op == "WORKDIR":
            image.workdir = rest
        elif op == "USER":
            user = rest.split(":")[0]
            image.uid = int(user) if user.isdigit() else image.users.get(user)
    if image.uid is not None:
        image.home = image.env.get("HOME") or image.env.get(f"home:{image.uid}")
    return image


def owned(image: Image, path: str) -> bool:
    """Whether the image's user owns ``path`` (as the Dockerfile leaves it)."""
    p = PurePosixPath(path)
    for chowned, recursive in image.chowned:
        c = PurePosixPath(chowned)
        if p == c or (recursive and c in p.parents):
            return True
    return False


def tether_home(image: Image) -> str:
    """TETHER_HOME as the image's processes resolve it (relative: under the working directory)."""
    home = image.env.get("TETHER_HOME", ".tether")
    return home if home.startswith("/") else str(PurePosixPath(image.workdir) / home)


def compose_mounts() -> set[str]:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = set()
    for name in BUILT_FROM_IMAGE:
        for volume in doc["services"][name].get("volumes", []):
            source, target, *mode = volume.split(":")
            if "ro" not in mode and not source.startswith((".", "/")):
                mounts.add(target)  # a named volume the service writes
    return mounts


DOCKERFILE = (ROOT / "Dockerfile").read_text()

# The layout before issue 24 (USER tether in /app, TETHER_HOME relative): the checks must catch it.
BEFORE = """
FROM python:3.11-slim
WORKDIR /app
RUN pip install . && useradd --create-home --uid 10001 tether
USER tether
CMD ["tether", "worker"]
"""


def problems(text: str) -> list[str]:
    """What the image's user could not write, read from the Dockerfile alone."""
    image = parse(text)
    found = []
    if image.uid in {None, 0}:
        return ["the image runs as root (or USER names no user it creates)"]
    if not owned(image, tether_home(image)) and not owned(
        image, str(PurePosixPath(tether_home(image)).parent)
    ):
        found.append(f"TETHER_HOME {tether_home(image)} is not the user's")
    if image.home is None or not owned(image, image.home):
        found.append(f"the home {image.home} is not the user's")
    if not owned(image, image.workdir):
        found.append(f"the working directory {image.workdir} is not the user's")
    found.extend(
        f"compose volume mount point {m} is not created and owned by the user"
        for m in sorted(compose_mounts())
        if not (owned(image, m) and m in image.dirs)
    )
    return found


def test_the_image_user_owns_its_home_its_state_and_the_compose_volumes() -> None:
    assert problems(DOCKERFILE) == []


def test_the_check_catches_the_layout_before_the_fix() -> None:
    found = problems(BEFORE)
    assert any("TETHER_HOME /app/.tether" in p for p in found)
    assert any("working directory /app" in p for p in found)


# -- the same, as a real non-root user -------------------------------------------------------


def _system_python() -> str | None:
    for candidate in (f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}",):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _why_not_simulated() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create the image's user"
    if shutil.which("runuser") is None or shutil.which("useradd") is None:
        return "needs runuser and useradd"
    if _system_python() is None:
        return f"needs /usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    return None


@pytest.fixture
def image_user() -> Iterator[tuple[str, int]]:
    uid = parse(DOCKERFILE).uid
    assert uid is not None
    try:
        existing = pwd.getpwuid(uid).pw_name
    except KeyError:
        existing = None
    if existing is not None and existing != SIM_USER:
        pytest.skip(f"uid {uid} is taken on this machine by {existing}")
    created = existing is None
    if created:
        subprocess.run(  # fixed arguments
            ["useradd", "--uid", str(uid), "--no-create-home", "--shell", "/bin/false", SIM_USER],  # noqa: S607
            check=True,
        )
    try:
        yield SIM_USER, uid
    finally:
        if created:
            subprocess.run(["userdel", SIM_USER], check=False)  # noqa: S607


def _lay_out(image: Image, root: Path, uid: int) -> None:
    """The image's directories under ``root``: root-owned, except what the Dockerfile chowns."""
    for d in sorted({*image.dirs, image.workdir, "/app"}):
        (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for base, _, _ in os.walk(root):
        os.chown(base, 0, 0)
        os.chmod(base, 0o755)  # noqa: S103  # as an image's directories are
    for path, recursive in image.chowned:
        target = root / path.lstrip("/")
        if not target.exists():
            continue
        os.chown(target, uid, uid)
        if recursive:
            for base, dirs, files in os.walk(target):
                for name in [*dirs, *files]:
                    os.chown(Path(base) / name, uid, uid)
    for path, mode in image.modes.items():
        target = root / path.lstrip("/")
        if target.exists():
            os.chmod(target, mode)


SCRIPT = """
import json, sys
from pathlib import Path
from tether.cli import main
from tether.settings import Settings

def attempt(fn):
    try:
        fn()
        return "ok"
    except SystemExit as exc:
        return "ok" if not exc.code else f"exit {exc.code}"
    except Exception as exc:
        return repr(exc)

def faust_datadir():
    from streams.app import _faust_app  # the worker's start-up step that makes it
    _faust_app(Settings())

results = {
    "uid": str(__import__("os").getuid()),
    "home": attempt(lambda: main(["keys", "generate"], standalone_mode=False)),
    "faust": attempt(faust_datadir),
    "app": attempt(lambda: open(sys.argv[1], "w")),
}
for mount in sys.argv[2:]:
    results[mount] = attempt(
        lambda: main(["keys", "generate", "--dir", mount], standalone_mode=False)
    )
print(json.dumps(results))
"""


def simulate(dockerfile: str, user: str, uid: int) -> dict[str, str]:
    """Lay ``dockerfile``'s image out and run ``SCRIPT`` in it as ``user``: what it could do."""
    image = parse(dockerfile)
    root = Path(tempfile.mkdtemp(prefix="tether-image-", dir="/tmp"))
    try:
        root.chmod(0o755)
        _lay_out(image, root, uid)

        def inside(path: str) -> str:
            return str(root / path.lstrip("/"))

        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": inside(image.home or "/"),
            "TETHER_HOME": inside(tether_home(image)),
            "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}:{sysconfig.get_paths()['purelib']}",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        mounts = [inside(m) for m in sorted(compose_mounts())]
        done = subprocess.run(  # fixed arguments
            [  # noqa: S607
                "runuser",
                "-u",
                user,
                "--",
                "env",
                "-i",
                *(f"{k}={v}" for k, v in env.items()),
                str(_system_python()),
                "-c",
                SCRIPT,
                inside("/app/x"),
                *mounts,
            ],
            cwd=inside(image.workdir),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        results: dict[str, str] = json.loads(done.stdout.splitlines()[-1])
        return {k.removeprefix(str(root)): v for k, v in results.items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.skipif(_why_not_simulated() is not None, reason=str(_why_not_simulated()))
def test_a_real_user_with_the_image_uid_writes_its_home_and_the_volumes(
    image_user: tuple[str, int],
) -> None:
    user, uid = image_user
    results = simulate(DOCKERFILE, user, uid)
    assert results.pop("uid") == str(uid)
    assert "PermissionError" in results.pop("app")  # /app stays root's
    assert results == {"home": "ok", "faust": "ok"} | dict.fromkeys(compose_mounts(), "ok")
