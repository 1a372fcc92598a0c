"""The agent-side emitter: publishes input events to ``tether.intents`` with delivery confirmation."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Self

from confluent_kafka import KafkaError, Message

from tether.adapters.kafka_publisher import DeliveryError, KafkaPublisher, Position
from tether.models.codec import encode
from tether.models.common import Outcome
from tether.models.events import (
    Agent,
    DelegationGranted,
    ToolCallIntent,
    WorkflowCompleted,
    WorkflowStarted,
)
from tether.sdk.events import (
    Event,
    InvalidEventError,
    Part,
    new_delegation_granted,
    new_event_id,
    new_tool_call_intent,
    new_workflow_completed,
    new_workflow_started,
    validate_event,
)
from tether.security.proof import SourceKey
from tether.settings import Settings
from tether.topics import INTENTS

_MAX_FAILURES_KEPT: Final = 100

__all__ = [
    "EmitFailedError",
    "Emitter",
    "InvalidEventError",
    "new_delegation_granted",
    "new_event_id",
    "new_tool_call_intent",
    "new_workflow_completed",
    "new_workflow_started",
]


class EmitFailedError(Exception):
    """Some emitted records were not acknowledged by the broker.

    Attributes:
        failures: the delivery errors (the first ones, at most 100).
        failed: how many records failed.
        pending: how many were still unacknowledged when the flush timed out.
    """

    def __init__(self, failures: list[DeliveryError], failed: int, pending: int) -> None:
        """Summarize ``failed`` failures (``failures`` holds the first few) and ``pending``."""
        parts = []
        if failed:
            parts.append(f"{failed} record(s) not delivered (first: {failures[0]})")
        if pending:
            parts.append(f"{pending} record(s) still unacknowledged when the flush timed out")
        super().__init__("; ".join(parts))
        self.failures = failures
        self.failed = failed
        self.pending = pending


class Emitter:
    """Publishes tether input events with an idempotent producer (``acks=all``, key = workflow).

    ``emit`` queues without blocking; confirm delivery with :meth:`flush`, with
    ``emit(..., wait=True)`` or with ``await aemit(...)``. The helpers (:meth:`tool_call_intent`
    and friends) build a validated event, stamp ``event_id`` and ``occurred_at`` unless given,
    emit it and return it. The producer starts on first use or with :meth:`start`.

    Example::

        with Emitter(settings) as emitter:
            emitter.workflow_started(workflow_id="wf-42", agent=me, credential=cred, grant=grant)
            emitter.tool_call_intent(workflow_id="wf-42", agent=me, credential=cred, action=act)
        # leaving the block flushed: both were acknowledged, or EmitFailedError was raised
    """

    def __init__(
        self,
        settings: Settings | str | None = None,
        topic: str | None = None,
        *,
        client_id: str = "tether-emitter",
        delivery_timeout_s: float | None = None,
        linger_ms: float | None = None,
        source_key: SourceKey | None = None,
    ) -> None:
        """Configure the emitter; nothing connects until the first emit or :meth:`start`.

        Args:
            settings: the settings, or just the Kafka bootstrap servers (``host:port,...``);
                default ``Settings()`` (``TETHER_*`` environment).
            topic: where to publish (default: ``<prefix>intents``).
            client_id: names the producer in broker logs.
            delivery_timeout_s: give up on a record after this long (librdkafka
                ``message.timeout.ms``; default 300 s).
            linger_ms: how long a record may wait for others to share its request to the
                broker (librdkafka ``linger.ms``; default 1 ms, latency first). A process that
                emits for many agents at once (a gateway, a replay) can trade a few ms for far
                fewer requests.
            source_key: this telemetry source's key (``sources.yaml``): every event emitted
                through :meth:`emit` and the helpers carries its ``proof``.
        """
        if settings is None:
            settings = Settings()
        elif isinstance(settings, str):
            settings = Settings(kafka_bootstrap=settings)
        self.topic = topic or settings.topic(INTENTS)
        overrides: dict[str, Any] = {}
        if delivery_timeout_s is not None:
            overrides["message.timeout.ms"] = max(1, int(delivery_timeout_s * 1000))
        if linger_ms is not None:
            overrides["linger.ms"] = linger_ms
        self._publisher = KafkaPublisher(settings, client_id=client_id, overrides=overrides)
        self.source_key = source_key
        self._lock = threading.Lock()
        self._failures: list[DeliveryError] = []
        self._failed = 0
        self.delivered = 0
        """Records acknowledged by the broker so far."""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Create the producer (idempotent)."""
        self._publisher.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Flush (raising :class:`EmitFailedError` on failures), then release the producer."""
        if not self._publisher.started:
            return
        try:
            self.flush(timeout)
        finally:
            self._publisher.stop(0)

    def __enter__(self) -> Self:
        """Start; flush and close when the block exits."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close, flushing; a failure to deliver raises unless the block already raised."""
        if exc is None:
            self.close()
        else:
            self._publisher.stop(5.0)

    # -- emitting --------------------------------------------------------------------------

    def emit(
        self, event: Event | Mapping[str, Any], *, wait: bool = False, timeout: float = 30.0
    ) -> Position | None:
        """Validate and queue one event, keyed by its ``workflow_id``.

        Args:
            event: a typed event, or a mapping in the contract's JSON shape (validated first).
            wait: block until the broker acknowledges it.
            timeout: how long ``wait`` blocks.

        Returns:
            ``(partition, offset)`` with ``wait``, else None (confirm later with :meth:`flush`).

        Raises:
            InvalidEventError: the event breaks the contract; nothing was sent.
            DeliveryError: with ``wait``, the broker did not acknowledge it.
            TimeoutError: with ``wait``, no acknowledgement within ``timeout``.
        """
        typed = validate_event(event)
        return self.emit_raw(
            self.record(typed), typed.workflow_id.encode(), wait=wait, timeout=timeout
        )

    async def aemit(self, event: Event | Mapping[str, Any]) -> Position:
        """:meth:`emit` and await the broker's acknowledgement; returns ``(partition, offset)``."""
        typed = validate_event(event)
        return await self.aemit_raw(self.record(typed), typed.workflow_id.encode())

    def record(self, event: Event) -> bytes:
        """The bytes :meth:`emit` sends for ``event``: signed when the emitter has a key."""
        data = encode(event)
        if self.source_key is None:
            return data
        if event.proof is not None or event.trust is not None:
            data = event.model_dump_json(exclude_none=True, exclude={"proof", "trust"}).encode()
        return self.source_key.sign(data)

    def emit_raw(
        self, value: bytes, key: bytes | None = None, *, wait: bool = False, timeout: float = 30.0
    ) -> Position | None:
        """Queue bytes exactly as given (no validation: invalid records reach the dead letters).

        Returns:
            ``(partition, offset)`` with ``wait``, else None.
        """
        if not wait:  # no future: librdkafka's callback counts the outcome
            self._publisher.start()
            self._publisher.produce(self.topic, key, value, self._on_delivery)
            return None
        future = self._send(value, key)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            raise TimeoutError(f"no acknowledgement from Kafka within {timeout:g} s") from exc

    async def aemit_raw(self, value: bytes, key: bytes | None = None) -> Position:
        """:meth:`emit_raw` and await the broker's acknowledgement."""
        return await asyncio.wrap_future(self._send(value, key))

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for every queued record's acknowledgement.

        Returns:
            The number of records acknowledged since the emitter started.

        Raises:
            EmitFailedError: records emitted without ``wait`` failed since the last flush, or
                some were still unacknowledged after ``timeout``.
        """
        pending = self._publisher.flush(timeout) if self._publisher.started else 0
        with self._lock:
            failures, failed = self._failures, self._failed
            self._failures, self._failed = [], 0
        if failed or pending:
            raise EmitFailedError(failures, failed, pending)
        return self.delivered

    async def aflush(self, timeout: float = 30.0) -> int:
        """:meth:`flush` without blocking the event loop."""
        return await asyncio.to_thread(self.flush, timeout)

    # -- helpers: build, emit, return the event --------------------------------------------

    def workflow_started(
        self,
        *,
        workflow_id: str,
        agent: Agent | str,
        credential: Part,
        grant: Part,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
        wait: bool = False,
    ) -> WorkflowStarted:
        """Build (:func:`new_workflow_started`), emit and return a ``workflow.started`` event."""
        event = new_workflow_started(
            workflow_id=workflow_id,
            agent=agent,
            credential=credential,
            grant=grant,
            event_id=event_id,
            occurred_at=occurred_at,
        )
        self.emit(event, wait=wait)
        return event

    def tool_call_intent(  # one keyword per contract field
        self,
        *,
        workflow_id: str,
        agent: Agent | str,
        credential: Part,
        action: Part,
        delegation_id: str | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
        wait: bool = False,
    ) -> ToolCallIntent:
        """Build (:func:`new_tool_call_intent`), emit and return a ``tool_call.intent`` event."""
        event = new_tool_call_intent(
            workflow_id=workflow_id,
            agent=agent,
            credential=credential,
            action=action,
            delegation_id=delegation_id,
            event_id=event_id,
            occurred_at=occurred_at,
        )
        self.emit(event, wait=wait)
        return event

    def delegation_granted(
        self,
        *,
        workflow_id: str,
        agent: Agent | str,
        credential: Part,
        delegation: Part,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
        wait: bool = False,
    ) -> DelegationGranted:
        """Build (:func:`new_delegation_granted`), emit and return a ``delegation.granted``."""
        event = new_delegation_granted(
            workflow_id=workflow_id,
            agent=agent,
            credential=credential,
            delegation=delegation,
            event_id=event_id,
            occurred_at=occurred_at,
        )
        self.emit(event, wait=wait)
        return event

    def workflow_completed(
        self,
        *,
        workflow_id: str,
        agent: Agent | str,
        outcome: Outcome,
        credential: Part | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
        wait: bool = False,
    ) -> WorkflowCompleted:
        """Build (:func:`new_workflow_completed`), emit and return a ``workflow.completed``."""
        event = new_workflow_completed(
            workflow_id=workflow_id,
            agent=agent,
            outcome=outcome,
            credential=credential,
            event_id=event_id,
            occurred_at=occurred_at,
        )
        self.emit(event, wait=wait)
        return event

    # -- internals -------------------------------------------------------------------------

    def _send(self, value: bytes, key: bytes | None) -> concurrent.futures.Future[Position]:
        """Queue one record whose caller waits for it (its failure is raised there, not
        reported again by :meth:`flush`)."""
        self._publisher.start()
        future = self._publisher.send(self.topic, key, value)
        future.add_done_callback(self._settled)
        return future

    def _on_delivery(self, err: KafkaError | None, msg: Message | None) -> None:
        with self._lock:
            if err is None:
                self.delivered += 1
                return
            self._failed += 1
            if len(self._failures) < _MAX_FAILURES_KEPT:
                topic = msg.topic() if msg is not None else self.topic
                key = msg.key() if msg is not None else None
                self._failures.append(DeliveryError(topic or self.topic, key, err))

    def _settled(self, future: concurrent.futures.Future[Position]) -> None:
        if future.exception() is None:
            with self._lock:
                self.delivered += 1
