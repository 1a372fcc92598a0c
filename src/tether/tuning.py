"""The tuning file (``TETHER_TUNING``, ``tether replay --tuning``): per finding code enabled,
severity, response and shadow, and scoped, expiring exceptions, without code (docs/tuning.md).

The file only fills ``tether.core.config.DetectionConfig``: the pure core applies it and never
reads a file or a clock. Where the file and the environment (``TETHER_DISABLED``,
``TETHER_SEVERITY``, ``TETHER_RESPONSE``, ``TETHER_SHADOW_CODES``) both speak of a code, the
file wins; what the file does not name stays as the environment set it.

A mistake is never silently ignored: an unknown code, key or value is an error that names the
file, the line and the field (and, for a code, the known codes). The streaming worker re-reads
the file when it changes (``TuningWatch``); an invalid new revision is logged loudly and the
revision in force is kept, never replaced by no tuning at all.

Every finding and decision a tuning shaped carries its revision (``tuning_revision``): the
file's ``revision:`` label, if any, then ``sha256:`` and a digest of the effective per-code
tuning (environment included), so that editing comments or layout keeps the revision and any
change of meaning makes a new one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from time import monotonic
from typing import Annotated, Any, Final

import orjson
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from tether.core.codes import RULES
from tether.core.config import MAX_EXCEPTIONS, DetectionConfig, TuningException
from tether.models.common import Severity
from tether.models.outputs import Response

_log = logging.getLogger("tether.tuning")

MAX_BYTES: Final = 4 * 1024 * 1024
"""A tuning file larger than this is refused (an exceptions list of that size is a mistake)."""


def _known_code(code: str) -> str:
    if code not in RULES:
        raise ValueError(
            f"unknown finding code {code!r}; the known codes are: {', '.join(sorted(RULES))}"
        )
    return code


Code = Annotated[str, AfterValidator(_known_code)]


class CodeTuning(BaseModel):
    """One code's entry under ``codes:``; an absent key leaves the code as it was."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool | None = Field(None, description="false: the code never fires")
    severity: Severity | None = None
    response: list[Response] | None = Field(
        None, description="targets it revokes; [] or [alert]: alert only"
    )
    shadow: bool | None = Field(None, description="reported, never enforced")


class TuningFile(BaseModel):
    """The whole file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    revision: str | None = Field(
        None, min_length=1, max_length=128, description="a label of your own (a change ticket)"
    )
    codes: dict[Code, CodeTuning] = Field(default_factory=dict)
    exceptions: list[TuningException] = Field(default_factory=list, max_length=MAX_EXCEPTIONS)

    @field_validator("codes", "exceptions", mode="before")
    @classmethod
    def _empty(cls, value: object, info: ValidationInfo) -> object:
        """``exceptions:`` with nothing under it is an empty list, not an error."""
        if value is None:
            return {} if info.field_name == "codes" else []
        return value


class TuningError(ValueError):
    """A tuning file that cannot be used, with its path, line and field."""


def apply(base: DetectionConfig, tuning: TuningFile) -> DetectionConfig:
    """``base`` with the file's per-code tuning on top, and the resulting revision."""
    disabled = set(base.disabled)
    severity = dict(base.severity)
    response = dict(base.response)
    shadow = set(base.shadow_codes)
    for code, t in tuning.codes.items():
        if t.enabled is not None:
            (disabled.discard if t.enabled else disabled.add)(code)
        if t.severity is not None:
            severity[code] = t.severity
        if t.response is not None:
            response[code] = tuple(t.response)
        if t.shadow is not None:
            (shadow.add if t.shadow else shadow.discard)(code)
    values = dict(base)  # the fields as they are (validated again below, whole)
    values.update(
        disabled=frozenset(disabled),
        severity=severity,
        response=response,
        shadow_codes=frozenset(shadow),
        exceptions=(*base.exceptions, *tuning.exceptions),
    )
    cfg = DetectionConfig.model_validate(values)
    return cfg.model_copy(update={"tuning_revision": revision(cfg, tuning.revision)})


def revision(cfg: DetectionConfig, label: str | None) -> str | None:
    """``[label@]sha256:<16 hex>`` of the effective per-code tuning; None when there is none."""
    exceptions = []
    for e in cfg.exceptions:
        doc = e.model_dump(mode="json")
        doc["codes"] = sorted(e.codes)
        exceptions.append(doc)
    body: dict[str, object] = {
        "disabled": sorted(cfg.disabled),
        "severity": dict(sorted(cfg.severity.items())),
        "response": {k: list(v) for k, v in sorted(cfg.response.items())},
        "shadow_codes": sorted(cfg.shadow_codes),
        "exceptions": exceptions,
    }
    if label is None and not any(body.values()):
        return None
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    return f"{label}@sha256:{digest}" if label else f"sha256:{digest}"


class _Loader(yaml.SafeLoader):
    """Safe YAML with timestamps kept as text (pydantic reads RFC 3339 and insists on a zone;
    YAML's own reading would let a zone-less time through as naive)."""


