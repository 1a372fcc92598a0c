"""tether's Kafka ACLs per principal: who may write and read which of its topics and groups.

One table (:func:`acl_grants`) is the source of truth for every role; it is printed as
``kafka-acls.sh`` commands (``tether topics acls``), applied through the Admin API
(``tether topics acls --apply``: ``scripts/services.sh up-secure`` and the tests use it), and
written out in docs/kafka-security.md. With ``allow.everyone.if.no.acl.found=false`` (Kafka's
default) whatever is not granted here is refused:

- an **agent** may only write ``<prefix>intents`` (and see that topic's metadata): never
  revocations or their tombstones, findings, decisions, dead letters, ``credential-uses`` or the
  worker's changelogs;
- the **worker** reads the input topics, writes every output topic, owns its consumer groups
  (``<app id>`` and ``<app id>.registry``) and the topics faust names after the app id (the
  tables' changelogs, ``<app id>-...``), and reads revocations back (the registry sync) and
  the tail of the decisions topic (its hash chain, group ``<app id>.audit``);
- a **gateway** (the SDK ``Watcher``, ``tether watch``) only reads revocations. The watcher
  assigns itself every partition and commits nothing, but librdkafka still looks up the
  coordinator of its (random, ``<client id>-<hex>``) group id, which takes Describe on the
  group: the gateway gets Describe, and only Describe, on groups starting with the watchers'
  client ids. Describe cannot join a group, so no gateway can take the worker's partitions;
- the **operator** (``tether revoke``, ``tether reinstate``, ``tether finding
  ack|resolve|suppress``) writes revocations and finding actions (each signed with an operator
  key, which is what verifiers trust: the ACL only keeps others off the topic) and reads
  findings (a suppression is scoped from the finding as tether published it);
- the optional processes each get their own principal: **ingest** (``tether ingest otlp``)
  reads the Collector's traces topic and writes intents, coverage and dead letters; **alerts**
  and **ocsf** (``tether ocsf-forward``) read findings in their groups, ocsf writes
  ``findings.ocsf``; **ssf** reads revocations in its streams' groups; the **console** reads
  findings, revocations, intents, decisions and dead letters without committing anything.

Topic creation is the administrator's (``tether topics create`` as a super user, every topic
of :func:`tether.topics.topic_specs`); the worker may create only its own changelogs. A process
that checks the topics at start-up (``tether worker``, ``tether ingest otlp``, ``tether
ocsf-forward``) gets Describe and DescribeConfigs on the topics it checks, nothing more.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from tether.settings import Settings
from tether.topics import (
    AUDIT_CHECKPOINTS,
    COVERAGE,
    CREDENTIAL_USES,
    DEADLETTER,
    DECISIONS,
    FINDING_ACTIONS,
    FINDINGS,
    INTENTS,
    OCSF_FINDINGS,
    REVOCATIONS,
    topic_specs,
)

Operation = Literal[
    "READ", "WRITE", "CREATE", "DESCRIBE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "DELETE"
]
ResourceKind = Literal["TOPIC", "GROUP"]
PatternKind = Literal["LITERAL", "PREFIXED"]


@dataclass(frozen=True, slots=True)
class Grant:
    """ALLOW ``operations`` on one resource (a topic or group, by name or prefix) to a principal."""

    principal: str
    resource: ResourceKind
    pattern: PatternKind
    name: str
    operations: tuple[Operation, ...]


GATEWAY_GROUP_PREFIXES: Final = ("tether-watcher", "tether-cli-watch")
"""The client ids of the SDK ``Watcher`` and of ``tether watch``, which start their group ids."""
OPERATOR_GROUP_PREFIX: Final = "tether-cli-finding"
"""``tether finding suppress`` reads findings in a throwaway group starting with this."""
CONSOLE_TOPICS: Final = (FINDINGS, REVOCATIONS, INTENTS, DECISIONS, DEADLETTER)
"""What ``tether console`` shows (``tether.soc.console.KafkaFeed.KINDS``)."""


@dataclass(frozen=True, slots=True)
class Principals:
    """The Kafka principals of tether's roles (``User:<SASL user>`` or ``User:<cert CN>``)."""

    worker: str = "User:worker"
    agent: str = "User:agent"
    gateway: str = "User:gateway"
    gateway_groups: tuple[str, ...] = GATEWAY_GROUP_PREFIXES
    operator: str = "User:operator"  # tether revoke|reinstate, tether finding ack|resolve|suppress
    ingest: str = "User:ingest"  # tether ingest otlp
    otlp_topic: str = "otlp_spans"  # the Collector's traces topic it reads (TETHER_OTLP_TOPIC)
    alerts: str = "User:alerts"  # tether alerts
    ssf: str = "User:ssf"  # tether ssf
    ocsf: str = "User:ocsf"  # tether ocsf-forward
    console: str = "User:console"  # tether console


