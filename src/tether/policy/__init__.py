"""Per-call authorization policy in Cedar: requests, packs, evaluation and its decision cache.

tether's detectors check a call against its workflow's grant; the call policy adds
organisation-wide guardrails written in Cedar (`policy/default/*.cedar`). The core depends on
its own port (`tether.core.ports.CallPolicy`); `bind.CedarCallPolicy` adapts the evaluator to it.
"""

from __future__ import annotations

from tether.policy.evaluate import PolicyEvaluator
from tether.policy.loader import PolicyError, PolicyPack, load_default_pack, load_policy_dir
from tether.policy.request import PolicyRequest
from tether.policy.result import PolicyResult

__all__ = [
    "PolicyError",
    "PolicyEvaluator",
    "PolicyPack",
    "PolicyRequest",
    "PolicyResult",
    "load_default_pack",
    "load_policy_dir",
]
