"""Decoding the Collector Kafka exporter's records: otlp_proto, otlp_json (hex ids), bad input."""

from __future__ import annotations

import base64

import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from otel_spans import Collect, fleet, otlp_json, otlp_proto, records
from tether.otel.decode import UndecodableError, decode


@pytest.fixture(scope="module")
def spans() -> list:
    sink = Collect()
    fleet(sink, tag="decode")
    return sink.spans


def _ids(sdk_spans: list) -> set[tuple[str, str]]:
    return {
        (
            format(s.get_span_context().trace_id, "032x"),
            format(s.get_span_context().span_id, "016x"),
        )
        for s in sdk_spans
    }


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json", "auto"])
def test_both_encodings_give_the_sdks_own_ids_and_attributes(spans: list, encoding: str) -> None:
    data = otlp_json(spans) if encoding != "otlp_proto" else otlp_proto(spans)
    decoded = decode(data, encoding)  # type: ignore[arg-type]
    assert not decoded.invalid
    assert {(s.trace_id, s.span_id) for s in decoded.spans} == _ids(spans)
    assert decoded.spans == decode(otlp_proto(spans), "otlp_proto").spans


def test_the_naive_proto3_json_parse_gets_the_ids_wrong_and_ours_does_not(spans: list) -> None:
    """The otlp_json pitfall: ids are hex, and proto3 JSON reads them as base64."""
    data = otlp_json(spans[:1])
    naive = json_format.Parse(data, TracesData(), ignore_unknown_fields=True)
    wrong = naive.resource_spans[0].scope_spans[0].spans[0].trace_id
    (ours,) = decode(data, "otlp_json").spans
    assert len(wrong) != 16
    assert ours.trace_id == format(spans[0].get_span_context().trace_id, "032x")


def test_every_record_shape_decodes_to_the_same_spans(spans: list) -> None:
    want = sorted((s.trace_id, s.span_id) for s in decode(otlp_proto(spans)).spans)
    for encoding in ("otlp_proto", "otlp_json"):
        for per_trace in (False, True):
            got = [
                (s.trace_id, s.span_id)
                for _, value in records(spans, encoding=encoding, per_trace=per_trace, batch=3)
                for s in decode(value).spans
            ]
            assert sorted(got) == want


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x0a\xff\xff\xff garbage",
        b'{"resourceSpans": "nope"}',
        b"[1, 2]",
        b"{not json",
    ],
)
def test_undecodable_records_raise_a_clear_error(data: bytes) -> None:
    with pytest.raises(UndecodableError):
        decode(data)


def test_a_span_with_bad_ids_is_reported_and_its_neighbours_kept(spans: list) -> None:
    doc = TracesData.FromString(otlp_proto(spans))
    bad = doc.resource_spans[0].scope_spans[0].spans
    bad[0].trace_id = b"\x00" * 16
    bad[1].span_id = b"\x01\x02"
    decoded = decode(doc.SerializeToString())
    assert len(decoded.invalid) == 2
    assert len(decoded.spans) == len(spans) - 2


def test_json_with_unknown_fields_and_base64_looking_hex_is_read_as_hex() -> None:
    trace, span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    doc = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "a"}}]
                },
                "futureField": 1,
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace,
                                "spanId": span,
                                "name": "x",
                                "kind": 1,
                                "startTimeUnixNano": "1795874400000000000",
                                "attributes": [
                                    {"key": "n", "value": {"intValue": "7"}},
                                    {
                                        "key": "l",
                                        "value": {"arrayValue": {"values": [{"stringValue": "a"}]}},
                                    },
                                    {
                                        "key": "b",
                                        "value": {"bytesValue": base64.b64encode(b"x").decode()},
                                    },
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    (s,) = decode(orjson.dumps(doc)).spans
    assert (s.trace_id, s.span_id, s.parent_span_id) == (trace, span, "")
    assert s.attributes == {"n": 7, "l": ("a",), "b": b"x"}
    assert s.resource == {"service.name": "a"}
    assert s.start_ns == 1795874400000000000


def test_a_non_hex_json_id_invalidates_its_span_only() -> None:
    data = (
        b'{"resourceSpans":[{"scopeSpans":[{"spans":['
        b'{"traceId":"zz","spanId":"b7ad6b7169203331"},'
        b'{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331"}]}]}]}'
    )
    decoded = decode(data)
    assert len(decoded.invalid) == 1
    assert [s.trace_id for s in decoded.spans] == ["0af7651916cd43dd8448eb211c80319c"]


def _field(num: int, payload: bytes) -> bytes:
    def varint(n: int) -> bytes:
        out = b""
        while True:
            b, n = n & 0x7F, n >> 7
            if not n:
                return out + bytes([b])
            out += bytes([b | 0x80])

    return varint(num << 3 | 2) + varint(len(payload)) + payload


def _poison_span(depth: int) -> bytes:
    """A Span whose one attribute nests arrays ``depth`` deep (beyond protobuf's limit)."""
    value = _field(1, b"x")  # AnyValue.string_value
    for _ in range(depth):
        value = _field(5, _field(1, value))  # AnyValue.array_value.values
    trace, span = (
        bytes.fromhex("0af7651916cd43dd8448eb211c80319c"),
        bytes.fromhex("b7ad6b7169203331"),
    )
    return _field(1, trace) + _field(2, span) + _field(9, _field(1, b"k") + _field(2, value))


def test_one_poisoned_span_does_not_cost_the_batch_its_other_spans(spans: list) -> None:
    """The Collector batches many processes' spans into one record: a span that protobuf
    refuses (here: nesting too deep) must not make the other spans of the batch undecodable,
    or any sender could hide everyone else's tool calls."""
    doc = TracesData.FromString(otlp_proto(spans))
    good = doc.SerializeToString()
    poisoned = bytearray(good)
    # a ResourceSpans of its own holding the poison span, appended to the batch
    poisoned += _field(1, _field(2, _field(2, _poison_span(150))))
    decoded = decode(bytes(poisoned), "otlp_proto")
    assert len(decoded.spans) == len(spans)
    assert len(decoded.invalid) == 1
    assert "undecodable" in decoded.invalid[0]
    # and inside a scope shared with good spans
    rs = doc.resource_spans[0]
    scope = rs.scope_spans[0].SerializeToString() + _field(2, _poison_span(150))
    mixed = _field(1, _field(1, rs.resource.SerializeToString()) + _field(2, scope))
    decoded = decode(mixed, "otlp_proto")
    assert len(decoded.spans) == len(rs.scope_spans[0].spans)
    assert len(decoded.invalid) == 1


def test_a_truncated_record_is_undecodable() -> None:
    with pytest.raises(UndecodableError):
        decode(_field(1, _field(2, b"\x12\x50short")), "otlp_proto")