def acl_grants(settings: Settings, principals: Principals) -> list[Grant]:
    """Every ACL tether's roles need for ``settings.topic_prefix`` and app id, and no more."""
    t = settings.topic
    worker, agent, gateway = principals.worker, principals.agent, principals.gateway
    describe: tuple[Operation, ...] = ("DESCRIBE", "DESCRIBE_CONFIGS")  # create_topics checks
    grants = [
        Grant(agent, "TOPIC", "LITERAL", t(INTENTS), ("WRITE", "DESCRIBE")),
        Grant(worker, "TOPIC", "LITERAL", t(INTENTS), ("READ", *describe)),
        Grant(worker, "TOPIC", "LITERAL", t(CREDENTIAL_USES), ("READ", "WRITE", *describe)),
        Grant(worker, "TOPIC", "LITERAL", t(REVOCATIONS), ("READ", "WRITE", *describe)),
        *(
            Grant(worker, "TOPIC", "LITERAL", t(name), ("WRITE", *describe))
            for name in (FINDINGS, DEADLETTER, AUDIT_CHECKPOINTS)
        ),
        # the decisions' hash chain (docs/audit.md): a worker reads the tail of each decisions
        # partition it is assigned, to continue its chain, as a consumer of group <app id>.audit
        Grant(worker, "TOPIC", "LITERAL", t(DECISIONS), ("READ", "WRITE", *describe)),
        Grant(worker, "GROUP", "LITERAL", f"{settings.group_id}.audit", ("READ", "DESCRIBE")),
        # the tables' changelogs, <app id>-sessions-changelog and <app id>-tokens-changelog,
        # which faust creates itself; and any other topic faust names after the app
        Grant(
            worker,
            "TOPIC",
            "PREFIXED",
            f"{settings.group_id}-",
            ("CREATE", "READ", "WRITE", *describe),
        ),
        Grant(worker, "GROUP", "LITERAL", settings.group_id, ("READ", "DESCRIBE")),
        Grant(worker, "GROUP", "LITERAL", f"{settings.group_id}.registry", ("READ", "DESCRIBE")),
        # the revocation ledger (streams/ledger.py) reads the revocations topic in a group of its own
        Grant(worker, "GROUP", "LITERAL", f"{settings.group_id}.ledger", ("READ", "DESCRIBE")),
        # its revocation view (streams/revocation_view.py) is a watcher: a group never joined
        Grant(worker, "GROUP", "PREFIXED", f"{settings.group_id}.view", ("DESCRIBE",)),
        Grant(gateway, "TOPIC", "LITERAL", t(REVOCATIONS), ("READ", "DESCRIBE")),
        *(
            Grant(gateway, "GROUP", "PREFIXED", group, ("DESCRIBE",))
            for group in principals.gateway_groups
        ),
        # operators: revocations and reinstatements by hand (tether revoke|reinstate), finding
        # actions, and the findings a suppression is scoped from (read without committing)
        Grant(principals.operator, "TOPIC", "LITERAL", t(REVOCATIONS), ("WRITE", "DESCRIBE")),
        Grant(principals.operator, "TOPIC", "LITERAL", t(FINDING_ACTIONS), ("WRITE", "DESCRIBE")),
        Grant(principals.operator, "TOPIC", "LITERAL", t(FINDINGS), ("READ", "DESCRIBE")),
        Grant(principals.operator, "GROUP", "PREFIXED", OPERATOR_GROUP_PREFIX, ("DESCRIBE",)),
        # tether ingest otlp: the Collector's traces in its group, out to intents, coverage and
        # dead letters (TETHER_OTLP_GROUP, if set, names another group)
        Grant(principals.ingest, "TOPIC", "LITERAL", principals.otlp_topic, ("READ", "DESCRIBE")),
        *(
            Grant(principals.ingest, "TOPIC", "LITERAL", t(name), ("WRITE", *describe))
            for name in (INTENTS, COVERAGE, DEADLETTER)
        ),
        Grant(principals.ingest, "GROUP", "LITERAL", t("otel-ingest"), ("READ", "DESCRIBE")),
        # tether alerts: findings, one group per sink (<prefix>alerts.<sink>)
        Grant(principals.alerts, "TOPIC", "LITERAL", t(FINDINGS), ("READ", "DESCRIBE")),
        Grant(principals.alerts, "GROUP", "PREFIXED", t("alerts."), ("READ", "DESCRIBE")),
        # tether ssf: revocations, one group per stream (<prefix>ssf-<stream id>)
        Grant(principals.ssf, "TOPIC", "LITERAL", t(REVOCATIONS), ("READ", "DESCRIBE")),
        Grant(principals.ssf, "GROUP", "PREFIXED", t("ssf-"), ("READ", "DESCRIBE")),
        # tether ocsf-forward: findings in, OCSF findings out
        Grant(principals.ocsf, "TOPIC", "LITERAL", t(FINDINGS), ("READ", "DESCRIBE")),
        Grant(principals.ocsf, "TOPIC", "LITERAL", t(OCSF_FINDINGS), ("WRITE", *describe)),
        Grant(principals.ocsf, "GROUP", "LITERAL", t("ocsf-forward"), ("READ", "DESCRIBE")),
        # tether console: reads what it shows from assigned partitions, commits nothing
        *(
            Grant(principals.console, "TOPIC", "LITERAL", t(name), ("READ", "DESCRIBE"))
            for name in CONSOLE_TOPICS
        ),
        Grant(principals.console, "GROUP", "PREFIXED", t("console-"), ("DESCRIBE",)),
    ]
    # whoever checks tether's topics at start-up (create_topics) sees the ones it checks
    everything = [spec.name for spec in topic_specs(settings.topic_prefix)]
    for who in (worker, principals.ingest):
        have = {g.name for g in grants if g.principal == who and g.resource == "TOPIC"}
        grants += [
            Grant(who, "TOPIC", "LITERAL", name, describe)
            for name in everything
            if name not in have
        ]
    return grants


