"""The decision log's hash chain and its verifier, over in-memory logs (docs/audit.md).

Table-driven: each way of tampering with a chained log is applied to an untouched one and the
verifier must name it (kind, and where); the untouched log must pass. Hypothesis: any single
edit of a chained log (a byte changed, a record removed, inserted, duplicated, moved, the tail
cut) is detected when a checkpoint covers the log's end.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.audit.chain import GENESIS, ChainHeads, Link, seal, unseal
from tether.audit.checkpoint import CheckpointSigner, keys_of, verify_checkpoint
from tether.audit.verify import Entry, Report, verify_log
from tether.models.codec import encode
from tether.models.outputs import Decision
from tether.security import SetSigner, generate_key

ISSUER = "urn:tether:test"
T0 = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)
KEY = generate_key("ES256")
SIGNER = SetSigner(KEY, issuer=ISSUER)
CHECKPOINTS = CheckpointSigner(SIGNER)
KEYS = keys_of({"keys": [SIGNER.public_jwk()]})


def decision(i: int, workflow: str = "wf-1") -> bytes:
    return encode(
        Decision(
            event_id=f"e-{i}",
            workflow_id=workflow,
            workload_id="agent-a",
            tool="search",
            decision="allow" if i % 3 else "deny",
            findings=[] if i % 3 else ["scope_escalation"],
            policy_ids=["p1"],
            evaluated_at=T0,
        )
    )


Log = list[Entry]


def chained(n: int = 8, partitions: int = 1) -> tuple[Log, list[tuple[bytes, str]]]:
    """A log of ``n`` decisions per partition, as a worker writes it, and a checkpoint of each
    partition's last link."""
    heads = ChainHeads()
    log: Log = []
    tokens: list[tuple[bytes, str]] = []
    for p in range(partitions):
        heads.set_head(p, None)
        for i in range(n):
            value, link = heads.seal(p, decision(i, f"wf-{p}-{i % 3}"))
            log.append(Entry(value, f"p{p} offset {i}", p))
        tokens.append((CHECKPOINTS.sign(link, log="t.decisions", worker="w1", now=1e9), f"cp{p}"))
    return log, tokens


def kinds(report: Report) -> list[tuple[str, int | None]]:
    return sorted((i.kind, i.seq) for i in report.issues)


def change_in_place(log: Log) -> Log:
    e = log[3]
    return [*log[:3], Entry(e.value.replace(b'"search"', b'"delete"'), e.position, 0), *log[4:]]


def change_recomputed(log: Log) -> Log:
    """An editor who knows the format recomputes the edited record's hash."""
    e = unseal(log[3].value)
    record = dict(e.record)
    del record["chain"]
    record["decision"] = "allow"
    body = orjson.dumps(record)
    value, _ = seal(body, 0, e.link.seq, e.link.prev)
    return [*log[:3], Entry(value, log[3].position, 0), *log[4:]]


def remove(log: Log) -> Log:
    return [*log[:4], *log[5:]]


def swap(log: Log) -> Log:
    return [*log[:2], log[3], log[2], *log[4:]]


def insert_unchained(log: Log) -> Log:
    return [*log[:5], Entry(decision(99), "forged", 0), *log[5:]]


def insert_forged_link(log: Log) -> Log:
    """A forged record at seq 5 that links correctly to seq 4 (the forger read the log)."""
    before = unseal(log[4].value).link
    value, _ = seal(decision(99), 0, before.seq + 1, before.hash)
    return [*log[:5], Entry(value, "forged", 0), *log[5:]]


def duplicate(log: Log) -> Log:
    return [*log[:5], Entry(log[4].value, "copy", 0), *log[5:]]


def truncate(log: Log) -> Log:
    return log[:-2]


def rewrite_tail(log: Log) -> Log:
    """Change seq 3 and recompute every later link: only the checkpoint can tell."""
    out = log[:3]
    prev = unseal(log[2].value).link.hash
    for e in log[3:]:
        u = unseal(e.value)
        record = dict(u.record)
        del record["chain"]
        if u.link.seq == 3:
            record["decision"] = "allow"
        value, link = seal(orjson.dumps(record), 0, u.link.seq, prev)
        prev = link.hash
        out.append(Entry(value, e.position, 0))
    return out


def move_partition(log: Log) -> Log:
    e = log[3]
    return [*log[:3], *log[4:], Entry(e.value, "moved", 1)]


