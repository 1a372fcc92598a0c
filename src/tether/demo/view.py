"""The demo's live screen: a calm rich view, redrawn a few times a second, sized to the terminal."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Collection

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tether.demo.board import (
    DEAD,
    MAX_FEED,
    MAX_REVOKED,
    TARGET_WIDTH,
    Board,
    Row,
    clock_label,
    shorten,
    target_label,
)

FPS = 6
_SEVERITY_STYLE = {
    "critical": "bold white on red",
    "high": "bold red",
    "medium": "yellow",
    "low": "cyan",
    "info": "dim",
    DEAD: "magenta",
}
_SEVERITY_LABEL = {"critical": "CRIT", "high": "HIGH", "medium": "MED", "low": "LOW"}
_FIXED_LINES = 10  # borders of header, feed, revocations (+ table header), codes; a spare line
_CODE_ROWS = 5
_CELL = 30  # narrowest "code  count" cell of the counter grid
_HEAD = 16 + 27 + 20 + 14 + 2  # time, severity, code, workflow, workload and a gap
_WIDE_SUMMARY = 50  # inline summaries need at least this many columns
_RATE_WINDOW_S = 2.0
_WITH_WORKFLOW = TARGET_WIDTH + 25 + 8 + 18 + 11 + 4 * 2  # the revocations table, all columns


class Frames:
    """Redraws the live view at most ``FPS`` times a second (the driver calls it freely)."""

    def __init__(
        self,
        board: Board,
        live: Live,
        console: Console,
        running: Collection[str],
        sessions: Collection[str],
    ) -> None:
        self.board, self.live, self.console = board, live, console
        self.running, self.sessions = running, sessions
        self.began = time.perf_counter()
        self.next = 0.0
        self.window: deque[tuple[float, int]] = deque()

    def __call__(self, *, force: bool = False) -> None:
        """Redraw if a frame is due (or ``force``)."""
        now = time.perf_counter()
        if now < self.next and not force:
            return
        self.next = now + 1 / FPS
        b = self.board
        b.elapsed = now - self.began
        b.active = len(self.sessions)
        b.running = len(self.running)
        self.window.append((now, b.events))
        while len(self.window) > 2 and now - self.window[0][0] > _RATE_WINDOW_S:
            self.window.popleft()
        t0, n0 = self.window[0]
        b.rate = (b.events - n0) / (now - t0) if now > t0 else 0.0
        size = self.console.size
        self.live.update(render(b, size.width, size.height), refresh=True)


def render(board: Board, width: int, height: int) -> RenderableType:
    """The whole frame, sized to the terminal so that it never scrolls or jumps."""
    inner = width - 4
    header = _header_lines(board, inner)
    cols = max(1, inner // _CELL)
    available = height - _FIXED_LINES - len(header)
    needed = math.ceil(max(len(board.findings), 1) / cols)
    code_rows = max(1, min(_CODE_ROWS, needed, available // 4))
    room = max(available - code_rows, 6)
    side_rows = min(MAX_REVOKED, max(2, room * 2 // 5))
    feed_lines = min(2 * MAX_FEED, room - side_rows)
    return Group(
        Panel(
            Group(*header),
            title=Text(board.title, "bold"),
            title_align="left",
            border_style="blue",
            box=box.ROUNDED,
        ),
        _feed(board, inner, feed_lines),
        _revocations(board, inner, side_rows),
        _codes(board, inner, cols, code_rows),
    )


def _header_lines(b: Board, inner: int) -> list[Text]:
    """The counters, two lines on a 100-column terminal, packed into more on a narrower one."""
    done = b.events + b.deadletters
    speed = f" (x{b.speedup:,.0f})" if b.speedup and b.speedup >= 1.5 else ""
    fields = [
        [
            ("fleet clock ", "dim"),
            (f"{b.clock:%H:%M:%S}" if b.clock else "--:--:--", "bold"),
            (speed, "dim"),
        ],
        [("elapsed ", "dim"), (f"{b.elapsed:.0f} s", "")],
        [("delivered ", "dim"), (f"{100 * done / b.total:.0f}%" if b.total else "100%", "")],
        [
            ("events ", "dim"),
            (f"{b.events:,}", "bold"),
            (" at ", "dim"),
            (f"{b.rate:,.0f}/s", "bold"),
        ],
        None,
        [
            ("active workflows ", "dim"),
            (f"{b.running:,}", "bold"),
            (f" ({b.active:,} sessions)", "dim"),
        ],
        [
            ("findings ", "dim"),
            (f"{sum(b.findings.values()):,}", "bold red" if b.findings else "bold"),
        ],
        [("revocations ", "dim"), (f"{b.revocations:,}", "bold")],
        [("dead letters ", "dim"), (f"{b.deadletters:,}", "magenta")],
    ]
    lines = [Text()]
    for parts in fields:
        if parts is None:  # the preferred line break
            lines.append(Text())
            continue
        piece = Text.assemble(*parts)
        line = lines[-1]
        if line.cell_len and line.cell_len + 3 + piece.cell_len > inner:
            lines.append(line := Text())
        if line.cell_len:
            line.append("   ")
        line.append_text(piece)
    return [line for line in lines if line.cell_len]


def _row_head(row: Row) -> Text:
    dead = row.severity == DEAD
    label = "DEAD" if dead else _SEVERITY_LABEL.get(row.severity, "INFO")
    return Text.assemble(
        (f"{row.at:%H:%M:%S}  ", "dim"),
        (f"{label:<4}", _SEVERITY_STYLE.get(row.severity, "")),
        "  ",
        (f"{shorten(row.code, 26):<26} ", "magenta" if dead else "bold"),
        f"{shorten(row.workflow, 19):<19} ",
        (shorten(row.workload, 14), "cyan"),
    )


def _feed(b: Board, inner: int, lines: int) -> Panel:
    """Findings newest last; the summary inline on a wide screen, beneath the row otherwise."""
    wide = inner - _HEAD >= _WIDE_SUMMARY
    per_row = 1 if wide else 2
    out: list[Text] = []
    for row in list(b.feed)[-(lines // per_row) :]:
        head = _row_head(row)
        style = "magenta" if row.severity == DEAD else "default"
        if wide:
            head.pad_right(_HEAD - head.cell_len)
            head.append(shorten_end(row.summary, inner - _HEAD), style)
            out.append(head)
        else:
            out.append(head)
            out.append(Text(" " * 16 + shorten_end(row.summary, inner - 16), style))
    if not out:
        out.append(Text("watching the fleet… no findings yet", "dim"))
    out.extend(Text("") for _ in range(lines - len(out)))
    return Panel(
        Group(*out),
        title="latest findings and dead letters",
        title_align="left",
        border_style="red" if b.findings else "blue",
    )


def shorten_end(text: str, width: int) -> str:
    """Cut ``text`` to ``width`` characters with an ellipsis at the end."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _revocations(b: Board, inner: int, rows: int) -> Panel:
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="dim")
    table.add_column("target", width=TARGET_WIDTH, no_wrap=True)
    table.add_column("reason", width=25, no_wrap=True)
    table.add_column("severity", width=8, no_wrap=True)
    with_workflow = inner >= _WITH_WORKFLOW
    if with_workflow:
        table.add_column("workflow", width=18, no_wrap=True)
    table.add_column("not after", width=11, no_wrap=True)
    shown = list(b.revoked)[-rows:]
    for r in shown:
        cells: list[str | Text] = [
            Text(target_label(r.target), "bold"),
            r.reason,
            Text(r.severity, _SEVERITY_STYLE.get(r.severity, "")),
            Text(shorten(r.workflow_id, 18), "dim"),
            clock_label(r.not_after, b.clock),
        ]
        if not with_workflow:
            del cells[3]
        table.add_row(*cells)
    for _ in range(rows - len(shown)):
        table.add_row()
    note = f"+ {b.completions:,} task_completed: credentials retired as their workflow ended"
    return Panel(
        table,
        title="latest revocations",
        title_align="left",
        border_style="blue",
        subtitle=Text(shorten_end(note, inner - 6), "dim"),
        subtitle_align="right",
    )


def _codes(b: Board, inner: int, cols: int, rows: int) -> Panel:
    ranked = sorted(b.findings.items(), key=lambda kv: (-kv[1], kv[0]))
    cells = cols * rows
    if len(ranked) > cells:
        rest = sum(n for _, n in ranked[cells - 1 :])
        ranked = [*ranked[: cells - 1], (f"+{len(ranked) - cells + 1} more", rest)]
    grid = Table.grid(padding=(0, 2))
    cell_width = (inner - 2 * (cols - 1)) // cols
    name = cell_width - 5
    for _ in range(cols):
        grid.add_column(width=cell_width, no_wrap=True)
    for i in range(rows):
        cells_row: list[Text] = []
        for j in range(cols):
            k = j * rows + i
            if k < len(ranked):
                code, n = ranked[k]
                style = _SEVERITY_STYLE.get(b.severity.get(code, ""), "dim")
                cell = Text(f"{shorten_end(code, name):<{name}}", style)
                cell.append(f"{n:>5,}", "bold")
            else:
                cell = Text("")
            cells_row.append(cell)
        grid.add_row(*cells_row)
    return Panel(grid, title="findings by code", title_align="left", border_style="blue")