def kafka_acls_commands(
    grants: Sequence[Grant], *, bootstrap: str, command_config: str = "admin.properties"
) -> list[str]:
    """The grants as ``kafka-acls.sh`` commands, one per grant, ready to paste."""
    commands = []
    for grant in grants:
        args = [
            "kafka-acls.sh",
            "--bootstrap-server",
            bootstrap,
            "--command-config",
            command_config,
            "--add",
            "--allow-principal",
            grant.principal,
        ]
        for operation in grant.operations:
            args += ["--operation", _camel(operation)]
        if grant.pattern == "PREFIXED":
            args += ["--resource-pattern-type", "prefixed"]
        args += ["--topic" if grant.resource == "TOPIC" else "--group", grant.name]
        commands.append(shlex.join(args))
    return commands


def apply_acls(settings: Settings, grants: Sequence[Grant], *, timeout: float = 30.0) -> int:
    """Create the grants' ACLs through the Admin API (as a principal allowed to: a super user).

    Creating an ACL that exists is harmless. Returns once the broker that answers lists every
    binding (the controller commits them first; a broker applies them a moment later, and a
    client straight after would still be refused). Returns how many bindings there are.

    Raises:
        confluent_kafka.KafkaException: the broker refused one (the first error).
        TimeoutError: the broker did not list them all within ``timeout``.
    """
    from confluent_kafka.admin import (  # type: ignore[attr-defined]  # noqa: PLC0415  # re-exported without __all__; loads on use
        AclBinding,
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    from tether.adapters.kafka_config import admin_config  # noqa: PLC0415

    bindings = [
        AclBinding(
            ResourceType[grant.resource],
            grant.name,
            ResourcePatternType[grant.pattern],
            grant.principal,
            "*",
            AclOperation[operation],
            AclPermissionType.ALLOW,
        )
        for grant in grants
        for operation in grant.operations
    ]
    admin = AdminClient(admin_config(settings, client_id="tether-acls"))
    deadline = time.monotonic() + timeout
    futures = admin.create_acls(bindings, request_timeout=timeout)
    for future in futures.values():
        future.result(timeout=timeout + 5)
    everything = AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]  # None matches any name (the stub says str)
        ResourcePatternType.ANY,
        None,  # type: ignore[arg-type]  # any principal
        None,  # type: ignore[arg-type]  # any host
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    while True:
        listed = set(admin.describe_acls(everything, request_timeout=timeout).result(timeout + 5))
        missing = set(bindings) - listed
        if not missing:
            return len(bindings)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{len(missing)} ACL binding(s) not in effect after {timeout:g} s")
        time.sleep(0.1)


def _camel(operation: str) -> str:
    """``DESCRIBE_CONFIGS`` -> ``DescribeConfigs``, as kafka-acls.sh spells operations."""
    return "".join(part.capitalize() for part in operation.split("_"))
