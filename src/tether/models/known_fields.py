"""A record's JSON text with every unknown member removed, for the codec's second look.

The contract ignores unknown fields, whatever they hold. pydantic-core's JSON parser (the
codec's fast path) cannot hold everything JSON can: it stops at 200 levels of nesting, and it
refuses a lone surrogate escape (``"\\ud800"``) or an integer too large for a float. orjson stops
at 1,024 levels, Python's ``json`` at its recursion limit and at 4,300-digit integers. An emitter
that adds such a field to a valid event must not divert the event to the dead letters, so when
the fast path fails the codec asks this module for the record with only the members the event's
model knows (at every level: the record, ``agent``, ``credential``, ``grant``, ``action``,
``delegation``) and validates that instead. A known field's value is copied verbatim, so it is
judged exactly as the fast path judges it; only unknown members are skipped, and they are still
checked to be JSON (a record that is not JSON is not an event, wherever the fault lies).

Cost: linear in the record. Values are skipped by the C scanner of Python's ``json`` (with
number conversion turned off); a value nested too deep for it is skipped by an iterative scanner
(:func:`_skip_deep`: no recursion, a list as the stack). A 64 KiB record nested 30,000 levels
deep costs a few milliseconds, paid only by records the fast path refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import NoneType, UnionType
from typing import Final, NoReturn, TypeAlias, Union, get_args, get_origin

from pydantic import BaseModel

Spec: TypeAlias = dict[str, "Spec | None"]
"""The members a model knows: name -> the nested model's spec, or None for any other value."""


def model_spec(model: type[BaseModel]) -> Spec:
    """The known members of ``model`` and, for nested models, theirs."""
    spec: Spec = {}
    for name, info in model.model_fields.items():
        nested = _nested_model(info.annotation)
        spec[info.alias or name] = model_spec(nested) if nested is not None else None
    return spec


def _nested_model(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, UnionType):
        models = [a for a in get_args(annotation) if a is not NoneType]
        if len(models) == 1:
            return _nested_model(models[0])
    return None


