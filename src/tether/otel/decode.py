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
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status, TracesData

Encoding = Literal["otlp_proto", "otlp_json", "auto"]
ENCODINGS: Final = ("otlp_proto", "otlp_json", "auto")
AttrValue = str | bool | int | float | bytes | tuple[Any, ...] | None
Attributes = dict[str, AttrValue]

_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
_ID_KEYS: Final = ("traceId", "spanId", "parentSpanId")
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
    message = _parse_json(data) if encoding == "otlp_json" else _parse_proto(data)
    return _flatten(message)


def _parse_proto(data: bytes) -> TracesData:
    try:
        message: TracesData = TracesData.FromString(data)
    except (DecodeError, ValueError) as exc:
        raise UndecodableError(f"not OTLP protobuf (otlp_proto): {exc}") from exc
    return message


def _parse_json(data: bytes) -> TracesData:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UndecodableError(f"not JSON (otlp_json): {exc}") from exc
    if not isinstance(doc, dict):
        raise UndecodableError("otlp_json: the record is JSON but not an object")
    try:
        _hex_ids_to_base64(doc)
        message: TracesData = json_format.ParseDict(doc, TracesData(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, AttributeError) as exc:
        raise UndecodableError(f"not an OTLP traces payload (otlp_json): {exc}") from exc
    return message


def _hex_ids_to_base64(doc: dict[str, Any]) -> None:
    """Rewrite the hex ``traceId``/``spanId``/``parentSpanId`` of spans and links to the base64
    that proto3 JSON parsing expects. A value that is not hex becomes no id, so that its span
    is rejected as invalid (never silently reinterpreted as base64)."""
    for rs in _list(doc.get("resourceSpans")):
        for ss in _list(rs.get("scopeSpans") if isinstance(rs, dict) else None):
            for span in _list(ss.get("spans") if isinstance(ss, dict) else None):
                if not isinstance(span, dict):
                    continue
                _fix_ids(span)
                for link in _list(span.get("links")):
                    if isinstance(link, dict):
                        _fix_ids(link)


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _fix_ids(obj: dict[str, Any]) -> None:
    for key in _ID_KEYS:
        value = obj.get(key)
        if isinstance(value, str):
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                obj[key] = ""  # not hex: no id (the span is then rejected), never base64 garbage
                continue
            obj[key] = base64.b64encode(raw).decode("ascii")


def _flatten(message: TracesData) -> Decoded:
    out = Decoded()
    for r_index, rs in enumerate(message.resource_spans):
        resource = attributes(rs.resource.attributes)
        for s_index, ss in enumerate(rs.scope_spans):
            for index, span in enumerate(ss.spans):
                trace_id = span.trace_id.hex()
                span_id = span.span_id.hex()
                parent = span.parent_span_id.hex()
                where = f"resource_spans[{r_index}].scope_spans[{s_index}].spans[{index}]"
                if len(trace_id) != 32 or trace_id == _ZERO_TRACE:  # noqa: PLR2004
                    out.invalid.append(f"{where}: trace_id is not 16 non-zero bytes")
                    continue
                if len(span_id) != 16 or span_id == _ZERO_SPAN:  # noqa: PLR2004
                    out.invalid.append(f"{where}: span_id is not 8 non-zero bytes")
                    continue
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
    return out


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
