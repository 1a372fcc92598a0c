"""Verifying a chained decision log: what was changed, inserted, removed, reordered, truncated.

Pure: the caller reads the records (a topic, a file, a bundle) and hands them over in the order
they are stored. Per partition, the records are checked in two passes:

1. **Order.** The longest run of records whose seqs never decrease, in storage order, is taken
   as the log's order; every other record was moved (``reordered``). A swap of two records is
   one moved record, not a cascade of errors.
2. **Links**, over the records sorted by seq. A seq missing between two present ones was
   ``removed``. A record whose bytes do not hash to its own link was ``changed`` (edited in
   place). A record whose successor names another predecessor hash was ``changed`` too, its
   hash recomputed by whoever edited it. A second record at a seq (nothing links to it) was
   ``inserted``; a second record that a further second record links to is a ``fork`` (two
   writers continued one head: a zombie worker that kept writing after its partition moved, or
   a forger who rewrote a branch). A record without a link on a decisions log was ``inserted``.

Then the signed checkpoints (``checkpoint``): a checkpoint of a seq past the log's last link
means the tail was ``truncated``; one whose head differs from the link at its seq means the log
up to there was ``rewritten``; one that does not verify is a ``bad_checkpoint``. A truncated
tail is detectable only against a checkpoint: records after the last one can be removed
unnoticed (each partition's report says how many there are).
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tether.security.sets import KeyLookup, StaticKeys

from .chain import GENESIS, UNKNOWN, Link, NotChained, link_hash, unseal
from .checkpoint import BadCheckpoint, Checkpoint, verify_checkpoint

IssueKind = Literal[
    "changed",
    "inserted",
    "removed",
    "reordered",
    "fork",
    "truncated",
    "rewritten",
    "bad_checkpoint",
    "bad_signature",
    "broken",
]
OTHER_KINDS = frozenset({"finding", "revocation", "deadletter", "heartbeat"})
"""Record kinds a file may hold beside decisions (``tether replay`` output): not chained."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored record: its bytes, where it is (for the report), and the partition it is
    stored on (a topic's; None for a file: the link's own partition is used).

    ``stub`` stands for a record shown only by its link (an evidence bundle withholds other
    workflows' decisions): its content cannot be checked, its place in the chain can."""

    value: bytes
    position: str
    partition: int | None = None
    stub: Link | None = None


@dataclass(frozen=True, slots=True)
class Issue:
    """One finding of the verifier."""

    kind: IssueKind
    partition: int | None
    seq: int | None
    position: str | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {
            "kind": self.kind,
            "partition": self.partition,
            "seq": self.seq,
            "position": self.position,
            "detail": self.detail,
        }

    def line(self) -> str:
        """One human line."""
        where = [f"partition {self.partition}" if self.partition is not None else ""]
        where += [f"seq {self.seq}" if self.seq is not None else "", self.position or ""]
        return f"{self.kind.upper():<14} {', '.join(w for w in where if w)}: {self.detail}"


@dataclass(slots=True)
class PartitionReport:
    """What one partition's log holds."""

    partition: int
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    checkpoint_seq: int | None = None  # the latest valid checkpoint's seq
    checkpoint_at: int | None = None  # and its time (seconds since the epoch)
    after_checkpoint: int = 0  # links past it: a truncation of these is undetectable

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {
            "partition": self.partition,
            "records": self.records,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "checkpoint_seq": self.checkpoint_seq,
            "checkpoint_at": self.checkpoint_at,
            "after_checkpoint": self.after_checkpoint,
        }


@dataclass(slots=True)
class Report:
    """The verdict on a log."""

    issues: list[Issue] = field(default_factory=list)
    partitions: dict[int, PartitionReport] = field(default_factory=dict)
    records: int = 0
    ignored: int = 0  # records of other kinds in a file
    before_chain: int = 0  # unlinked records of a topic stored before its partition's first link
    checkpoints: int = 0  # valid checkpoints checked

    @property
    def ok(self) -> bool:
        """No issue at all."""
        return not self.issues

    def as_dict(self) -> dict[str, Any]:
        """For ``--json``."""
        return {
            "ok": self.ok,
            "records": self.records,
            "ignored": self.ignored,
            "before_chain": self.before_chain,
            "checkpoints": self.checkpoints,
            "issues": [i.as_dict() for i in self.issues],
            "partitions": [self.partitions[p].as_dict() for p in sorted(self.partitions)],
        }


@dataclass(slots=True)
class _Item:
    order: int
    position: str
    link: Link
    intact: bool
    body: bytes | None


def verify_log(
    entries: Iterable[Entry],
    checkpoints: Sequence[tuple[bytes, str]] = (),
    keys: KeyLookup | None = None,
    *,
    issuer: str | None = None,
    only_decisions: bool = False,
    complete: bool | Collection[int] = False,
    before_chain: bool = False,
) -> Report:
    """Verify ``entries`` (in storage order) and the signed ``checkpoints`` (token, position).

    ``only_decisions``: records of the other output kinds (``OTHER_KINDS``) are skipped, as in
    a ``tether replay`` output file; otherwise every record must be a link.

    ``complete``: the log (True), or these partitions of it, hold every record since the chain
    began (a topic partition nothing was ever deleted from: its low watermark is 0), so a first
    link after seq 0 means records were removed from the start. Otherwise a log may start
    anywhere (retention deletes the oldest records), and removing records from the start of a
    log is indistinguishable from retention.

    ``before_chain``: on a topic (entries with a ``partition``), unlinked records stored before
    the first link of their partition are counted (``Report.before_chain``), not reported: they
    were written before the chain was turned on (Kafka only appends; nothing can be inserted
    before a stored record)."""
    report = Report()
    items: dict[int, list[_Item]] = {}
    linked: set[int] = set()  # stored partitions whose first link has been read
    for order, entry in enumerate(entries):
        if before_chain and entry.partition is not None and entry.partition not in linked:
            try:
                unseal(entry.value)
            except NotChained:
                report.before_chain += 1
                continue
            linked.add(entry.partition)
        item = _read(entry, order, report, only_decisions=only_decisions)
        if item is not None:
            items.setdefault(item.link.partition, []).append(item)
    valid = _checkpoints(checkpoints, keys or StaticKeys(()), issuer, report)
    for partition in sorted(set(items) | {c.partition for c in valid}):
        part = PartitionReport(partition)
        report.partitions[partition] = part
        chain = _verify_partition(partition, items.get(partition, []), report, part)
        whole = complete if isinstance(complete, bool) else partition in complete
        if whole and part.first_seq is not None and part.first_seq > 0:
            first = chain[part.first_seq]
            report.issues.append(
                Issue(
                    "removed",
                    partition,
                    0,
                    None,
                    f"{part.first_seq} record(s) missing from the start: seq 0"
                    + (f"..{part.first_seq - 1}" if part.first_seq > 1 else "")
                    + f", before {first.position} (nothing was deleted by retention)",
                )
            )
        _check_against(partition, chain, [c for c in valid if c.partition == partition], report)
    report.issues.sort(key=lambda i: (i.partition if i.partition is not None else -1, i.seq or 0))
    return report


def _read(entry: Entry, order: int, report: Report, *, only_decisions: bool) -> _Item | None:
    if entry.stub is not None:
        report.records += 1
        return _Item(order, entry.position, entry.stub, True, None)
    try:
        sealed = unseal(entry.value)
    except NotChained as exc:
        record = exc.record
        if only_decisions and isinstance(record, dict) and record.get("kind") in OTHER_KINDS:
            report.ignored += 1
            return None
        report.records += 1
        report.issues.append(
            Issue("inserted", entry.partition, None, entry.position, f"a record with {exc}")
        )
        return None
    report.records += 1
    link = sealed.link
    if entry.partition is not None and entry.partition != link.partition:
        report.issues.append(
            Issue(
                "inserted",
                entry.partition,
                link.seq,
                entry.position,
                f"a link of partition {link.partition} (seq {link.seq}) stored on partition "
                f"{entry.partition}",
            )
        )
        return None
    return _Item(order, entry.position, link, sealed.intact, sealed.body)


def _moved(items: list[_Item]) -> set[int]:
    """Indexes (into ``items``, storage order) outside the longest non-decreasing run of
    seqs: the fewest records whose moving explains the order."""
    tails: list[int] = []  # tails[k]: smallest seq ending a run of length k+1
    tail_at: list[int] = []  # the index of that tail
    parent = [-1] * len(items)
    for i, it in enumerate(items):
        k = bisect.bisect_right(tails, it.link.seq)
        if k == len(tails):
            tails.append(it.link.seq)
            tail_at.append(i)
        else:
            tails[k] = it.link.seq
            tail_at[k] = i
        parent[i] = tail_at[k - 1] if k > 0 else -1
    keep: set[int] = set()
    i = tail_at[-1] if tail_at else -1
    while i >= 0:
        keep.add(i)
        i = parent[i]
    return set(range(len(items))) - keep


def _report_moved(partition: int, items: list[_Item], issues: list[Issue]) -> None:
    """A ``reordered`` issue per moved record, naming a neighbour it is out of order with
    (linear, whatever the log holds)."""
    moved = _moved(items)
    if moved:
        before: list[_Item | None] = []  # the highest seq stored before each record
        top: _Item | None = None
        for it in items:
            before.append(top)
            if top is None or it.link.seq > top.link.seq:
                top = it
        after: list[_Item | None] = [None] * len(items)  # the lowest seq stored after it
        low: _Item | None = None
        for i in range(len(items) - 1, -1, -1):
            after[i] = low
            if low is None or items[i].link.seq < low.link.seq:
                low = items[i]
    for i in sorted(moved):
        it = items[i]
        seq = it.link.seq
        o = before[i]
        if o is not None and o.link.seq > seq:
            detail = f"stored after seq {o.link.seq} ({o.position})"
        else:
            o = after[i]
            detail = f"stored before seq {o.link.seq} ({o.position})" if o is not None else ""
        issues.append(Issue("reordered", partition, seq, it.position, detail))


def _verify_partition(  # one walk, each case named where it is met
    partition: int, items: list[_Item], report: Report, part: PartitionReport
) -> dict[int, _Item]:
    """Check one partition's records; return its chain (seq -> the record on it)."""
    issues = report.issues
    part.records = len(items)
    _report_moved(partition, items, issues)
    by_seq: dict[int, list[_Item]] = {}
    for it in items:
        by_seq.setdefault(it.link.seq, []).append(it)
    chain: dict[int, _Item] = {}
    off: list[_Item] = []
    last: _Item | None = None
    for seq in sorted(by_seq):
        candidates = by_seq[seq]
        if last is not None and seq > last.link.seq + 1:
            gap = seq - last.link.seq - 1
            first, end = last.link.seq + 1, seq - 1
            issues.append(
                Issue(
                    "removed",
                    partition,
                    first,
                    None,
                    f"{gap} record(s) missing: seq {first}"
                    + (f"..{end}" if end > first else "")
                    + f", between {last.position} and {candidates[0].position}",
                )
            )
        expected = GENESIS if seq == 0 else (last.link.hash if last is not None else None)
        linking = [c for c in candidates if expected is None or c.link.prev == expected]
        followed = {c.link.prev for c in by_seq.get(seq + 1, ())}
        pool = linking or candidates
        main = next((c for c in pool if c.link.hash in followed), pool[0])
        if main.link.prev == UNKNOWN:
            issues.append(
                Issue(
                    "broken",
                    partition,
                    seq,
                    main.position,
                    "the writer could not read the chain's head and restarted it here",
                )
            )
        elif (
            expected is not None
            and main.link.prev != expected
            and not (last is not None and seq > last.link.seq + 1)
        ):
            if seq == 0:
                detail = "the first link does not start from the genesis hash"
                issues.append(Issue("changed", partition, seq, main.position, detail))
            else:
                assert last is not None  # noqa: S101  # expected came from it
                issues.append(
                    Issue(
                        "changed",
                        partition,
                        last.link.seq,
                        last.position,
                        f"replaced (its hash recomputed): seq {seq} ({main.position}) names "
                        f"predecessor {main.link.prev[:16]}…, this record is "
                        f"{last.link.hash[:16]}…",
                    )
                )
        if not main.intact:
            issues.append(
                Issue(
                    "changed",
                    partition,
                    seq,
                    main.position,
                    "its bytes do not hash to its own link (edited after it was written)",
                )
            )
        for other in candidates:
            if other is not main:
                off.append(other)
        chain[seq] = main
        last = main
    _report_off_chain(partition, off, chain, issues)
    if items:
        part.first_seq = min(by_seq)
        part.last_seq = max(by_seq)
    return chain


def _report_off_chain(
    partition: int, off: list[_Item], chain: dict[int, _Item], issues: list[Issue]
) -> None:
    """Second records at a seq: a lone one was inserted; linked ones form a fork."""
    if not off:
        return
    hashes = {it.link.hash for it in off}
    in_branch = {it.link.hash for it in off if it.link.prev in hashes}
    in_branch |= {it.link.prev for it in off if it.link.prev in hashes}
    for it in off:
        main = chain[it.link.seq]
        if it.link.hash in in_branch:
            if it.link.prev not in hashes:  # report a branch once, at its first record
                length = _branch_length(it, off)
                issues.append(
                    Issue(
                        "fork",
                        partition,
                        it.link.seq,
                        it.position,
                        f"a second branch of {length} linked record(s) from seq {it.link.seq} "
                        f"(beside {main.position}): two writers, or a rewritten branch",
                    )
                )
            continue
        what = (
            f"a copy of seq {it.link.seq} ({main.position})"
            if it.link.hash == main.link.hash and it.body == main.body
            else f"a second record at seq {it.link.seq} (beside {main.position}); nothing "
            "links to it"
        )
        issues.append(Issue("inserted", partition, it.link.seq, it.position, what))


def _branch_length(start: _Item, off: list[_Item]) -> int:
    nxt = {it.link.prev: it for it in off}
    n, cur = 1, start
    seen = {start.link.hash}
    while cur.link.hash in nxt and nxt[cur.link.hash].link.hash not in seen:
        cur = nxt[cur.link.hash]
        seen.add(cur.link.hash)
        n += 1
    return n


def _checkpoints(
    tokens: Sequence[tuple[bytes, str]],
    keys: KeyLookup,
    issuer: str | None,
    report: Report,
) -> list[Checkpoint]:
    valid: list[Checkpoint] = []
    for token, position in tokens:
        try:
            valid.append(verify_checkpoint(token, keys, issuer))
        except BadCheckpoint as exc:
            report.issues.append(Issue("bad_checkpoint", None, None, position, str(exc)))
    report.checkpoints = len(valid)
    return valid


def _check_against(
    partition: int, chain: dict[int, _Item], checkpoints: list[Checkpoint], report: Report
) -> None:
    part = report.partitions[partition]
    last_seq = part.last_seq
    first_seq = part.first_seq
    latest: Checkpoint | None = None
    for c in sorted(checkpoints, key=lambda c: (c.seq, c.issued_at)):
        if first_seq is not None and c.seq < first_seq:
            continue  # before the log's start: deleted by retention
        latest = c
        if last_seq is None or c.seq > last_seq:
            have = "holds no link" if last_seq is None else f"ends at seq {last_seq}"
            start = 0 if last_seq is None else last_seq + 1
            report.issues.append(
                Issue(
                    "truncated",
                    partition,
                    c.seq,
                    None,
                    f"the log {have} but a checkpoint signed at {c.issued_at} covers seq "
                    f"{c.seq}: seq {start}..{c.seq} were removed from the tail",
                )
            )
            continue
        item = chain.get(c.seq)
        if item is not None and item.link.hash != c.head:
            report.issues.append(
                Issue(
                    "rewritten",
                    partition,
                    c.seq,
                    item.position,
                    f"a checkpoint signed at {c.issued_at} has head {c.head[:16]}… here, the log "
                    f"{item.link.hash[:16]}…: the chain up to seq {c.seq} was rewritten",
                )
            )
    if latest is not None:
        part.checkpoint_seq = latest.seq
        part.checkpoint_at = latest.issued_at
        part.after_checkpoint = max(0, (last_seq or 0) - latest.seq)
    elif last_seq is not None:
        part.after_checkpoint = len(chain)


def recompute(link: Link, body: bytes) -> bool:
    """Whether ``body`` hashes to ``link`` (for a bundle's full records)."""
    return link_hash(link.partition, link.seq, link.prev, body) == link.hash