class JsonFault(ValueError):
    """The record is not JSON (``reason`` ``invalid_json``) or not an object (``not_an_object``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class KnownFields:
    """The pruned record and what the codec reads of it to classify a rejection."""

    text: str
    top: dict[str, str] = field(default_factory=dict)
    """Top-level known member -> its raw JSON text (the last one, if repeated)."""
    leaves: list[tuple[str, str]] = field(default_factory=list)
    """(dotted path, raw JSON text) of every known value kept that is not a nested model."""


def known_fields(text: str, specs: dict[str, Spec], fallback: Spec) -> KnownFields:
    """``text`` (one JSON object) with only the members its event type's spec knows.

    ``specs`` maps an ``event_type`` to its model's spec; a record whose ``event_type`` is
    missing or unknown is pruned with ``fallback`` (it will be rejected anyway).

    Raises:
        JsonFault: ``text`` is not JSON, or is JSON but not an object.
    """
    start = _ws(text, 0)
    if text.startswith("{", start):
        members, end = _members(text, start)
    else:
        members, end = None, _skip(text, start)
    end = _ws(text, end)
    if end != len(text):
        _fault(text, end, "extra data after the JSON value")
    if members is None:
        raise JsonFault("not_an_object", "expected a JSON object")
    top = {key: text[s:e] for key, s, e in members}
    spec = specs.get(_event_type(top.get("event_type")), fallback)
    out = KnownFields("")
    out.text = _rebuild(text, members, spec, "", out.leaves)
    out.top = {k: v for k, v in top.items() if k in spec}
    return out


def _event_type(raw: str | None) -> str:
    if raw is None or not raw.startswith('"'):
        return ""
    try:
        value, _ = _scanstring(raw, 1, True)
    except ValueError:
        return ""
    return value


def _rebuild(
    text: str,
    members: list[tuple[str, int, int]],
    spec: Spec,
    path: str,
    leaves: list[tuple[str, str]],
) -> str:
    parts = []
    for key, s, e in members:
        if key not in spec:
            continue
        nested = spec[key]
        where = f"{path}{key}"
        if nested is not None and text.startswith("{", s):
            value = _rebuild(text, _members(text, s)[0], nested, where + ".", leaves)
        else:
            value = text[s:e]
            leaves.append((where, value))
        parts.append(f"{json.dumps(key)}:{value}")
    return "{" + ",".join(parts) + "}"


# --- scanning -----------------------------------------------------------------------------------

_WHITESPACE: Final = re.compile(r"[ \t\n\r]*")
_number: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?").match
_literal: Final = re.compile(r"true|false|null|NaN|Infinity|-Infinity").match


def _ws(text: str, i: int) -> int:
    """Past the JSON whitespace at ``text[i]``."""
    m = _WHITESPACE.match(text, i)
    return m.end() if m is not None else i


def _ignore(_: str) -> None:
    return None


# Python's C scanner, told not to convert numbers (no int-digit limit, no float work). It takes
# NaN, Infinity and -Infinity, which are not JSON, as pydantic's parser does: the second look
# must accept every record the fast path would have accepted but for an unreadable field.
_scan_once: Final[Callable[[str, int], tuple[object, int]]] = json.JSONDecoder(
    parse_int=_ignore, parse_float=_ignore, parse_constant=_ignore, strict=True
).scan_once  # type: ignore[attr-defined]  # set by JSONDecoder.__init__, absent from typeshed
# The C string scanner: (text, index after the opening quote, strict) -> (value, end).
_scanstring: Final[Callable[[str, int, bool], tuple[str, int]]] = json.decoder.scanstring  # type: ignore[attr-defined]


def _fault(text: str, at: int, what: str) -> NoReturn:
    raise JsonFault("invalid_json", f"not valid JSON: {what} at char {at}")


def _skip(text: str, i: int) -> int:
    """The end of the JSON value that starts at ``text[i]``."""
    try:
        return _scan_once(text, i)[1]
    except StopIteration:
        _fault(text, i, "expected a value")
    except RecursionError:
        return _skip_deep(text, i)
    except ValueError as err:
        _fault(text, getattr(err, "pos", i), str(getattr(err, "msg", err)))


def _members(text: str, i: int) -> tuple[list[tuple[str, int, int]], int]:
    """The members (key, value start, value end) of the object at ``text[i]`` and its end."""
    members: list[tuple[str, int, int]] = []
    i = _ws(text, i + 1)
    if text.startswith("}", i):
        return members, i + 1
    while True:
        if not text.startswith('"', i):
            _fault(text, i, "expected a member name")
        key, i = _string(text, i)
        i = _ws(text, i)
        if not text.startswith(":", i):
            _fault(text, i, "expected ':'")
        start = _ws(text, i + 1)
        end = _skip(text, start)
        members.append((key, start, end))
        i = _ws(text, end)
        if text.startswith(",", i):
            i = _ws(text, i + 1)
        elif text.startswith("}", i):
            return members, i + 1
        else:
            _fault(text, i, "expected ',' or '}'")


def _string(text: str, i: int) -> tuple[str, int]:
    try:
        return _scanstring(text, i + 1, True)
    except ValueError as err:
        _fault(text, getattr(err, "pos", i), str(getattr(err, "msg", err)))


def _skip_deep(text: str, i: int) -> int:
    """``_skip`` without recursion: for values nested deeper than the C scanner goes.

    The only state is the stack of the open containers' closing characters; each step reads one
    token, so the cost is linear in the value's length whatever its depth.
    """
    closers: list[str] = []
    while True:
        i = _value_or_opener(text, _ws(text, i), closers)
        if i < 0:  # a container opened: its first value (or member) comes next
            i = -i
            continue
        # A value ended at i: close containers until one expects another value.
        while True:
            if not closers:
                return i
            i = _ws(text, i)
            if text.startswith(",", i):
                i += 1
                if closers[-1] == "}":
                    i = _member_name(text, _ws(text, i))
                break
            if not text.startswith(closers[-1], i):
                _fault(text, i, f"expected ',' or '{closers[-1]}'")
            closers.pop()
            i += 1


def _value_or_opener(text: str, i: int, closers: list[str]) -> int:
    """Past a scalar or an empty container at ``text[i]``; or, if a container opens there, push
    its closer and return minus the position of its first value."""
    c = text[i : i + 1]
    if c in ("[", "{"):
        closer = "]" if c == "[" else "}"
        j = _ws(text, i + 1)
        if text.startswith(closer, j):
            return j + 1
        closers.append(closer)
        return -(_member_name(text, j) if c == "{" else j)
    if c == '"':
        return _string(text, i)[1]
    m = _number(text, i) or _literal(text, i)
    if m is None:
        _fault(text, i, "expected a value")
    return m.end()


def _member_name(text: str, i: int) -> int:
    """Past ``"name" :`` at ``text[i]``; the value starts after it."""
    if not text.startswith('"', i):
        _fault(text, i, "expected a member name")
    i = _ws(text, _string(text, i)[1])
    if not text.startswith(":", i):
        _fault(text, i, "expected ':'")
    return i + 1
