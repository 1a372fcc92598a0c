"""The ACL table grants the worker every consumer group it joins (a secured cluster refuses the
rest: the revocation ledger without its group would never correct a shortened revocation)."""

from __future__ import annotations

from tether.adapters.kafka_acls import Principals, acl_grants
from tether.settings import Settings


def test_the_worker_may_join_each_of_its_consumer_groups() -> None:
    settings = Settings(topic_prefix="acme.")
    grants = acl_grants(settings, Principals("User:worker", "User:agent", "User:gateway"))
    groups = {g.name for g in grants if g.resource == "GROUP" and g.principal == "User:worker"}
    app = settings.group_id
    # the faust app's group, the registry sync's, the revocation ledger's, the audit chain's
    assert {app, f"{app}.registry", f"{app}.ledger", f"{app}.audit"} <= groups
    for g in grants:
        if g.resource == "GROUP" and g.principal != "User:worker":
            assert set(g.operations) == {"DESCRIBE"}  # nobody else may join a worker's group
