"""Hash links between the records of one decisions-topic partition.

Why here and not in the ``Decision`` model: a link is a property of where a record was written
(its partition, its place in it), not of the verdict. It is added at serialization, as the
record's last member ``"chain": {"v", "partition", "seq", "prev", "hash"}``, and the hash
covers the record's exact serialized bytes without it (``body``): any field a later version
adds to a decision is covered with no change here, and a reader that ignores unknown members
(every tether model does) reads a chained decision as before.

The hash of link ``seq`` on ``partition``::

    sha256(b"tether.chain.v1\\0" + b"<partition>\\0<seq>\\0<prev>\\0" + body)

``prev`` is the previous link's hash (hex), or ``GENESIS`` for ``seq`` 0. The topic name is not
hashed, so a log copied to another topic (an export, a mirror) verifies the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

import orjson

VERSION: Final = 1
GENESIS: Final = "0" * 64
"""The ``prev`` of a partition's first link."""
UNKNOWN: Final = "unknown"
"""The ``prev`` of a link written when the head could not be read (the worker says so in its
log; verify reports the break instead of a false continuation)."""
_PREFIX: Final = b"tether.chain.v1\x00"
_MARK: Final = b',"chain":'


@dataclass(frozen=True, slots=True)
class Link:
    """One record's place in its partition's chain."""

    partition: int
    seq: int
    prev: str
    hash: str

    def as_dict(self) -> dict[str, object]:
        """The ``chain`` member, in its canonical member order."""
        return {
            "v": VERSION,
            "partition": self.partition,
            "seq": self.seq,
            "prev": self.prev,
            "hash": self.hash,
        }


def link_hash(partition: int, seq: int, prev: str, body: bytes) -> str:
    """The hash of a link (see the module docstring)."""
    h = hashlib.sha256(_PREFIX)
    h.update(f"{partition}\x00{seq}\x00{prev}\x00".encode())
    h.update(body)
    return h.hexdigest()


def seal(body: bytes, partition: int, seq: int, prev: str) -> tuple[bytes, Link]:
    """``body`` (a serialized JSON object) with its link appended as its last member."""
    if not body.endswith(b"}") or len(body) < 2:  # noqa: PLR2004  # "{}" at least
        raise ValueError("a chained record must be a serialized JSON object")
    link = Link(partition, seq, prev, link_hash(partition, seq, prev, body))
    sep = b"" if body == b"{}" else b","
    member = orjson.dumps(link.as_dict())
    return body[:-1] + sep + b'"chain":' + member + b"}", link


@dataclass(frozen=True, slots=True)
class Unsealed:
    """A chained record read back: its link and the bytes the link hashed.

    ``body`` is None when the record carries a link but its bytes are not as ``seal`` wrote
    them (re-serialized, reordered members): what was hashed cannot be recovered, so the
    record counts as changed."""

    link: Link
    body: bytes | None
    record: dict[str, object]

    @property
    def intact(self) -> bool:
        """Whether the record's bytes hash to the link it carries."""
        link = self.link
        return self.body is not None and (
            link_hash(link.partition, link.seq, link.prev, self.body) == link.hash
        )


class NotChained(ValueError):
    """A record with no (readable) link; ``record`` is its JSON object, if it parsed."""

    def __init__(self, detail: str, record: object = None) -> None:
        super().__init__(detail)
        self.record = record


def unseal(value: bytes) -> Unsealed:
    """The link and hashed bytes of a chained record.

    Raises:
        NotChained: the record is not JSON, not an object, or has no well-formed ``chain``.
    """
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise NotChained(f"not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise NotChained("not a JSON object", record)
    chain = record.get("chain")
    if not isinstance(chain, dict):
        raise NotChained("no chain link", record)
    link = _link(chain)
    if link is None:
        raise NotChained(f"malformed chain link {chain!r:.200}", record)
    suffix = _MARK + orjson.dumps(chain) + b"}"
    body: bytes | None = None
    if value.endswith(suffix) and list(chain) == list(link.as_dict()):
        body = value[: -len(suffix)] + b"}"
    elif value.endswith(suffix[1:]) and value.startswith(b'{"chain":'):
        body = b"{}"
    return Unsealed(link, body, record)


def _link(chain: dict[str, object]) -> Link | None:
    partition, seq, prev, digest = (chain.get(k) for k in ("partition", "seq", "prev", "hash"))
    if chain.get("v") != VERSION:
        return None
    if not (isinstance(partition, int) and not isinstance(partition, bool) and partition >= 0):
        return None
    if not (isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0):
        return None
    if not (isinstance(prev, str) and isinstance(digest, str) and len(digest) == 64):  # noqa: PLR2004
        return None
    return Link(partition, seq, prev, digest)


class ChainHeads:
    """The head of each partition's chain, as the one writer of those partitions holds it.

    ``seal`` links a record after the head and moves the head on. The writer sets a partition's
    head from the log itself (its last link) before writing to it (``set_head``), so a restart
    or a rebalance continues the chain; at-least-once duplicates after a crash are new links."""

    def __init__(self) -> None:
        self._heads: dict[int, Link | None] = {}
        self.sealed = 0

    def known(self, partition: int) -> bool:
        """Whether the head of ``partition`` has been set (from the log, or by writing)."""
        return partition in self._heads

    def set_head(self, partition: int, head: Link | None) -> None:
        """``partition``'s last link (None: the partition holds none; the next is seq 0)."""
        self._heads[partition] = head

    def head(self, partition: int) -> Link | None:
        """The last link written to ``partition`` (None: none yet, or unknown)."""
        return self._heads.get(partition)

    def forget(self, partition: int) -> None:
        """No longer the writer of ``partition``: its head must be read again to write."""
        self._heads.pop(partition, None)

    def partitions(self) -> list[int]:
        """The partitions whose head is known."""
        return sorted(self._heads)

    def seal(self, partition: int, body: bytes) -> tuple[bytes, Link]:
        """``body`` linked after ``partition``'s head (an unknown head restarts at seq 0 with
        ``prev`` ``UNKNOWN``: verify reports the break)."""
        if partition in self._heads:
            head = self._heads[partition]
            seq, prev = (0, GENESIS) if head is None else (head.seq + 1, head.hash)
        else:
            seq, prev = 0, UNKNOWN
        value, link = seal(body, partition, seq, prev)
        self._heads[partition] = link
        self.sealed += 1
        return value, link
