"""Delivering one SSF stream: read the revocations topic with the stream's own consumer group,
re-sign each revocation for the stream's audience, push it (RFC 8935) or hold it for polling
(RFC 8936), and commit the position only past what the receiver has accepted.

At-least-once: a crash between delivery and commit delivers again after the restart, with the
same ``jti`` (the ``revocation_id``) for the receiver to de-duplicate; nothing is skipped. A
record is passed over only when it is not for this stream (a heartbeat, an event type it did
not request, a subject it removed, a revocation already expired, the stream disabled) or not
authentic (counted in ``rejected``); a receiver's explicit RFC 8935 error is counted in
``receiver_errors``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from tether.adapters.kafka_config import consumer_config
from tether.models.outputs import Revocation
from tether.sdk.revocation_set import HOLD_S
from tether.security import SetRejected, SetSigner, SetVerifier, caep, peek
from tether.security.sets import FeedRecord
from tether.settings import Settings
from tether.ssf.streams import POLL, Stream, StreamStore
from tether.topics import REVOCATIONS

_log = logging.getLogger(__name__)

SET_CONTENT_TYPE: Final = "application/secevent+jwt"
_BATCH: Final = 200
_IDLE_S: Final = 0.2
BACKOFF_START_S: Final = 0.25
BACKOFF_MAX_S: Final = 30.0
POLL_BUFFER: Final = 1000


@dataclass
class PumpStats:
    """What one stream's pump did."""

    delivered: int = 0
    push_attempts: int = 0
    receiver_errors: int = 0
    rejected: int = 0
    skipped: int = 0


@dataclass
class _Pending:
    """A record read from one partition, not yet passed by the receiver."""

    offset: int
    done: bool = False


