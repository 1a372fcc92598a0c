"""The Kafka topics tether uses: names (with the configured prefix), keys, partitions, configs."""

from __future__ import annotations

from dataclasses import dataclass, field

INTENTS = "intents"
FINDINGS = "findings"
DECISIONS = "decisions"
REVOCATIONS = "revocations"
DEADLETTER = "deadletter"
FINDING_ACTIONS = "finding-actions"  # operators' signed ack/resolve/suppress, keyed by finding_id
CREDENTIAL_USES = "credential-uses"  # internal: workflow sessions -> token index, keyed by token_id
AUDIT_CHECKPOINTS = (
    "audit-checkpoints"  # signed heads of the decisions' hash chains (docs/audit.md)
)
COVERAGE = "coverage"  # tether ingest otlp: how much of each workflow's traces it could map
OCSF_FINDINGS = "findings.ocsf"  # tether ocsf-forward: each finding as an OCSF Detection Finding

SEVEN_DAYS_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic as tether creates it (explicitly; never by broker auto-creation)."""

    name: str
    key: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    enforced: tuple[str, ...] = ()
    """Configs ``tether topics create`` also sets on the topic when it exists already (a
    documented setting, like the decisions' retention, must take effect when changed)."""


def topic_specs(
    prefix: str = "tether.",
    partitions: int = 6,
    *,
    min_insync_replicas: int = 1,
    decisions_retention_ms: int = SEVEN_DAYS_MS,
) -> list[TopicSpec]:
    """Every topic, in the contract's table order (docs/contract.md), then the internal ones.

    The topics of the optional processes (``tether ingest otlp``'s coverage, ``tether
    ocsf-forward``'s OCSF findings) are here too: ``tether topics create`` makes them as an
    administrator, so those processes need no right to create topics under the ACLs.

    Input and internal topics share one partition count: the session table is co-partitioned
    with ``intents`` and the token table with ``credential-uses``. Every topic gets the same
    ``min.insync.replicas`` (``TETHER_KAFKA__MIN_INSYNC_REPLICAS``): a revocation is no less
    worth keeping than the intent that caused it.

    The decisions (the audit log) and their signed checkpoints are kept
    ``decisions_retention_ms`` (``TETHER_DECISIONS_RETENTION_MS``; -1: for ever), set on both
    topics whenever ``tether topics create`` runs. The checkpoints topic has the decisions'
    partition count: checkpoint ``p`` goes to partition ``p``.
    """
    audit = {"cleanup.policy": "delete", "retention.ms": str(decisions_retention_ms)}
    specs = [
        TopicSpec(
            f"{prefix}{INTENTS}",
            "workflow_id",
            partitions,
            {"cleanup.policy": "delete", "retention.ms": str(SEVEN_DAYS_MS)},
        ),
        TopicSpec(f"{prefix}{FINDINGS}", "workflow_id", partitions, {"cleanup.policy": "delete"}),
        TopicSpec(
            f"{prefix}{DECISIONS}",
            "workflow_id (partition: the workflow's intents partition)",
            partitions,
            dict(audit),
            enforced=("retention.ms",),
        ),
        TopicSpec(
            f"{prefix}{REVOCATIONS}",
            "<target.kind>:<target.id>",
            partitions,
            {
                "cleanup.policy": "compact",
                "segment.ms": str(3600 * 1000),
                "min.cleanable.dirty.ratio": "0.1",
            },
        ),
        TopicSpec(
            f"{prefix}{DEADLETTER}", "original key", partitions, {"cleanup.policy": "delete"}
        ),
        TopicSpec(
            f"{prefix}{CREDENTIAL_USES}",
            "token_id",
            partitions,
            {"cleanup.policy": "delete", "retention.ms": str(SEVEN_DAYS_MS)},
        ),
        TopicSpec(  # an audit trail: kept until deleted by hand
            f"{prefix}{FINDING_ACTIONS}",
            "finding_id",
            partitions,
            {"cleanup.policy": "delete", "retention.ms": "-1"},
        ),
        TopicSpec(
            f"{prefix}{AUDIT_CHECKPOINTS}",
            "decisions partition",
            partitions,
            dict(audit),
            enforced=("retention.ms",),
        ),
        TopicSpec(f"{prefix}{COVERAGE}", "workflow_id", partitions, {"cleanup.policy": "delete"}),
        TopicSpec(  # keyed and partitioned like the findings it re-publishes
            f"{prefix}{OCSF_FINDINGS}", "workflow_id", partitions, {"cleanup.policy": "delete"}
        ),
    ]
    for spec in specs:
        spec.config["min.insync.replicas"] = str(min_insync_replicas)
    return specs


def topic_spec(
    name: str, prefix: str, partitions: int, *, min_insync_replicas: int = 1
) -> TopicSpec:
    """The spec of one topic of :func:`topic_specs` (``name`` without the prefix).

    Raises:
        KeyError: not one of tether's topics.
    """
    for spec in topic_specs(prefix, partitions, min_insync_replicas=min_insync_replicas):
        if spec.name == f"{prefix}{name}":
            return spec
    raise KeyError(name)