_Loader.yaml_implicit_resolvers = {
    k: [r for r in v if r[0] != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse(text: str, where: str) -> TuningFile:
    """Validate the text of a tuning file (``where`` names it in errors)."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise TuningError(f"{where}: invalid YAML: {exc}") from exc
    if root is None:
        return TuningFile()
    if not isinstance(root, yaml.MappingNode):
        raise TuningError(
            f"{where}: line {root.start_mark.line + 1}: the file must be a mapping "
            "(revision, codes, exceptions)"
        )
    _no_duplicate_keys(root, where)
    raw: Any = yaml.load(text, Loader=_Loader)  # noqa: S506  # _Loader is a SafeLoader
    try:
        return TuningFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if p != "[key]")
            line = _line_of(root, loc)
            field = ".".join(str(p) for p in loc) or "(file)"
            got = err.get("input")
            shown = f" (got {got!r})" if isinstance(got, str | int | float | bool) else ""
            problems.append(f"{where}: line {line}: {field}: {err['msg']}{shown}")
        raise TuningError("\n".join(problems)) from None


def _no_duplicate_keys(node: yaml.Node, where: str) -> None:
    """YAML keeps the last of two equal keys: a tuning written twice is refused instead."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for k, v in node.value:
            key = str(k.value)
            if key in seen:
                raise TuningError(f"{where}: line {k.start_mark.line + 1}: duplicate key {key!r}")
            seen.add(key)
            _no_duplicate_keys(v, where)
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            _no_duplicate_keys(v, where)


def _line_of(node: yaml.Node, loc: tuple[int | str, ...]) -> int:
    """The 1-based line of the deepest node of ``loc`` present in the file."""
    line = node.start_mark.line
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if str(k.value) == str(part):
                    line = k.start_mark.line
                    child = v
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line
        if child is None:
            break
        node = child
    return line + 1


def read(path: Path) -> TuningFile:
    """Read and validate a tuning file."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise TuningError(f"{path}: cannot read the tuning file: {exc.strerror}") from exc
    if mode & 0o022:
        # whoever can write it can disable every detection: as guarded as the signing key
        raise TuningError(
            f"{path}: writable by group or others (mode {mode & 0o777:o}); run: chmod go-w {path}"
        )
    if len(data) > MAX_BYTES:
        raise TuningError(f"{path}: larger than {MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TuningError(f"{path}: not UTF-8: {exc}") from exc
    return parse(text, str(path))


def load_tuning(path: Path, base: DetectionConfig) -> DetectionConfig:
    """``base`` tuned by the file at ``path``.

    Raises:
        TuningError: the file is unreadable or invalid (the message names file, line, field).
    """
    tuning = read(path)
    try:
        return apply(base, tuning)
    except ValidationError as exc:  # e.g. too many exceptions with the environment's
        raise TuningError(f"{path}: {exc}") from None


def env_mapping(value: object, what: str) -> object:
    """``CODE=VALUE,CODE=VALUE`` (or JSON, or a mapping) from an environment variable.

    A value VALUE may list responses separated by ``|``; ``CODE=`` is an empty list."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("{"):
        return orjson.loads(text)
    out: dict[str, object] = {}
    for part in text.replace(";", ",").split(","):
        item = part.strip()
        if not item:
            continue
        if "=" not in item:
            raise ValueError(f"{what}: {item!r} is not CODE=SEVERITY / CODE=RESPONSE[|RESPONSE]")
        code, _, val = item.partition("=")
        code, val = code.strip(), val.strip()
        out[code] = [v.strip() for v in val.split("|") if v.strip()] if what == "response" else val
    return out


def env_codes(value: object) -> object:
    """``code,code`` (or a JSON list) from an environment variable."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return orjson.loads(text)
    return [c.strip() for c in text.split(",") if c.strip()]


class TuningWatch:
    """Re-reads a tuning file when it changes, at most once per ``interval_s``.

    ``poll`` returns the new configuration when a valid file with a new revision has been read,
    else None. An unreadable or invalid file is logged at ERROR (with its line and field) and
    the configuration in force is kept: a typo during an edit never removes every tuning."""

    def __init__(
        self,
        path: Path,
        base: DetectionConfig,
        *,
        interval_s: float = 2.0,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        self.path = path
        self.base = base
        self.interval_s = interval_s
        self._clock = clock
        self._checked = clock()
        self._stat = self._signature()
        self.cfg = load_tuning(path, base)  # at start-up an invalid file stops the process
        self.errors = 0

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def poll(self) -> DetectionConfig | None:
        """The new configuration if the file changed to a valid new revision, else None."""
        now = self._clock()
        if now - self._checked < self.interval_s:
            return None
        self._checked = now
        stat = self._signature()
        if stat == self._stat:
            return None
        self._stat = stat
        try:
            cfg = load_tuning(self.path, self.base)
        except TuningError as exc:
            self.errors += 1
            _log.error(
                "tuning file changed but cannot be used; keeping revision %s: %s",
                self.cfg.tuning_revision,
                exc,
            )
            return None
        if cfg == self.cfg:
            return None
        _log.warning(
            "tuning reloaded from %s: revision %s -> %s",
            self.path,
            self.cfg.tuning_revision,
            cfg.tuning_revision,
        )
        self.cfg = cfg
        return cfg


def describe(cfg: DetectionConfig) -> Mapping[str, object]:
    """The effective per-code tuning, for ``tether tuning check``."""
    return {
        "tuning_revision": cfg.tuning_revision,
        "codes": {
            code: {
                "enabled": cfg.enabled(code),
                "severity": cfg.rule(code).severity,
                "response": list(cfg.rule(code).response),
                "shadow": cfg.shadowed(code),
            }
            for code in sorted(RULES)
        },
        "exceptions": [e.model_dump(mode="json") for e in cfg.exceptions],
    }