@dataclass
class PollBuffer:
    """SETs waiting for a poll, by ``jti``, and what each partition may commit."""

    sets: OrderedDict[str, tuple[int | None, int | None, bytes]] = field(
        default_factory=OrderedDict
    )
    sent_at: dict[str, float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class StreamPump:
    """Moves one stream's SETs from the revocations topic to its receiver."""

    def __init__(
        self,
        stream_id: str,
        store: StreamStore,
        settings: Settings,
        signer: SetSigner,
        verifier: SetVerifier,
        http: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
        redeliver_after_s: float = 30.0,
    ) -> None:
        """Configure; :meth:`run` connects."""
        self.stream_id = stream_id
        self.store = store
        self.signer = signer
        self.verifier = verifier
        self.http = http
        self.stats = PumpStats()
        self.poll = PollBuffer()
        self.topic = settings.topic(REVOCATIONS)
        self._clock = clock
        self._redeliver_after_s = redeliver_after_s
        self._pending: dict[int, deque[_Pending]] = {}
        self._side: deque[bytes] = deque()  # verification SETs (not from the topic)
        self._config = consumer_config(
            settings,
            group_id=f"{settings.topic_prefix}ssf-{stream_id}",
            client_id="tether-ssf",
            overrides={"auto.offset.reset": "earliest", "enable.auto.commit": False},
        )
        self._consumer: Consumer | None = None

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until cancelled or the stream is deleted."""
        consumer = Consumer(self._config)
        await self._assign(consumer)
        self._consumer = consumer
        try:
            while True:
                stream = self._stream_owned()
                if stream is None:
                    return
                await self._send_side(stream)
                if stream.status == "paused" or (
                    stream.delivery.method == POLL and len(self.poll.sets) >= POLL_BUFFER
                ):
                    await asyncio.sleep(_IDLE_S)
                    await self._commit(consumer)
                    continue
                messages = await asyncio.to_thread(consumer.consume, _BATCH, _IDLE_S)
                for msg in messages:
                    await self._handle(stream, msg)
                await self._commit(consumer)
        finally:
            self._consumer = None
            await asyncio.to_thread(consumer.close)

    async def _assign(self, consumer: Consumer) -> None:
        """Every partition, from the stream's committed position (else the beginning).

        Assigned, not subscribed: a restarted transmitter resumes at once, instead of waiting
        for the group coordinator to expire the killed member's session (45 s by default).
        """
        while True:
            try:
                metadata = await asyncio.to_thread(consumer.list_topics, self.topic, 10.0)
                topic = metadata.topics.get(self.topic)
                if topic is None or topic.error is not None or not topic.partitions:
                    raise LookupError(f"topic {self.topic} is not available")
                wanted = [TopicPartition(self.topic, p) for p in sorted(topic.partitions)]
                committed = await asyncio.to_thread(consumer.committed, wanted, 10.0)
            except (KafkaException, LookupError) as exc:
                _log.warning("ssf stream %s: waiting for %s: %s", self.stream_id, self.topic, exc)
                await asyncio.sleep(1.0)
                continue
            consumer.assign(
                [
                    TopicPartition(
                        self.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                    )
                    for tp in committed
                ]
            )
            return

    def _stream_owned(self) -> Stream | None:
        for stream in self.store.all():
            if stream.stream_id == self.stream_id:
                return stream
        return None

    async def _handle(self, stream: Stream, msg: Message) -> None:
        if msg.error() is not None:
            return
        partition, offset = msg.partition(), msg.offset()
        if partition is None or offset is None:
            return
        entry = _Pending(offset)
        self._pending.setdefault(partition, deque()).append(entry)
        token = await self._set_for(stream, msg.value())
        if token is None:
            self.stats.skipped += 1
            entry.done = True
            return
        if stream.delivery.method == POLL:
            jti = str(orjson.loads(_payload(token))["jti"])
            if jti in self.poll.sets:  # a duplicate on the topic: the held copy stands for it
                entry.done = True
                return
            self.poll.sets[jti] = (partition, offset, token)
            self.poll.changed.set()
            return
        await self._push(stream, token)
        entry.done = True

    async def _set_for(self, stream: Stream, value: bytes | None) -> bytes | None:
        """The SET of one topic record for this stream, or None when it is not for it."""
        if value is None or stream.status == "disabled":
            return None
        record = await self._verified(value)
        if not isinstance(record, Revocation):
            # A heartbeat, or an operator's reinstatement: CAEP has no event that restores a
            # revoked session or credential, so receivers get nothing (docs/operators.md).
            return None
        if record.not_after.timestamp() <= self._clock():
            return None
        event_type = caep.expected_event_type(record)
        if event_type not in stream.events_delivered:
            return None
        issuer = record.token_issuer or self.signer.token_issuer
        if not stream.wants(caep.subject(record.target, token_issuer=issuer)):
            return None
        return self.signer.revocation(record, audience=stream.aud)

    async def _verified(self, value: bytes) -> FeedRecord | None:
        waited = 0.0
        while True:
            try:
                return self.verifier.verify(value)
            except SetRejected as exc:
                if exc.reason == "replayed":  # authentic, read again (a restart, a rebalance)
                    return peek(value)
                if exc.reason == "unknown_kid" and waited < HOLD_S:
                    await asyncio.sleep(1.0)  # the JWKS may learn the key: never skip early
                    waited += 1.0
                    continue
                self.stats.rejected += 1
                _log.warning("ssf stream %s: rejected a record (%s)", self.stream_id, exc)
                return None

    # -- push (RFC 8935) ------------------------------------------------------------------------

    async def _push(self, stream: Stream, token: bytes) -> None:
        """POST one SET until the receiver takes it (202) or refuses it with an RFC 8935 error."""
        backoff = BACKOFF_START_S
        while True:
            current = self._stream_owned()
            if current is None:
                raise asyncio.CancelledError
            if current.status == "disabled":
                return
            if current.status == "paused":
                await asyncio.sleep(_IDLE_S)
                continue
            url = current.delivery.endpoint_url or ""
            headers = {"Content-Type": SET_CONTENT_TYPE, "Accept": "application/json"}
            if current.delivery.authorization_header:
                headers["Authorization"] = current.delivery.authorization_header
            self.stats.push_attempts += 1
            try:
                async with self.http.post(url, data=token, headers=headers) as resp:
                    body = await resp.read()
                    if 200 <= resp.status < 300:  # noqa: PLR2004  # RFC 8935: 202 Accepted
                        self.stats.delivered += 1
                        return
                    if resp.status == 400:  # noqa: PLR2004  # an RFC 8935 error: final for this SET
                        self.stats.receiver_errors += 1
                        _log.warning("ssf push %s: the receiver refused a SET: %s", url, body[:200])
                        return
                    _log.info("ssf push %s: HTTP %s; retrying in %.2fs", url, resp.status, backoff)
            except (aiohttp.ClientError, TimeoutError) as exc:
                _log.info("ssf push %s: %s; retrying in %.2fs", url, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    # -- poll (RFC 8936) ------------------------------------------------------------------------

    def poll_once(
        self, max_events: int, acks: list[str], set_errs: dict[str, Any]
    ) -> tuple[dict[str, str], bool]:
        """Apply acknowledgements (``ack`` and ``setErrs`` both settle a SET), then hand out up
        to ``max_events`` SETs not handed out in the last ``redeliver_after_s``."""
        for jti in [*acks, *set_errs]:
            held = self.poll.sets.pop(jti, None)
            self.poll.sent_at.pop(jti, None)
            if held is None:
                continue
            partition, offset, _token = held
            if jti in set_errs:
                self.stats.receiver_errors += 1
            else:
                self.stats.delivered += 1
            if partition is not None:
                for entry in self._pending.get(partition, ()):
                    if entry.offset == offset:
                        entry.done = True
                        break
        now = self._clock()
        out: dict[str, str] = {}
        for jti, (_p, _o, token) in self.poll.sets.items():
            if len(out) >= max_events:
                break
            sent = self.poll.sent_at.get(jti)
            if sent is None or now - sent >= self._redeliver_after_s:
                out[jti] = token.decode("ascii")
                self.poll.sent_at[jti] = now
        more = any(jti not in out and jti not in self.poll.sent_at for jti in self.poll.sets)
        self.poll.changed.clear()
        return out, more

    def has_undelivered(self) -> bool:
        """Whether a poll would hand out a SET now."""
        now = self._clock()
        return any(
            (s := self.poll.sent_at.get(j)) is None or now - s >= self._redeliver_after_s
            for j in self.poll.sets
        )

    # -- verification (SSF) -----------------------------------------------------------------------

    def verification(self, stream: Stream, state: str | None) -> None:
        """Queue an SSF verification event for this stream (delivered like any SET)."""
        body: dict[str, Any] = {} if state is None else {"state": state}
        claims = {
            "iss": self.signer.issuer,
            "aud": stream.aud,
            "iat": int(self._clock()),
            "jti": f"verification:{uuid.uuid4().hex}",
            "sub_id": {"format": "opaque", "id": stream.stream_id},
            "events": {caep.VERIFICATION: body},
        }
        token = self.signer.sign_payload(orjson.dumps(claims))
        if stream.delivery.method == POLL:
            self.poll.sets[str(claims["jti"])] = (None, None, token)
            self.poll.changed.set()
        else:
            self._side.append(token)

    async def _send_side(self, stream: Stream) -> None:
        while self._side and stream.delivery.method != POLL:
            await self._push(stream, self._side[0])
            self._side.popleft()

    # -- position -------------------------------------------------------------------------------

    async def _commit(self, consumer: Consumer) -> None:
        offsets = []
        for partition, entries in self._pending.items():
            last = None
            while entries and entries[0].done:
                last = entries.popleft().offset
            if last is not None:
                offsets.append(TopicPartition(self.topic, partition, last + 1))
        if offsets:
            await asyncio.to_thread(consumer.commit, offsets=offsets, asynchronous=False)


def _payload(token: bytes) -> bytes:
    segment = token.split(b".")[1]
    return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
