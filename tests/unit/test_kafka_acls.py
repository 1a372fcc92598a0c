"""The ACL table grants each role what it needs and no more: the worker every consumer group it
joins (a secured cluster refuses the rest: the revocation ledger without its group would never
correct a shortened revocation), one operator principal for every operator tool, and a
principal of its own to each optional process (ingest, alerts, ssf, ocsf-forward, console)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tether.adapters.kafka_acls import Grant, Principals, acl_grants
from tether.cli import main
from tether.settings import Settings
from tether.topics import topic_specs

PREFIX = "acme."
SETTINGS = Settings(topic_prefix=PREFIX)
GRANTS = acl_grants(SETTINGS, Principals())


def _ops(principal: str, resource: str = "TOPIC") -> dict[str, set[str]]:
    """What ``principal`` may do, by resource name (literal names and prefixes alike)."""
    out: dict[str, set[str]] = {}
    for g in GRANTS:
        if g.principal == principal and g.resource == resource:
            out.setdefault(g.name, set()).update(g.operations)
    return out


def _writers(topic: str) -> set[str]:
    return {g.principal for g in GRANTS if g.name == PREFIX + topic and "WRITE" in g.operations}


def test_the_worker_may_join_each_of_its_consumer_groups() -> None:
    groups = {g.name for g in GRANTS if g.resource == "GROUP" and g.principal == "User:worker"}
    app = SETTINGS.group_id
    # the faust app's group, the registry sync's, the revocation ledger's, the audit chain's
    assert {app, f"{app}.registry", f"{app}.ledger", f"{app}.audit"} <= groups
    for g in GRANTS:  # nobody else may join a worker's group (nor one a prefix of theirs names)
        if g.resource == "GROUP" and g.principal != "User:worker" and "READ" in g.operations:
            for mine in groups:
                assert not mine.startswith(g.name), (g, mine)


def test_one_operator_principal_covers_revoke_reinstate_and_finding_actions() -> None:
    ops = _ops("User:operator")
    assert ops[PREFIX + "revocations"] == {"WRITE", "DESCRIBE"}  # tether revoke|reinstate
    assert ops[PREFIX + "finding-actions"] == {"WRITE", "DESCRIBE"}  # tether finding ...
    assert ops[PREFIX + "findings"] == {"READ", "DESCRIBE"}  # finding suppress scopes from it
    assert set(ops) == {PREFIX + t for t in ("revocations", "finding-actions", "findings")}
    assert _ops("User:operator", "GROUP") == {"tether-cli-finding": {"DESCRIBE"}}


@pytest.mark.parametrize(
    ("topic", "writers"),
    [
        ("intents", {"User:agent", "User:ingest"}),
        ("revocations", {"User:worker", "User:operator"}),
        ("findings", {"User:worker"}),
        ("decisions", {"User:worker"}),
        ("deadletter", {"User:worker", "User:ingest"}),
        ("finding-actions", {"User:operator"}),
        ("coverage", {"User:ingest"}),
        ("findings.ocsf", {"User:ocsf"}),
    ],
)
def test_who_writes_each_topic(topic: str, writers: set[str]) -> None:
    assert _writers(topic) == writers


@pytest.mark.parametrize(
    ("principal", "reads", "groups"),
    [
        ("User:ingest", {"otlp_spans"}, {PREFIX + "otel-ingest": {"READ", "DESCRIBE"}}),
        ("User:alerts", {PREFIX + "findings"}, {PREFIX + "alerts.": {"READ", "DESCRIBE"}}),
        ("User:ssf", {PREFIX + "revocations"}, {PREFIX + "ssf-": {"READ", "DESCRIBE"}}),
        ("User:ocsf", {PREFIX + "findings"}, {PREFIX + "ocsf-forward": {"READ", "DESCRIBE"}}),
        (
            "User:console",
            {PREFIX + t for t in ("findings", "revocations", "intents", "decisions", "deadletter")},
            {PREFIX + "console-": {"DESCRIBE"}},  # assigns partitions, commits nothing
        ),
    ],
)
def test_each_process_reads_its_topics_in_its_groups(
    principal: str, reads: set[str], groups: dict[str, set[str]]
) -> None:
    ops = _ops(principal)
    assert {name for name, o in ops.items() if "READ" in o} == reads
    assert _ops(principal, "GROUP") == groups


def test_the_console_and_ocsf_forward_match_their_code() -> None:
    from tether.soc.console import KafkaFeed
    from tether.soc.ocsf_forward import ocsf_topic_spec

    reads = {n for n, o in _ops("User:console").items() if "READ" in o}
    assert {PREFIX + k for k in KafkaFeed.KINDS} == reads
    assert "WRITE" in _ops("User:ocsf")[ocsf_topic_spec(SETTINGS).name]


def test_topics_create_makes_the_processes_topics() -> None:
    names = {s.name for s in topic_specs(PREFIX)}
    assert {PREFIX + "coverage", PREFIX + "findings.ocsf", PREFIX + "finding-actions"} <= names


@pytest.mark.parametrize("principal", ["User:worker", "User:ingest"])
def test_who_checks_the_topics_at_start_up_may_describe_every_one(principal: str) -> None:
    """`tether worker` and `tether ingest otlp` run create_topics over every topic: without
    Describe on one it looks missing and they try (and are refused) to create it."""
    ops = _ops(principal)
    for spec in topic_specs(PREFIX):
        assert {"DESCRIBE", "DESCRIBE_CONFIGS"} <= ops.get(spec.name, set()), spec.name


def test_ocsf_forward_may_check_its_topic() -> None:
    assert {"WRITE", "DESCRIBE", "DESCRIBE_CONFIGS"} <= _ops("User:ocsf")[PREFIX + "findings.ocsf"]


def test_no_role_but_the_worker_may_create_a_topic() -> None:
    creators = {g.principal for g in GRANTS if "CREATE" in g.operations}
    assert creators == {"User:worker"}
    assert all(
        g.pattern == "PREFIXED" and g.name == f"{SETTINGS.group_id}-"
        for g in GRANTS
        if "CREATE" in g.operations
    )


def test_the_cli_names_the_operator_and_each_process_principal() -> None:
    res = CliRunner().invoke(
        main,
        [
            "topics",
            "acls",
            "--prefix",
            PREFIX,
            "--operator",
            "User:ops-team",
            "--ingest",
            "User:collector",
            "--otlp-topic",
            "otel.traces",
        ],
    )
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert any(
        "User:ops-team" in line and f"--topic {PREFIX}revocations" in line and "Write" in line
        for line in lines
    )
    assert any("User:collector" in line and "--topic otel.traces" in line for line in lines)
    assert not any("User:operator" in line for line in lines)


def test_grants_are_well_formed() -> None:
    assert all(isinstance(g, Grant) and g.operations for g in GRANTS)
    assert len(set(GRANTS)) == len(GRANTS)


def test_the_commands_in_the_docs_are_the_tables() -> None:
    """docs/kafka-security.md lists what `tether topics acls` prints for the defaults (regenerate
    it from that output when the table changes)."""
    from pathlib import Path

    from tether.adapters.kafka_acls import kafka_acls_commands

    doc = Path(__file__).resolve().parents[2] / "docs" / "kafka-security.md"
    listed = [ln for ln in doc.read_text().splitlines() if ln.startswith("kafka-acls.sh ")]
    grants = acl_grants(Settings(topic_prefix="tether."), Principals())
    assert sorted(listed) == sorted(kafka_acls_commands(grants, bootstrap="kafka-1:9093"))
