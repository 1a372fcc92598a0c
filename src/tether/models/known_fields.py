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

Cost: linear in the record, paid only by records the fast path refused. Values are skipped by
the C scanner of Python's ``json`` (number conversion off, cyclic GC paused); a value nested too
deep for it by :func:`_skip_deep`, an iterative scanner whose tokens are runs, so a deep but
regular value is a few Python steps, and the worst shapes (nesting interleaved with values, as
in ``[1,[1,[1,...``) a few per level. ``benchmarks/hostile_records.py`` prints the cost per shape.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from types import NoneType, UnionType
from typing import Final, Literal, NoReturn, TypeAlias, Union, get_args, get_origin

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

    def __init__(self, reason: Literal["invalid_json", "not_an_object"], message: str) -> None:
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

_WS: Final = r"[ \t\n\r]*"
# A JSON string as Python's strict scanner takes it: no raw control characters, the JSON escapes
# only, and any \uXXXX (a lone surrogate too).
_STRING: Final = r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'
_MEMBER_NAME: Final = rf"{_STRING}{_WS}:"
_SCALAR: Final = (
    r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|true|false|null|NaN|Infinity|-Infinity"
)
_ATOM: Final = rf"(?:{_STRING}|{_SCALAR})"


def _shallow(item: str) -> str:
    """A JSON value that is ``item``, or an array or object of ``item`` values."""
    member = rf"{_MEMBER_NAME}{_WS}{item}"
    return (
        rf"(?:{item}"
        rf"|\[{_WS}(?:{item}(?:{_WS},{_WS}{item})*+{_WS})?\]"
        rf"|\{{{_WS}(?:{member}(?:{_WS},{_WS}{member})*+{_WS})?\}})"
    )


# A value nested at most two deep (``[[1]]``, ``{"a":[1]}``): one token however wide it is.
_FLAT: Final = _shallow(_shallow(_ATOM))
_MORE_ELEMENTS: Final = rf"(?:{_WS},{_WS}{_FLAT}(?!{_WS}:))++"
_MORE_MEMBERS: Final = rf"(?:{_WS},{_WS}{_MEMBER_NAME}{_WS}{_FLAT})++"
# An opening unit: openers, then the scalars and separators that follow before the next
# container opens (``[[1,2,`` or ``{"a":1,"b":``).
_BRACKETS: Final = rf"\[+(?:{_WS}\[+)*+"
_ARRAY_OPENING: Final = rf"{_BRACKETS}(?:{_WS}{_ATOM}{_WS},)*+"
_OBJECT_OPENING: Final = rf"\{{{_WS}{_MEMBER_NAME}(?:{_WS}{_ATOM}{_WS},{_WS}{_MEMBER_NAME})*+"
_OPENING: Final = rf"(?:{_ARRAY_OPENING}|{_OBJECT_OPENING})"
# A closing unit: closers, then the scalars that follow them in the parent (``]],3,4``).
_CLOSERS: Final = rf"[\]}}]+(?:{_WS}[\]}}]+)*+"
_AFTER_CLOSE_ELEMENTS: Final = rf"(?:{_WS},{_WS}{_ATOM}(?!{_WS}:))++"
_AFTER_CLOSE_MEMBERS: Final = rf"(?:{_WS},{_WS}{_MEMBER_NAME}{_WS}{_ATOM})++"
_CLOSING: Final = rf"{_CLOSERS}(?:{_AFTER_CLOSE_ELEMENTS}|{_AFTER_CLOSE_MEMBERS})?"
# One token of a value being skipped, after whitespace: a shallow value with the run of
# shallow values after it (tried first: ``[[1]],[[1]]`` is not a run of openers), a run of
# opening units, or a run of closing units. Python steps are few whatever the depth or width:
# ``[1,[1,[1,...]]]`` is three tokens, ``[[[1],2],3]`` three.
_TOKEN: Final = re.compile(
    rf"""{_WS}(?:
      (?P<flat>{_FLAT}(?:(?P<members>{_MORE_MEMBERS})|(?P<elements>{_MORE_ELEMENTS}))?)
    | (?P<open>{_OPENING}(?:{_WS}{_OPENING})*+)
    | (?P<close>{_CLOSING}(?:{_WS}{_CLOSING})*+)
    | (?P<next_member>,{_WS}{_MEMBER_NAME})
    | (?P<comma>,)
    )""",
    re.VERBOSE,
)
_OPEN, _CLOSE, _NEXT_MEMBER, _COMMA, _MEMBERS, _ELEMENTS, _FLAT_VALUE = (
    _TOKEN.groupindex[name]
    for name in ("open", "close", "next_member", "comma", "members", "elements", "flat")
)
_SEPARATORS: Final = {(_NEXT_MEMBER, "}"), (_COMMA, "]")}
# Each opening unit of a run: its array openers, or "" for an object.
_OPENING_KIND: Final = re.compile(rf"({_BRACKETS})(?:{_WS}{_ATOM}{_WS},)*+|{_OBJECT_OPENING}")
# Each closing unit of a run: its closers, then the scalars after them if they are elements
# (group 2) or members (group 3) of the container the unit returns to.
_CLOSING_KIND: Final = re.compile(
    rf"({_CLOSERS})(?:({_AFTER_CLOSE_ELEMENTS})|({_AFTER_CLOSE_MEMBERS}))?"
)
_NO_WS: Final = str.maketrans("", "", " \t\n\r")
_WHITESPACE: Final = re.compile(_WS)
_MEMBER_START: Final = re.compile(rf"{_WS}(?P<name>{_STRING}){_WS}:{_WS}")
_AFTER_MEMBER: Final = re.compile(rf"{_WS}([,}}])")

# What may come next while skipping.
_VALUE, _VALUE_OR_CLOSE, _COMMA_OR_CLOSE = range(3)


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
    """The end of the JSON value that starts at ``text[i]``.

    The C scanner builds the value (then drops it): with the cyclic GC paused, as tens of
    thousands of nested lists would otherwise trigger collection after collection (5x slower).
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        return _scan_once(text, i)[1]
    except StopIteration:
        _fault(text, i, "expected a value")
    except RecursionError:
        return _skip_deep(text, i)
    except ValueError as err:
        _fault(text, getattr(err, "pos", i), str(getattr(err, "msg", err)))
    finally:
        if paused:
            gc.enable()


def _members(text: str, i: int) -> tuple[list[tuple[str, int, int]], int]:
    """The members (name, value start, value end) of the object at ``text[i]`` and its end."""
    members: list[tuple[str, int, int]] = []
    i = _ws(text, i + 1)
    if text.startswith("}", i):
        return members, i + 1
    while True:
        m = _MEMBER_START.match(text, i)
        if m is None:
            _fault(text, i, "expected a member name and ':'")
        name = m["name"]
        key = name[1:-1] if "\\" not in name else _scanstring(name, 1, True)[0]
        end = _skip(text, m.end())
        members.append((key, m.end(), end))
        after = _AFTER_MEMBER.match(text, end)
        if after is None:
            _fault(text, end, "expected ',' or '}'")
        i = after.end()
        if after[1] == "}":
            return members, i


def _skip_deep(text: str, i: int) -> int:
    """``_skip`` without recursion, for values nested deeper than the C scanner goes.

    The state is what may come next and the stack of open containers' closing characters. A
    token is a run (see ``_TOKEN``) whose parts are checked against the stack with a few string
    operations, so the cost is linear in the value's length, with few Python steps per token.
    """
    closers: list[str] = []
    expect = _VALUE
    scan = _TOKEN.scanner(text, i).match  # type: ignore[attr-defined]  # untyped in typeshed
    while (m := scan()) is not None:
        kind = m.lastindex
        if kind == _FLAT_VALUE and expect <= _VALUE_OR_CLOSE and _fits(m, closers):
            expect = _COMMA_OR_CLOSE
        elif kind == _OPEN and expect <= _VALUE_OR_CLOSE:
            run = m[_OPEN]
            for unit in _OPENING_KIND.findall(run):
                closers.extend("]" * unit.count("[") if unit else "}")
            expect = _VALUE_OR_CLOSE if run.endswith("[") else _VALUE
        elif kind == _CLOSE and expect >= _VALUE_OR_CLOSE:
            end = _close(text, m.start(_CLOSE), m.end(), closers)
            if end is None:
                break
            if not closers:
                return end
            expect = _COMMA_OR_CLOSE
        elif expect == _COMMA_OR_CLOSE and (kind, closers[-1]) in _SEPARATORS:
            expect = _VALUE
        else:
            break
        if not closers:  # a flat value at the top: the value is complete
            return int(m.end())
    _fault(text, _ws(text, m.start() if m is not None else _scan_end(text, i)), "unexpected text")


def _fits(m: re.Match[str], closers: list[str]) -> bool:
    """Whether a flat value's run of further members or elements suits the open container."""
    if m.start(_MEMBERS) >= 0:
        return closers[-1:] == ["}"]
    if m.start(_ELEMENTS) >= 0:
        return closers[-1:] == ["]"]
    return True


def _close(text: str, start: int, end: int, closers: list[str]) -> int | None:
    """Apply the closing units in ``text[start:end]`` to ``closers``; None if they do not fit.

    Each unit's closers must match the stack, and scalars after them must be elements or
    members as the container they return to requires. If the stack empties (the value ends),
    the position just after the closer that emptied it is returned: what follows belongs to the
    caller. Otherwise ``end``. Cost: linear in the closers consumed, not in the stack's depth.
    """
    if "," not in text[start:end]:  # closers only (the usual case)
        return _close_plain(text, start, end, closers)
    depth = len(closers)
    units = [
        (run.translate(_NO_WS), elements, members)
        for run, elements, members in _CLOSING_KIND.findall(text, start, end)
    ]
    need = min(depth, sum(len(run) for run, _, _ in units) + 1)  # +1: the last unit's parent
    top = "".join(reversed(closers[depth - need :]))  # the stack, top first, as far as needed
    done = 0
    for n, (run, elements, members) in enumerate(units):
        if done + len(run) >= depth:  # the value ends within this unit
            if top[done:] != run[: depth - done]:
                return None
            closers.clear()
            unit_start = next(islice(_CLOSING_KIND.finditer(text, start, end), n, None)).start()
            return _past_closers(text, unit_start, depth - done)
        if top[done : done + len(run)] != run:
            return None
        done += len(run)
        parent = top[done]
        if (elements and parent != "]") or (members and parent != "}"):
            return None
    del closers[depth - done :]
    return end


def _close_plain(text: str, start: int, end: int, closers: list[str]) -> int | None:
    """``_close`` for a run of closers alone."""
    run = text[start:end].translate(_NO_WS)
    depth = len(closers)
    count = min(len(run), depth)
    if "".join(reversed(closers[depth - count :])) != run[:count]:
        return None
    del closers[depth - count :]
    return end if closers else _past_closers(text, start, count)


def _past_closers(text: str, at: int, count: int) -> int:
    """The position after the ``count``-th closer of the run of closers at ``text[at]``."""
    if text.startswith("]" * count, at) or text.startswith("}" * count, at):
        return at + count  # the usual run, without whitespace
    # Whitespace between: bisect on how many closers a prefix holds (C-level counts).
    lo, hi = at + count, len(text)
    while lo < hi:
        mid = (lo + hi) // 2
        if text.count("]", at, mid) + text.count("}", at, mid) < count:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _scan_end(text: str, i: int) -> int:
    """Where the token scanner starting at ``i`` stopped (for the error position)."""
    end = i
    scan = _TOKEN.scanner(text, i).match  # type: ignore[attr-defined]  # untyped in typeshed
    while (m := scan()) is not None:
        end = m.end()
    return end