CASES: list[tuple[str, Callable[[Log], Log], list[tuple[str, int | None]]]] = [
    ("untouched", lambda log: log, []),
    ("one decision changed", change_in_place, [("changed", 3)]),
    ("one decision changed, its hash recomputed", change_recomputed, [("changed", 3)]),
    ("one decision removed", remove, [("removed", 4)]),
    ("two decisions swapped", swap, [("reordered", 3)]),
    ("one unchained decision inserted", insert_unchained, [("inserted", None)]),
    ("one forged, well-linked decision inserted", insert_forged_link, [("inserted", 5)]),
    ("one decision duplicated", duplicate, [("inserted", 4)]),
    ("the tail truncated", truncate, [("truncated", 7)]),
    ("everything after seq 3 rewritten", rewrite_tail, [("rewritten", 7)]),
    ("a decision moved to another partition", move_partition, [("inserted", 3), ("removed", 3)]),
]


@pytest.mark.parametrize(("name", "tamper", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_tampering_is_named(
    name: str, tamper: Callable[[Log], Log], expected: list[tuple[str, int | None]]
) -> None:
    log, tokens = chained()
    report = verify_log(tamper(log), tokens, KEYS)
    assert kinds(report) == sorted(expected), [i.line() for i in report.issues]
    assert report.ok == (not expected)


def test_untouched_multi_partition_log_passes_and_reports_coverage() -> None:
    log, tokens = chained(5, partitions=3)
    report = verify_log(log, tokens, KEYS)
    assert report.ok, [i.line() for i in report.issues]
    assert report.checkpoints == 3
    assert [(p.first_seq, p.last_seq, p.after_checkpoint) for p in report.partitions.values()] == [
        (0, 4, 0)
    ] * 3


def test_a_zombie_writer_interleaving_is_a_fork() -> None:
    """Two writers continued the same head (the old owner of a partition kept writing)."""
    heads_a, heads_b = ChainHeads(), ChainHeads()
    log: Log = []
    heads_a.set_head(0, None)
    for i in range(3):
        value, link = heads_a.seal(0, decision(i))
        log.append(Entry(value, f"offset {len(log)}", 0))
    heads_b.set_head(0, link)  # the zombie still holds the same head
    for i in range(3, 6):
        for heads in (heads_a, heads_b):
            value, _ = heads.seal(0, decision(i, "wf-z" if heads is heads_b else "wf-1"))
            log.append(Entry(value, f"offset {len(log)}", 0))
    report = verify_log(log)
    assert kinds(report) == [("fork", 3)], [i.line() for i in report.issues]


def test_a_log_whose_start_was_deleted_by_retention_passes() -> None:
    log, tokens = chained(8)
    early = unseal(log[1].value).link
    old = CHECKPOINTS.sign(early, log="t", worker="w", now=1e9)
    report = verify_log(log[4:], [*tokens, (old, "old")], KEYS)
    assert report.ok, [i.line() for i in report.issues]
    assert report.partitions[0].first_seq == 4


def test_a_complete_log_missing_its_start_reports_the_removal() -> None:
    log, tokens = chained(8)
    report = verify_log(log[2:], tokens, KEYS, complete={0})
    assert kinds(report) == [("removed", 0)]


def test_a_forged_checkpoint_is_reported() -> None:
    log, tokens = chained()
    other = CheckpointSigner(SetSigner(generate_key("ES256"), issuer=ISSUER))
    forged = other.sign(unseal(log[-1].value).link, log="t", worker="w", now=1e9)
    report = verify_log(log, [*tokens, (forged, "forged")], KEYS)
    assert kinds(report) == [("bad_checkpoint", None)]


def test_an_unknown_head_restart_is_reported() -> None:
    heads = ChainHeads()  # the head of partition 0 was never read
    value, link = heads.seal(0, decision(1))
    assert link.prev != GENESIS
    assert kinds(verify_log([Entry(value, "o0", 0)])) == [("broken", 0)]


def test_a_replay_file_skips_other_record_kinds_only_when_asked() -> None:
    log, _ = chained(3)
    finding = Entry(b'{"kind":"finding","finding_id":"f"}', "line 2")
    mixed = [log[0], finding, *log[1:]]
    assert verify_log(mixed, only_decisions=True).ok
    assert kinds(verify_log(mixed)) == [("inserted", None)]


def test_seal_appends_the_link_last_and_unseal_recovers_the_exact_bytes() -> None:
    body = decision(1)
    value, link = seal(body, 2, 7, GENESIS)
    assert value.startswith(body[:-1])
    u = unseal(value)
    assert u.body == body
    assert u.intact
    assert u.link == link
    assert orjson.loads(value)["chain"] == link.as_dict()


def test_a_reserialized_record_counts_as_changed() -> None:
    value, _ = seal(decision(1), 0, 0, GENESIS)
    pretty = orjson.dumps(orjson.loads(value), option=orjson.OPT_INDENT_2)
    report = verify_log([Entry(pretty, "o0", 0)])
    assert kinds(report) == [("changed", 0)]


def test_checkpoint_round_trip_and_typ() -> None:
    link = Link(3, 41, GENESIS, "a" * 64)
    token = CHECKPOINTS.sign(link, log="t.decisions", worker="w1", now=1_700_000_000.5)
    c = verify_checkpoint(token, KEYS, ISSUER)
    assert (c.partition, c.seq, c.head, c.issued_at, c.worker) == (
        3,
        41,
        "a" * 64,
        1_700_000_000,
        "w1",
    )


# -- any single edit is detected ---------------------------------------------------------------

EDITS = ("byte", "remove", "insert_copy", "move", "truncate", "insert_junk")


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=12),
    edit=st.sampled_from(EDITS),
    where=st.integers(min_value=0, max_value=10_000),
    other=st.integers(min_value=0, max_value=10_000),
    byte=st.integers(min_value=1, max_value=255),
)
def test_any_single_edit_is_detected(n: int, edit: str, where: int, other: int, byte: int) -> None:
    log, tokens = chained(n)
    i, j = where % n, other % n
    tampered = list(log)
    if edit == "byte":
        value = bytearray(log[i].value)
        k = other % len(value)
        value[k] = (value[k] + byte) % 256
        tampered[i] = Entry(bytes(value), log[i].position, 0)
    elif edit == "remove":
        del tampered[i]
    elif edit == "insert_copy":
        tampered.insert(j, Entry(log[i].value, "copy", 0))
    elif edit == "move":
        if i == j or abs(i - j) == 0:
            j = (i + 1) % n
        tampered.insert(j, tampered.pop(i))
    elif edit == "truncate":
        tampered = tampered[: i if i < n else n - 1]
    else:
        tampered.insert(j, Entry(b'{"kind":"decision"}', "junk", 0))
    assert tampered != log
    report = verify_log(tampered, tokens, KEYS, complete=True)
    assert not report.ok, (edit, i, j)


