"""Evaluate tool calls against a policy pack, with an LRU decision cache."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import cedarpy

from tether.policy.result import (
    DEFAULT_DENY,
    DEFAULT_SEVERITY,
    EVALUATION_ERROR,
    PolicyResult,
    highest,
)
from tether.policy.schema import cedar_request

if TYPE_CHECKING:
    from tether.policy.loader import PolicyPack
    from tether.policy.request import PolicyRequest

DEFAULT_CACHE_SIZE = 65536


class PolicyEvaluator:
    """Decide tool calls with a loaded pack; pure computation, no I/O.

    Decisions are cached by `PolicyRequest.cache_key` in a least-recently-used map of
    `cache_size` entries (0 turns the cache off). A pack is immutable, so a cached decision
    never goes stale; a new pack needs a new evaluator. Not thread-safe: give each worker
    its own evaluator.

    Example:
        >>> evaluator = PolicyEvaluator(load_default_pack())
        >>> result = evaluator.evaluate(PolicyRequest.for_call(operation="admin", ...))
        >>> result.allowed, result.policy_ids, result.severity
        (False, ('tether.admin.high-autonomy',), 'high')
    """

    def __init__(self, pack: PolicyPack, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        """Create an evaluator.

        Args:
            pack: The policies to evaluate.
            cache_size: Most decisions to remember; 0 disables the cache.

        Raises:
            ValueError: A negative `cache_size`.
        """
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self._pack = pack
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str | int | bool, ...], PolicyResult] = OrderedDict()
        self._hits = 0
        self._misses = 0

    @property
    def pack(self) -> PolicyPack:
        """The pack this evaluator decides with."""
        return self._pack

    @property
    def revision(self) -> str:
        """The pack's revision, to record with each decision."""
        return self._pack.revision

    @property
    def hits(self) -> int:
        """Evaluations answered from the cache."""
        return self._hits

    @property
    def misses(self) -> int:
        """Evaluations that ran Cedar."""
        return self._misses

    @property
    def cached(self) -> int:
        """Decisions currently in the cache."""
        return len(self._cache)

    def clear_cache(self) -> None:
        """Forget every cached decision (the counters are kept)."""
        self._cache.clear()

    def evaluate(self, req: PolicyRequest) -> PolicyResult:
        """Decide whether the call may proceed.

        Never raises for a well-formed request: anything Cedar reports as an error denies the
        call with policy id `EVALUATION_ERROR`, severity high, and the error text in `errors`.

        Args:
            req: The tool call.

        Returns:
            The decision and the policies that determined it.
        """
        key = req.cache_key
        cache = self._cache
        result = cache.get(key)
        if result is not None:
            cache.move_to_end(key)
            self._hits += 1
            return result
        self._misses += 1
        result = self._decide(req)
        if self._cache_size:
            cache[key] = result
            if len(cache) > self._cache_size:
                cache.popitem(last=False)
        return result

    def _decide(self, req: PolicyRequest) -> PolicyResult:
        pack = self._pack
        try:
            # No schema here: the loader checked that the schema accepts tether's request shape,
            # and a PolicyRequest always has that shape. Re-validating each request would cost
            # about 30 µs of the call's 90.
            response = cedarpy.is_authorized(cedar_request(req), pack.policy_set, pack.entities)
        # Fail closed: whatever the binding raises denies the call rather than crash the worker.
        except Exception as exc:
            return self._denied((), errors=(f"{type(exc).__name__}: {exc}",))
        diagnostics = response.diagnostics
        reasons = tuple(sorted(diagnostics.reasons))
        if diagnostics.errors:
            # Cedar skips a policy that errors; a skipped forbid must not turn into an allow.
            forbids = () if response.allowed else reasons
            return self._denied(forbids, errors=tuple(diagnostics.errors))
        if response.allowed:
            return PolicyResult(allowed=True, policy_ids=reasons)
        return self._denied(reasons)

    def _denied(self, forbids: tuple[str, ...], errors: tuple[str, ...] = ()) -> PolicyResult:
        """A denial by `forbids`, or by an evaluation error, or by no permit matching."""
        severities = [self._pack.severities.get(f, DEFAULT_SEVERITY) for f in forbids]
        if errors:
            forbids = (EVALUATION_ERROR, *forbids)
            severities.append(DEFAULT_SEVERITY)
        elif not forbids:
            forbids = (DEFAULT_DENY,)
        return PolicyResult(
            allowed=False, policy_ids=forbids, severity=highest(severities), errors=errors
        )
