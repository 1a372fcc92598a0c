"""The agent SDK's emitter against the real broker: typed and raw records arrive as sent."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from sdk_helpers import read_back
from tether.adapters.kafka_admin import create_topics
from tether.adapters.kafka_publisher import DeliveryError
from tether.models.codec import decode_event
from tether.models.events import ToolCallIntent, WorkflowStarted
from tether.sdk.emitter import EmitFailedError, Emitter
from tether.sdk.events import InvalidEventError, new_event_id, new_workflow_completed
from tether.settings import Settings

AGENT = "spiffe://acme.example/agent/summarizer"
CREDENTIAL = {
    "token_id": "jti-8c1",
    "issuer": "https://sts.acme.example",
    "subject": AGENT,
    "scopes": ["crm:read"],
    "issued_at": "2026-11-28T13:59:00Z",
    "expires_at": "2026-11-28T14:09:00Z",
}
GRANT = {
    "task_type": "support_triage",
    "purpose": "answer a ticket",
    "scopes": ["crm:read"],
    "tools": ["crm.search"],
    "max_sensitivity": "confidential",
    "destinations": [],
    "not_after": "2026-11-28T15:00:00Z",
    "autonomy": "low",
}
ACTION = {
    "tool": "crm.search",
    "operation": "read",
    "resource": "crm://accounts/123",
    "destination": "crm.internal",
    "data_sensitivity": "confidential",
}


@pytest.fixture
def settings(kafka_bootstrap, fresh_topic_prefix, kafka_admin):
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.", partitions=3
    )
    created = create_topics(settings)
    yield settings
    for future in kafka_admin.delete_topics(created, operation_timeout=30).values():
        future.result(30)


def test_typed_events_arrive_valid_and_keyed_by_workflow(settings):
    with Emitter(settings) as emitter:
        started = emitter.workflow_started(
            workflow_id="wf-42", agent=AGENT, credential=CREDENTIAL, grant=GRANT
        )
        call = emitter.tool_call_intent(
            workflow_id="wf-42", agent=AGENT, credential=CREDENTIAL, action=ACTION
        )
        emitter.emit(
            {
                "schema_version": 1,
                "event_type": "workflow.completed",
                "event_id": "e-done",
                "occurred_at": "2026-11-28T14:05:00Z",
                "workflow_id": "wf-43",
                "agent": {"workload_id": AGENT},
                "outcome": "success",
            }
        )
    assert emitter.delivered == 3
    messages = read_back(settings.kafka_bootstrap, emitter.topic, 3)
    decoded = {msg.key(): decode_event(msg.value()) for msg in messages if msg.key() == b"wf-43"}
    by_id = {}
    for msg in messages:
        event = decode_event(msg.value())
        assert msg.key() == event.workflow_id.encode()
        by_id[event.event_id] = event
    assert by_id[started.event_id] == started
    assert by_id[call.event_id] == call
    assert isinstance(started, WorkflowStarted)
    assert isinstance(call, ToolCallIntent)
    assert len(started.event_id) == 26  # ULID
    assert by_id["e-done"].outcome == "success"
    assert decoded[b"wf-43"].event_type == "workflow.completed"
    # one workflow, one partition: the monitor sees its events in order
    assert len({msg.partition() for msg in messages if msg.key() == b"wf-42"}) == 1


def test_raw_bytes_are_produced_as_is_even_when_invalid(settings):
    payloads = [b"not json", b"{}", b'{"workflow_id": "wf-x", "schema_version": "1"}', b"\xff"]
    with Emitter(settings) as emitter:
        for payload in payloads:
            emitter.emit_raw(payload, None)
    messages = read_back(settings.kafka_bootstrap, emitter.topic, len(payloads))
    assert sorted(msg.value() for msg in messages) == sorted(payloads)
    assert all(msg.key() is None for msg in messages)


def test_a_batching_emitter_delivers_every_record_in_order(settings):
    payloads = [b'{"n": %d}' % i for i in range(500)]
    with Emitter(settings, linger_ms=50) as emitter:
        for payload in payloads:
            emitter.emit_raw(payload, b"wf-batched")
    assert emitter.delivered == len(payloads)
    messages = read_back(settings.kafka_bootstrap, emitter.topic, len(payloads))
    assert [msg.value() for msg in messages] == payloads  # one key: one partition, in order


def test_wait_and_aemit_return_the_position(settings):
    with Emitter(settings) as emitter:
        position = emitter.tool_call_intent(
            workflow_id="wf-1", agent=AGENT, credential=CREDENTIAL, action=ACTION, wait=True
        )
        partition, offset = emitter.emit_raw(b"raw", b"wf-1", wait=True)

        async def send():
            return await emitter.aemit(
                {
                    "schema_version": 1,
                    "event_type": "workflow.completed",
                    "event_id": "e-9",
                    "occurred_at": "2026-11-28T14:05:00Z",
                    "workflow_id": "wf-1",
                    "agent": {"workload_id": AGENT},
                    "outcome": "failure",
                }
            )

        async_partition, async_offset = asyncio.run(send())
    assert isinstance(position, ToolCallIntent)
    assert async_partition == partition
    assert async_offset == offset + 1
    messages = read_back(settings.kafka_bootstrap, emitter.topic, 3)
    assert {(m.partition(), m.offset()) for m in messages} >= {
        (partition, offset),
        (async_partition, async_offset),
    }


def test_an_invalid_typed_event_is_refused_before_sending(settings):
    with Emitter(settings) as emitter:
        with pytest.raises(InvalidEventError, match="credential"):
            emitter.tool_call_intent(
                workflow_id="wf-1", agent=AGENT, credential={"token_id": ""}, action=ACTION
            )
        with pytest.raises(InvalidEventError, match="schema_version"):
            emitter.emit({"schema_version": 2, "event_type": "workflow.completed"})
    assert emitter.delivered == 0


def test_a_delivery_failure_is_reported(kafka_bootstrap, fresh_topic_prefix):
    missing = f"{fresh_topic_prefix}.nowhere"
    emitter = Emitter(kafka_bootstrap, missing, delivery_timeout_s=1.5)
    with pytest.raises(DeliveryError, match=missing):
        emitter.emit_raw(b"x", b"k", wait=True, timeout=10)
    emitter.emit_raw(b"y", b"k")
    with pytest.raises(EmitFailedError) as failed:
        emitter.flush(10)
    assert failed.value.failed == 1
    assert [f.topic for f in failed.value.failures] == [missing]
    emitter.close(0)


def test_event_ids_are_unique_and_sort_by_creation_time():
    ids = [new_event_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == 26 for i in ids)
    time.sleep(0.002)
    assert new_event_id() > max(ids)


def test_occurred_at_must_carry_an_offset():
    with pytest.raises(InvalidEventError, match="offset"):
        new_workflow_completed(
            workflow_id="wf",
            agent=AGENT,
            outcome="success",
            occurred_at=datetime(2026, 1, 1),  # noqa: DTZ001  # naive on purpose
        )
    event = new_workflow_completed(
        workflow_id="wf",
        agent=AGENT,
        outcome="success",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert event.occurred_at == datetime(2026, 1, 1, tzinfo=UTC)