HOSTILE = [
    b"",
    b"not json",
    b"[1, 2]",
    b'{"chain": 5}',
    b'{"chain": {"v": 1, "partition": -1, "seq": 0, "prev": "x", "hash": "y"}}',
    b'{"chain": {"v": 1, "partition": 0, "seq": true, "prev": "x", "hash": "' + b"a" * 64 + b'"}}',
    b'{"chain": {"v": 2, "partition": 0, "seq": 0, "prev": "x", "hash": "' + b"a" * 64 + b'"}}',
    b'{"chain": {"v": 1, "partition": 0, "seq": 999999999999999999999, "prev": "x", "hash": "'
    + b"a" * 64
    + b'"}}',
    b'{"chain": {"v": 1, "partition": 0, "seq": 1000000000000, "prev": "x", "hash": "'
    + b"a" * 64
    + b'"}}',
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_records_are_reported_never_crash(value: bytes) -> None:
    log, tokens = chained(4)
    report = verify_log([*log[:2], Entry(value, "hostile", 0), *log[2:]], tokens, KEYS)
    assert not report.ok


def test_a_reversed_log_names_every_moved_record_once() -> None:
    heads = ChainHeads()
    heads.set_head(0, None)
    body = decision(1)
    log = [Entry(heads.seal(0, body)[0], f"o{i}", 0) for i in range(5000)]
    report = verify_log(list(reversed(log)))
    assert [i.kind for i in report.issues] == ["reordered"] * 4999


def test_a_topic_upgraded_to_the_chain_counts_its_older_unlinked_records() -> None:
    old = [Entry(decision(i), f"offset {i}", 0) for i in range(3)]
    log, tokens = chained(4)
    shifted = [Entry(e.value, f"offset {i + 3}", 0) for i, e in enumerate(log)]
    report = verify_log([*old, *shifted], tokens, KEYS, before_chain=True)
    assert report.ok, [i.line() for i in report.issues]
    assert report.before_chain == 3
    # an unlinked record after the chain began is still an insertion
    late = [*old, *shifted[:2], Entry(decision(9), "offset 9", 0), *shifted[2:]]
    assert kinds(verify_log(late, tokens, KEYS, before_chain=True)) == [("inserted", None)]
