"""The gateway's one question, shared by its HTTP and gRPC front ends: may this request pass?"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from tether.gateway.decide import Revocations, Verdict, decide, strictest
from tether.gateway.mapping import GatewayConfig, Headers, request_facts
from tether.sdk.revocation_set import DEFAULT_FAIL_CLOSED_TIERS

TIER_SETS_MAX = 256
"""Sets of tiers whose deciding tier a gateway remembers (more are worked out each time)."""


@dataclass
class GatewayStats:
    """Verdicts given, by outcome and reason (``/metrics``-style counters for the health view)."""

    verdicts: Counter[str] = field(default_factory=Counter)
    # (answer, tier): answer is revoked, not_revoked, fail_open, fail_closed or refused
    answers: Counter[tuple[str, str]] = field(default_factory=Counter)


def answer(verdict: Verdict) -> str:
    """What the revocation set answered for a verdict (``tether_gateway_checks_total``)."""
    if verdict.reason == "ok":
        return "not_revoked"
    if verdict.reason.endswith("_revoked"):
        return "revoked"
    if verdict.reason == "stale_fail_open":
        return "fail_open"
    if verdict.outcome == "unavailable":
        return "fail_closed"
    return "refused"  # no route, a missing or unreadable identity: never asked


class Gateway:
    """Maps a request to identities (:mod:`tether.gateway.mapping`) and decides it
    (:mod:`tether.gateway.decide`) against the revocation set it is given."""

    def __init__(self, config: GatewayConfig, revocations: Revocations) -> None:
        """Answer with ``config``'s mapping from ``revocations`` (``Watcher.revocations``)."""
        self.config = config
        self.revocations = revocations
        self.fail_closed = (
            config.fail_closed_tiers
            if config.fail_closed_tiers is not None
            else DEFAULT_FAIL_CLOSED_TIERS
        )
        self.stats = GatewayStats()
        self.lock = threading.Lock()  # guards ``stats`` (requests come on several threads)
        # the deciding tier of each set of tiers a request has met (sets come from the
        # mapping's routes and tool tiers, so there are few): not worked out per request
        self._tier_of: dict[frozenset[str], str] = {}

    def check(
        self, path: str, headers: Headers, body: bytes | None = None, *, trust_uri_headers: bool
    ) -> Verdict:
        """The verdict on one request.

        Args:
            path: the check request's path.
            headers: every header value by lower-case name.
            body: the request body, when the proxy forwards it.
            trust_uri_headers: read the original path from the configured original-URI headers
                (forward-auth: the proxy sets them). False for Envoy's gRPC check, which carries
                the path itself and passes every CLIENT header: a client must not pick its route.
        """
        config = self.config
        if not trust_uri_headers and config.original_uri_headers:
            headers = {k: v for k, v in headers.items() if k not in config.original_uri_headers}
        facts, tiers = request_facts(config, path, headers, body)
        verdict = decide(facts, tiers, self.revocations, self.fail_closed)
        tier = self._tier(tiers)
        with self.lock:
            self.stats.verdicts[f"{verdict.outcome}:{verdict.reason}"] += 1
            self.stats.answers[answer(verdict), tier] += 1
        return verdict

    def _tier(self, tiers: set[str]) -> str:
        key = frozenset(tiers)
        tier = self._tier_of.get(key)
        if tier is None:
            tier = strictest(tiers, self.fail_closed)
            if len(self._tier_of) < TIER_SETS_MAX:
                self._tier_of[key] = tier
        return tier
