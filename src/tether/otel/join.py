"""The per-trace join: hold a trace's spans until its ancestry is known, bounded and expiring.

OpenTelemetry exports a span when it *ends*, so a tool span arrives before the ``invoke_agent``
span that names its agent, and the root span (which starts the workflow) arrives last, possibly
in a later exporter batch. The joiner buffers spans per trace and releases the trace when its
root span has arrived (a span without a parent), or when no span of it has arrived for
``trace_idle_s`` (the root lives in another service, or was lost), or early when the bounds
(``max_traces``, ``max_spans_per_trace``) are reached. Spans of a trace that arrive after it was
released are mapped against the remembered ancestry (``remembered_traces``, LRU).

Pure: the caller passes ``now`` (seconds, any monotonic clock) and its own *origin* token per
record, and gets back, with each released trace, the origins it held: the adapter commits a
Kafka offset only once no held trace refers to it.
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
    last_seen: float = 0.0
    rooted: bool = False
    full: bool = False


@dataclass(slots=True)
class Released:
    """A trace (or the part that arrived) mapped, with the origins it held."""

    trace_id: str
    mapped: Mapped
    origins: list[Origin]
    why: str  # "root" | "idle" | "evicted" | "full" | "drain"


class TraceJoiner:
    """Buffers spans per trace; :meth:`release` maps the traces that are ready."""

    def __init__(self, config: MappingConfig) -> None:
        """Hold traces as ``config`` bounds them."""
        self.config = config
        self._held: OrderedDict[str, _Held] = OrderedDict()  # oldest first
        self._memory: OrderedDict[str, TraceContext] = OrderedDict()
        self._evicted: list[tuple[str, _Held]] = []

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
                held = self._held[span.trace_id] = _Held()
                if len(self._held) > self.config.max_traces:
                    oldest, victim = self._held.popitem(last=False)
                    self._evicted.append((oldest, victim))
            if not held.origins or held.origins[-1] is not origin:
                held.origins.append(origin)
                holds += 1
            held.spans.setdefault(span.span_id, span)  # a duplicate span id: first one wins
            held.last_seen = now
            if not span.parent_span_id:
                held.rooted = True
            if len(held.spans) >= self.config.max_spans_per_trace:
                held.full = True
        return holds

    def release(self, now: float) -> list[Released]:
        """Map and release every trace that is ready (root seen, idle, full or evicted)."""
        out = [self._map(tid, held, "evicted", now) for tid, held in self._evicted]
        self._evicted.clear()
        idle = self.config.trace_idle_s
        ready = [
            (tid, "root" if h.rooted else "full" if h.full else "idle")
            for tid, h in self._held.items()
            if h.rooted or h.full or now - h.last_seen >= idle
        ]
        for tid, why in ready:
            out.append(self._map(tid, self._held.pop(tid), why, now))
        return out

    def drain(self, now: float) -> list[Released]:
        """Map and release everything held (shutdown)."""
        out = self.release(now)
        while self._held:
            tid, held = self._held.popitem(last=False)
            out.append(self._map(tid, held, "drain", now))
        return out

    def _map(self, trace_id: str, held: _Held, why: str, now: float) -> Released:
        context = self._memory.pop(trace_id, None)
        spans = list(held.spans.values())
        mapped = map_trace(spans, self.config, context=context, now=now, evicted=why == "evicted")
        if self.config.remembered_traces:
            context = context or TraceContext()
            context.absorb(spans)
            self._memory[trace_id] = context
            while len(self._memory) > self.config.remembered_traces:
                self._memory.popitem(last=False)
        return Released(trace_id, mapped, held.origins, why)
