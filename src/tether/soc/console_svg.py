"""A workflow's delegation chain drawn as inline SVG: columns by hops from the initiator.

Server-side and dependency-free (no build step, no CDN). Every label is escaped: workload ids
and delegation ids come from the agents being watched.
"""

from __future__ import annotations

from collections import deque
from html import escape
from typing import Final

MAX_NODES: Final = 60
_W: Final = 230
_H: Final = 56
_GAP_X: Final = 60
_GAP_Y: Final = 18


def _short(workload: str) -> str:
    return workload.rsplit("/", 1)[-1][:28] or workload[:28]


def chain_svg(  # noqa: PLR0912  # layout, edges and nodes read best in one place
    initiator: str | None, delegations: list[dict[str, str]], flagged: set[str]
) -> str:
    """The delegation graph; nodes in ``flagged`` (workloads with findings) drawn in red."""
    nodes: list[str] = []
    if initiator:
        nodes.append(initiator)
    for d in delegations:
        for n in (d["from"], d["to"]):
            if n not in nodes and len(nodes) < MAX_NODES:
                nodes.append(n)
    if not nodes:
        return '<svg class="chain" width="300" height="40"><text x="4" y="24">no delegations</text></svg>'
    depth: dict[str, int] = {}
    if initiator:
        depth[initiator] = 0
        queue = deque([initiator])
        while queue:
            n = queue.popleft()
            for d in delegations:
                if d["from"] == n and d["to"] in nodes and d["to"] not in depth:
                    depth[d["to"]] = depth[n] + 1
                    queue.append(d["to"])
    top = max(depth.values(), default=-1) + 1
    for n in nodes:
        depth.setdefault(n, top)  # not reachable from the initiator: a column of its own
    columns: dict[int, list[str]] = {}
    for n in nodes:
        columns.setdefault(depth[n], []).append(n)
    pos: dict[str, tuple[int, int]] = {}
    for col, members in columns.items():
        for row, n in enumerate(members):
            pos[n] = (10 + col * (_W + _GAP_X), 10 + row * (_H + _GAP_Y))
    width = 20 + (max(columns) + 1) * (_W + _GAP_X)
    height = 20 + max(len(m) for m in columns.values()) * (_H + _GAP_Y)
    parts = [
        f'<svg class="chain" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="delegation chain">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
    ]
    for d in delegations:
        if d["from"] in pos and d["to"] in pos:
            (x1, y1), (x2, y2) = pos[d["from"]], pos[d["to"]]
            sx, sy, ex, ey = x1 + _W, y1 + _H // 2, x2, y2 + _H // 2
            if x2 <= x1:  # an edge back (a loop): leave from the bottom
                sx, sy = x1 + _W // 2, y1 + _H
            parts.append(
                f'<line class="edge" x1="{sx}" y1="{sy}" x2="{ex}" y2="{ey}" stroke="#555" '
                f'marker-end="url(#arrow)"><title>{escape(d["id"])}</title></line>'
            )
    for n, (x, y) in pos.items():
        cls = "node flagged" if n in flagged else "node"
        fill = "#fde2e1" if n in flagged else ("#e3f0ff" if n == initiator else "#f4f4f4")
        stroke = "#c0392b" if n in flagged else "#345"
        parts.append(
            f'<g class="{cls}" data-workload="{escape(n)}"><rect x="{x}" y="{y}" width="{_W}" '
            f'height="{_H}" rx="8" fill="{fill}" stroke="{stroke}"/>'
            f'<text x="{x + 10}" y="{y + 22}" font-weight="bold">{escape(_short(n))}</text>'
            f'<text x="{x + 10}" y="{y + 42}" font-size="11" fill="#555">'
            f"{'initiator' if n == initiator else ''}</text><title>{escape(n)}</title></g>"
        )
    parts.append("</svg>")
    return "".join(parts)
