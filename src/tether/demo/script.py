"""Building blocks of one scheduling slot's telemetry: roster, actors, tokens, timed events."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from tether.demo.catalog import ISSUER, ROLES, Tool
from tether.demo.encoding import IdMint, stamp_s

Event = dict[str, Any]
Timed = tuple[int, Event, str | None]

#: (offset minutes, suffix) an emitter writes its timestamps in; most write UTC as "Z".
_OFFSETS = ((0, "Z"),) * 6 + ((0, "+00:00"), (60, "+01:00"), (-300, "-05:00"), (330, "+05:30"))


@dataclass(frozen=True, slots=True)
class Instance:
    """One running replica of a role: its `agent` object and the offset its clock writes."""

    agent: Event
    offset: int
    suffix: str


class Roster:
    """Every role's instances, fixed per seed."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"tether-fleet:{seed}:roster")
        self.instances: dict[str, tuple[Instance, ...]] = {}
        for role in ROLES.values():
            pod = f"{rng.getrandbits(20):05x}"
            members = []
            for k in range(role.instances):
                agent: Event = {"workload_id": role.workload_id}
                if role.reports_instance:
                    agent["instance_id"] = f"{role.name}-{pod}-{k}"
                offset, suffix = rng.choice(_OFFSETS)
                members.append(Instance(agent, offset, suffix))
            self.instances[role.name] = tuple(members)


@dataclass(slots=True, eq=False)
class Token:
    """A short-lived STS token and the credential object events carry for it."""

    cred: Event
    issued_ms: int
    expires_ms: int
    scopes: list[str]

    def set_expiry(self, ms: int) -> None:
        """Change when the token expires (attacks shorten it retroactively)."""
        self.expires_ms = ms
        self.cred["expires_at"] = stamp_s(ms)

    def set_issued(self, ms: int) -> None:
        """Change when the token was issued (whole seconds)."""
        self.issued_ms = ms - ms % 1000
        self.cred["issued_at"] = stamp_s(self.issued_ms)


@dataclass(slots=True, eq=False)
class Actor:
    """A workload instance taking part in a workflow, with the token it currently holds."""

    role: str
    instance: Instance
    tools: tuple[Tool, ...]
    token: Token | None = None

    @property
    def workload_id(self) -> str:
        """The workload's SPIFFE id."""
        wid: str = self.instance.agent["workload_id"]
        return wid


@dataclass(slots=True, eq=False)
class Script:
    """The events of one scheduling slot (usually one workflow), in event-time order when done."""

    roster: Roster
    rng: random.Random
    ids: IdMint
    extra_fields: bool = True
    _events: list[Event] = field(default_factory=list)
    _times: dict[int, int] = field(default_factory=dict)
    _labels: dict[int, str] = field(default_factory=dict)

    def add(self, t: int, event: Event) -> Event:
        """Record `event` as occurring at epoch-ms `t`."""
        self._events.append(event)
        self._times[id(event)] = t
        return event

    def retime(self, event: Event, t: int) -> None:
        """Move an already recorded event to time `t` (its `occurred_at` is the caller's job)."""
        self._times[id(event)] = t

    def label(self, event: Event, kind: str) -> None:
        """Mark `event` as part of the attack `kind`."""
        self._labels[id(event)] = kind

    def actor(self, role: str, tools: tuple[Tool, ...]) -> Actor:
        """A random instance of `role`, able to call `tools` (repeated by weight)."""
        weighted = tuple(t for t in tools for _ in range(t.weight))
        return Actor(role, self.rng.choice(self.roster.instances[role]), weighted)

    def token(self, subject: str, scopes: list[str], issued_ms: int, lifetime_s: int) -> Token:
        """Mint a token for `subject`, issued on a whole second."""
        issued = issued_ms - issued_ms % 1000
        expires = issued + lifetime_s * 1000
        cred: Event = {
            "token_id": self.ids.token_id(),
            "issuer": ISSUER,
            "subject": subject,
            "scopes": list(scopes),
            "issued_at": stamp_s(issued),
            "expires_at": stamp_s(expires),
        }
        return Token(cred, issued, expires, list(scopes))

    def twin(self, token: Token, scopes: list[str], issued_ms: int | None = None) -> Token:
        """A new token like `token` (same subject and expiry) with `scopes`."""
        issued = token.issued_ms if issued_ms is None else issued_ms
        twin = self.token(token.cred["subject"], scopes, issued, 0)
        twin.set_expiry(token.expires_ms)
        return twin

    def finish(self) -> list[Timed]:
        """The recorded events sorted by event time (stable), each with its attack label."""
        times, labels = self._times, self._labels
        order = sorted(range(len(self._events)), key=lambda i: times[id(self._events[i])])
        out: list[Timed] = []
        for i in order:
            ev = self._events[i]
            out.append((times[id(ev)], ev, labels.get(id(ev))))
        return out
