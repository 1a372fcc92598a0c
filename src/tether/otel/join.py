"""The per-trace join: hold a trace's spans until its ancestry is known, bounded and expiring.

OpenTelemetry exports a span when it *ends*, so a tool span arrives before the ``invoke_agent``
span that names its agent, and the root span (which starts the workflow) arrives last, possibly
in a later exporter batch. The joiner buffers spans per trace and releases the trace when its
root span has arrived (a span without a parent), or when no span of it has arrived for
``trace_idle_s`` (the root lives in another service, or was lost), at the latest
``trace_max_hold_s`` after its first span (a sender trickling spans into a trace cannot hold it,
and the offsets of its records, forever), or early when the bounds (``max_traces``,
``max_spans_per_trace``, ``max_held_spans`` in all) are reached. Spans of a trace that arrive after it was
released are mapped against the remembered ancestry (``remembered_traces``, LRU).

Pure: the caller passes ``now`` (seconds, any monotonic clock) and its own *origin* token per
record. Origins come back *settled* (``why="settled"``, nothing to map) only once their trace
can no longer need them: ``trace_idle_s`` after the trace's last activity following its
release, or when its remembered ancestry is dropped. The remembered ancestry lives in memory
only, so until then a restart must re-read those records to rebuild it; the adapter commits a
Kafka offset only once every origin at or below it is settled.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from tether.otel.config import MappingConfig
from tether.otel.decode import SpanView
from tether.otel.mapping import Mapped, TraceContext, map_trace

Origin = Hashable


@dataclass(slots=True)
class _Held:
    spans: dict[str, SpanView] = field(default_factory=dict)
    origins: list[Origin] = field(default_factory=list)
    first_seen: float = 0.0
    last_seen: float = 0.0
    rooted: bool = False
    full: bool = False


@dataclass(slots=True)
class Released:
    """A trace (or the part that arrived) mapped, with the origins it held."""

    trace_id: str
    mapped: Mapped
    origins: list[Origin]
    why: str  # "root" | "idle" | "max_hold" | "evicted" | "full" | "drain" | "settled"


class TraceJoiner:
    """Buffers spans per trace; :meth:`release` maps the traces that are ready."""

    def __init__(self, config: MappingConfig) -> None:
        """Hold traces as ``config`` bounds them."""
        self.config = config
        self._held: OrderedDict[str, _Held] = OrderedDict()  # oldest first
        self._memory: OrderedDict[str, TraceContext] = OrderedDict()
        self._evicted: list[tuple[str, _Held]] = []
        self.held_spans = 0
        self.remembered_spans = 0  # parents kept in self._memory, in all
        # released traces whose origins wait to settle, in order of first release:
        # trace id -> (first release, last activity, origins)
        self._unsettled: OrderedDict[str, tuple[float, float, list[Origin]]] = OrderedDict()
        self._settled: list[Released] = []

    def __len__(self) -> int:
        """Traces held."""
        return len(self._held)

    def add(self, spans: Iterable[SpanView], origin: Origin, now: float) -> int:
        """Hold ``spans`` (any traces). Returns how many holds on ``origin`` this added: each is
        given back once, in the ``origins`` of a :class:`Released`."""
        holds = 0
        for span in spans:
            held = self._held.get(span.trace_id)
            if held is None:
                held = self._held[span.trace_id] = _Held(first_seen=now)
                if len(self._held) > self.config.max_traces:
                    self._evict()
            if not held.origins or held.origins[-1] is not origin:
                held.origins.append(origin)
                holds += 1
            if span.span_id not in held.spans:  # a duplicate span id: the first one wins
                held.spans[span.span_id] = span
                self.held_spans += 1
            held.last_seen = now
            if not span.parent_span_id:
                held.rooted = True
            if len(held.spans) >= self.config.max_spans_per_trace:
                held.full = True
        while self.held_spans > self.config.max_held_spans and len(self._held) > 1:
            self._evict()
        return holds

    def _evict(self) -> None:
        """Release the oldest held trace early (at the next :meth:`release`)."""
        oldest, victim = self._held.popitem(last=False)
        self.held_spans -= len(victim.spans)
        self._evicted.append((oldest, victim))

    def release(self, now: float) -> list[Released]:
        """Map and release every trace that is ready (root seen, idle, full or evicted)."""
        out = [self._map(tid, held, "evicted", now) for tid, held in self._evicted]
        self._evicted.clear()
        idle, max_hold = self.config.trace_idle_s, self.config.trace_max_hold_s
        ready = []
        for tid, h in self._held.items():
            if h.rooted:
                ready.append((tid, "root"))
            elif h.full:
                ready.append((tid, "full"))
            elif now - h.last_seen >= idle:
                ready.append((tid, "idle"))
            elif now - h.first_seen >= max_hold:
                ready.append((tid, "max_hold"))  # a trickle of spans cannot hold it forever
        for tid, why in ready:
            held = self._held.pop(tid)
            self.held_spans -= len(held.spans)
            out.append(self._map(tid, held, why, now))
        # Oldest first; the head waits for its trace to go quiet, but never longer than
        # trace_max_hold_s, so no origin waits longer than that behind it (a trickle of late
        # spans cannot keep offsets uncommitted; past that bound a restart maps such late
        # spans without their ancestry: coverage says ancestry_incomplete).
        while self._unsettled:
            tid, (first, last, _) = next(iter(self._unsettled.items()))
            quiet = now - last >= idle and tid not in self._held
            if not quiet and now - first < max_hold:
                break
            self._settle(tid)
        out += self._settled
        self._settled = []
        return out

    def _settle(self, trace_id: str) -> None:
        _, _, origins = self._unsettled.pop(trace_id)
        self._settled.append(Released(trace_id, Mapped(), origins, "settled"))

    def drain(self, now: float) -> list[Released]:
        """Map and release everything held (shutdown)."""
        out = self.release(now)
        while self._held:
            tid, held = self._held.popitem(last=False)
            self.held_spans -= len(held.spans)
            out.append(self._map(tid, held, "drain", now))
        while self._unsettled:
            self._settle(next(iter(self._unsettled)))
        out += self._settled
        self._settled = []
        return out

    def _map(self, trace_id: str, held: _Held, why: str, now: float) -> Released:
        context = self._memory.pop(trace_id, None)
        spans = list(held.spans.values())
        mapped = map_trace(spans, self.config, context=context, now=now, evicted=why == "evicted")
        if context is not None:
            self.remembered_spans -= len(context.parents)
        if self.config.remembered_traces:
            context = context or TraceContext()
            context.absorb(spans)
            self._memory[trace_id] = context
            self.remembered_spans += len(context.parents)
            while self._memory and (
                len(self._memory) > self.config.remembered_traces
                or self.remembered_spans > self.config.max_held_spans
            ):
                old_id, old = self._memory.popitem(last=False)
                self.remembered_spans -= len(old.parents)
                if old_id in self._unsettled:  # its ancestry is gone: nothing left to protect
                    self._settle(old_id)
            first, _, origins = self._unsettled.get(trace_id, (now, now, []))
            self._unsettled[trace_id] = (first, now, [*origins, *held.origins])  # keeps its place
            return Released(trace_id, mapped, [], why)
        return Released(trace_id, mapped, held.origins, why)  # nothing remembered: settled now
