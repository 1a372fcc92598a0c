"""Decode a record of the Collector's Kafka exporter into flat spans.

A record is one serialized ``ExportTraceServiceRequest`` (wire-identical to ``TracesData``):
a whole exported batch (1..N ResourceSpans, each 1..N spans, of many traces), or, with
``partition_traces_by_id``, the spans of one trace. ``otlp_proto`` is protobuf binary;
``otlp_json`` is the OTLP JSON encoding, which is *not* proto3 JSON: trace and span ids are hex,
not base64 (a naive ``json_format.Parse`` decodes a 32-hex trace id as base64 into 24 wrong
bytes), enums are integers and unknown fields must be ignored.

One bad span never costs the record's other spans: spans with invalid ids are reported in
``Decoded.invalid`` (the adapter dead-letters them) and the rest are kept. A record that cannot
be parsed at all raises :class:`UndecodableError`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status, TracesData

Encoding = Literal["otlp_proto", "otlp_json", "auto"]
ENCODINGS: Final = ("otlp_proto", "otlp_json", "auto")
AttrValue = str | bool | int | float | bytes | tuple[Any, ...] | None
Attributes = dict[str, AttrValue]

_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
MAX_ARRAY: Final = 256  # array attribute values kept (the contract's list bound)


class UndecodableError(ValueError):
    """The record is not an OTLP traces payload in the expected encoding."""


@dataclass(frozen=True, slots=True)
class SpanView:
    """One span with what tether reads: hex ids, times in ns, attributes as Python values."""

    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex
    parent_span_id: str  # "" for a root span
    name: str
    start_ns: int
    end_ns: int
    attributes: Attributes
    resource: Attributes
    error: bool = False  # status code ERROR


@dataclass(slots=True)
class Decoded:
    """The spans of one record, and the spans that were rejected (index: why)."""

    spans: list[SpanView] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)


def decode(data: bytes, encoding: Encoding = "auto") -> Decoded:
    """Decode one exporter record.

    ``auto`` treats a record whose first non-blank byte is ``{`` as ``otlp_json`` and anything
    else as ``otlp_proto`` (a protobuf ``TracesData`` never starts with ``{``: that would be
    field 15, group wire type, which it does not have).

    Raises:
        UndecodableError: empty, not parseable in the encoding, or not a traces payload.
    """
    if not data:
        raise UndecodableError("empty record")
    if encoding == "auto":
        encoding = "otlp_json" if data.lstrip()[:1] == b"{" else "otlp_proto"
    if encoding == "otlp_json":
        return _parse_json(data)
    try:
        message: TracesData = TracesData.FromString(data)
    except (DecodeError, ValueError) as exc:
        salvaged = _salvage(data)
        if salvaged is None or not salvaged.spans:
            raise UndecodableError(f"not OTLP protobuf (otlp_proto): {exc}") from exc
        return salvaged
    return _flatten(message)


# --- salvage: one span protobuf refuses must not cost a batch its other spans -----------------------
# The Collector batches many processes' spans into one record; if the record fails to parse as a
# whole (e.g. one span nests attribute arrays deeper than protobuf's limit), it is split along
# its wire format (TracesData.resource_spans = 1, ResourceSpans.resource = 1 / scope_spans = 2,
# ScopeSpans.spans = 2) and each span is parsed on its own.
def _fields(data: bytes) -> list[tuple[int, bytes]] | None:
    """The length-delimited fields of a message (number, payload); None if the wire format is
    broken. Other wire types are skipped."""
    out: list[tuple[int, bytes]] = []
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _varint(data, pos)
        if tag is None:
            return None
        wire = tag & 7
        if wire == 0:  # varint
            _, pos = _varint(data, pos)
            if _ is None:
                return None
        elif wire == 1:  # 64-bit
            pos += 8
        elif wire == 5:  # 32-bit  # noqa: PLR2004
            pos += 4
        elif wire == 2:  # noqa: PLR2004  # length-delimited
            size, pos = _varint(data, pos)
            if size is None or pos + size > end:
                return None
            out.append((tag >> 3, data[pos : pos + size]))
            pos += size
        else:  # groups: not in OTLP
            return None
    return out if pos == end else None


def _varint(data: bytes, pos: int) -> tuple[int | None, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:  # noqa: PLR2004
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None, pos


def _salvage(data: bytes) -> Decoded | None:
    top = _fields(data)
    if top is None:
        return None
    out = Decoded()
    for r_index, rs_bytes in enumerate(p for n, p in top if n == 1):
        rs = _fields(rs_bytes)
        where_r = f"resource_spans[{r_index}]"
        if rs is None:
            out.invalid.append(f"{where_r}: undecodable (broken wire format)")
            continue
        try:
            resource = attributes(
                Resource.FromString(b"".join(p for n, p in rs if n == 1)).attributes
            )
        except (DecodeError, ValueError) as exc:
            out.invalid.append(f"{where_r}.resource: undecodable ({exc}); its spans skipped")
            continue
        for s_index, ss_bytes in enumerate(p for n, p in rs if n == 2):  # noqa: PLR2004
            ss = _fields(ss_bytes)
            where_s = f"{where_r}.scope_spans[{s_index}]"
            if ss is None:
                out.invalid.append(f"{where_s}: undecodable (broken wire format)")
                continue
            for index, span_bytes in enumerate(p for n, p in ss if n == 2):  # noqa: PLR2004
                try:
                    span = Span.FromString(span_bytes)
                except (DecodeError, ValueError) as exc:
                    out.invalid.append(f"{where_s}.spans[{index}]: undecodable ({exc})")
                    continue
                _add(out, span, resource, f"{where_s}.spans[{index}]")
    return out


def _parse_json(data: bytes) -> Decoded:
    """OTLP JSON straight into spans (no protobuf detour: 4x faster, and a span of the wrong
    shape costs only itself). Unknown fields are ignored, as the OTLP spec requires."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UndecodableError(f"not JSON (otlp_json): {exc}") from exc
    if not isinstance(doc, dict):
        raise UndecodableError("otlp_json: the record is JSON but not an object")
    resource_spans = doc.get("resourceSpans", [])
    if not isinstance(resource_spans, list):
        raise UndecodableError("otlp_json: resourceSpans is not a list")
    out = Decoded()
    for r_index, rs in enumerate(resource_spans):
        where_r = f"resource_spans[{r_index}]"
        if not isinstance(rs, dict):
            out.invalid.append(f"{where_r}: not an object")
            continue
        res = rs.get("resource") or {}
        resource = _json_attributes(res.get("attributes") if isinstance(res, dict) else None)
        if resource is None:
            out.invalid.append(f"{where_r}.resource: attributes malformed; its spans skipped")
            continue
        for s_index, ss in enumerate(_list(rs.get("scopeSpans"))):
            for index, span in enumerate(_list(ss.get("spans") if isinstance(ss, dict) else None)):
                where = f"{where_r}.scope_spans[{s_index}].spans[{index}]"
                problem = _json_span(out, span, resource)
                if problem is not None:
                    out.invalid.append(f"{where}: {problem}")
    return out


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _hex_id(value: object, size: int) -> str | None:
    """A lowercase hex id of ``size`` bytes, "" when absent, None when malformed."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or len(value) != 2 * size:
        return None
    try:
        return bytes.fromhex(value).hex()
    except ValueError:
        return None


def _json_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _json_span(out: Decoded, span: object, resource: Attributes) -> str | None:
    if not isinstance(span, dict):
        return "not an object"
    trace_id = _hex_id(span.get("traceId"), 16)
    span_id = _hex_id(span.get("spanId"), 8)
    parent = _hex_id(span.get("parentSpanId"), 8)
    if not trace_id or trace_id == _ZERO_TRACE:
        return "trace_id is not 16 non-zero bytes"
    if not span_id or span_id == _ZERO_SPAN:
        return "span_id is not 8 non-zero bytes"
    attrs = _json_attributes(span.get("attributes"))
    start = _json_int(span.get("startTimeUnixNano", 0))
    end = _json_int(span.get("endTimeUnixNano", 0))
    name = span.get("name", "")
    if attrs is None or start is None or end is None or not isinstance(name, str):
        return "malformed attributes, times or name"
    status = span.get("status")
    code = status.get("code") if isinstance(status, dict) else None
    out.spans.append(
        SpanView(
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id="" if not parent or parent == _ZERO_SPAN else parent,
            name=name,
            start_ns=start,
            end_ns=end,
            attributes=attrs,
            resource=resource,
            error=code in (Status.STATUS_CODE_ERROR, "STATUS_CODE_ERROR"),
        )
    )
    return None


def _json_attributes(kvs: object) -> Attributes | None:
    if kvs is None:
        return {}
    if not isinstance(kvs, list):
        return None
    out: Attributes = {}
    for kv in kvs:
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            return None
        if kv["key"] not in out:
            out[kv["key"]] = _json_value(kv.get("value"), 0)
    return out


_MAX_JSON_DEPTH: Final = 32


def _json_value(v: object, depth: int) -> AttrValue:  # noqa: PLR0911  # one return per case
    if not isinstance(v, dict) or depth > _MAX_JSON_DEPTH:
        return None
    if "stringValue" in v:
        s = v["stringValue"]
        return s if isinstance(s, str) else None
    if "boolValue" in v:
        b = v["boolValue"]
        return b if isinstance(b, bool) else None
    if "intValue" in v:
        return _json_int(v["intValue"])
    if "doubleValue" in v:
        d = v["doubleValue"]
        if isinstance(d, int | float) and not isinstance(d, bool):
            return float(d)
        return float(d) if d in ("NaN", "Infinity", "-Infinity") else None
    if "arrayValue" in v:
        arr = v["arrayValue"]
        values = _list(arr.get("values") if isinstance(arr, dict) else None)
        return tuple(_json_value(x, depth + 1) for x in values[:MAX_ARRAY])
    if "bytesValue" in v:
        try:
            return base64.b64decode(v["bytesValue"], validate=True)
        except (ValueError, TypeError):
            return None
    return None


def _flatten(message: TracesData) -> Decoded:
    out = Decoded()
    for r_index, rs in enumerate(message.resource_spans):
        resource = attributes(rs.resource.attributes)
        for s_index, ss in enumerate(rs.scope_spans):
            for index, span in enumerate(ss.spans):
                where = f"resource_spans[{r_index}].scope_spans[{s_index}].spans[{index}]"
                _add(out, span, resource, where)
    return out


def _add(out: Decoded, span: Span, resource: Attributes, where: str) -> None:
    trace_id = span.trace_id.hex()
    span_id = span.span_id.hex()
    parent = span.parent_span_id.hex()
    if len(trace_id) != 32 or trace_id == _ZERO_TRACE:  # noqa: PLR2004
        out.invalid.append(f"{where}: trace_id is not 16 non-zero bytes")
        return
    if len(span_id) != 16 or span_id == _ZERO_SPAN:  # noqa: PLR2004
        out.invalid.append(f"{where}: span_id is not 8 non-zero bytes")
        return
    if parent and (len(parent) != 16 or parent == _ZERO_SPAN):  # noqa: PLR2004
        parent = ""  # an all-zero or malformed parent is no parent (OTLP spec)
    out.spans.append(
        SpanView(
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=parent,
            name=span.name,
            start_ns=span.start_time_unix_nano,
            end_ns=span.end_time_unix_nano,
            attributes=attributes(span.attributes),
            resource=resource,
            error=span.status.code == Status.STATUS_CODE_ERROR,
        )
    )


def attributes(kvs: Iterable[KeyValue]) -> Attributes:
    """``KeyValue`` list → dict of Python values (arrays as tuples, bounded; maps dropped).

    The first occurrence of a repeated key wins (OTLP says keys are unique; a sender that
    repeats one cannot override an earlier value this way).
    """
    out: Attributes = {}
    for kv in kvs:
        if kv.key not in out:
            out[kv.key] = _value(kv.value)
    return out


def _value(v: AnyValue) -> AttrValue:  # noqa: PLR0911  # one return per oneof case
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "bool_value":
        return v.bool_value
    if which == "int_value":
        return v.int_value
    if which == "double_value":
        return v.double_value
    if which == "array_value":
        return tuple(_value(x) for x in v.array_value.values[:MAX_ARRAY])
    if which == "bytes_value":
        return v.bytes_value
    return None  # kvlist and empty values: tether reads no attribute of those shapes
