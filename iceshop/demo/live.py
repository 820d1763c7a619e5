"""The live terminal view: the board drawn with ``rich``, redrawn a few times a second.

Drawing happens on the event loop (``auto_refresh`` off, a task calls :func:`refresh`),
never in rich's own refresh thread, so the board is only ever read by the thread that
writes it. What it shows: the nine steps and their status, each window with a countdown
to its activation or expiry and a fill bar (``quantity_reserved`` of ``quantity_total``),
the campaign's reasons for each proposed window (and for the products it left alone),
the flash crowd's tally, and the last log lines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from iceshop.demo.board import Board, CrowdTally
from iceshop.demo.context import money
from iceshop.wire import parse_time

__all__ = ["live_view", "render"]

_STATUS: Final = {
    "pending": Text("·  pending", style="dim"),
    "running": Text("▶  running", style="bold yellow"),
    "ok": Text("✔  ok", style="bold green"),
    "failed": Text("✘  FAILED", style="bold red"),
}
_FPS: Final = 8
_LOG_LINES: Final = 5


def render(board: Board) -> RenderableType:
    header = Text.assemble(
        (board.title, "bold cyan"),
        ("  " + board.subtitle, "dim"),
        (f"  {board.elapsed():5.1f} s", "bold"),
    )
    parts: list[RenderableType] = [header, _steps(board)]
    if board.windows:
        parts.append(_windows(board))
    if board.crowd is not None:
        parts.append(_crowd(board.crowd))
    reasons = _reasons(board)
    if reasons is not None:
        parts.append(reasons)
    log = list(board.log)[-_LOG_LINES:]
    parts.append(Panel(Text("\n".join(log), overflow="ellipsis", no_wrap=True), title="log"))
    return Group(*parts)


def _steps(board: Board) -> Panel:
    table = Table.grid(padding=(0, 1), expand=True)
    table.add_column(min_width=10, no_wrap=True)
    table.add_column(min_width=30, no_wrap=True)
    table.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    for s in board.steps:
        title = Text(f"{s.number}  {s.title}", style="bold" if s.status == "running" else "")
        summary = Text(s.summary, style="red" if s.status == "failed" else "")
        table.add_row(_STATUS[s.status], title, summary)
    return Panel(table, title="the nine steps of the happy path", border_style="cyan")


def _countdown(view: dict[str, Any], now: float) -> Text:
    state = view["state"]
    if state == "scheduled":
        left = parse_time(view["activates_at"]) - now
        return Text(f"activates in {max(0.0, left):4.1f} s", style="yellow")
    if state == "active":
        left = parse_time(view["expires_at"]) - now
        return Text(f"expires in {max(0.0, left):4.1f} s", style="green")
    style = "green" if view["outcome"] == "succeeded" else "red"
    return Text(f"{view['close_reason']}: {view['outcome']}", style=style)


def _windows(board: Board) -> Panel:
    now = board.now()
    table = Table(expand=True, box=None, pad_edge=False)
    table.add_column("window", no_wrap=True, overflow="ellipsis")
    table.add_column("seller", no_wrap=True, overflow="ellipsis")
    table.add_column("price", justify="right", no_wrap=True)
    table.add_column("countdown / outcome", no_wrap=True)
    table.add_column("fill", width=22, no_wrap=True)
    table.add_column("units", justify="right", no_wrap=True)
    table.add_column("buyers/tip", justify="right", no_wrap=True)
    for wid, row in sorted(board.windows.items()):
        v = row.view
        table.add_row(
            wid,
            v["seller_id"],
            money(v["unit_price_minor"], v["currency"]),
            _countdown(v, now),
            ProgressBar(total=max(1, v["quantity_total"]), completed=v["quantity_reserved"]),
            f"{v['quantity_reserved']}/{v['quantity_total']}",
            f"{v['participants']}/{v['min_participants']}",
        )
    return Panel(table, title="windows", border_style="cyan")


def _crowd(tally: CrowdTally) -> Panel:
    codes = "  ".join(f"{c} {n}" for c, n in tally.codes.most_common())
    line = Table.grid(padding=(0, 2))
    line.add_row(
        ProgressBar(total=max(1, tally.attempts), completed=tally.done, width=30),
        Text(f"{tally.done}/{tally.attempts} attempts by {tally.buyers} buyers"),
        Text(f"{tally.reserved} units reserved", style="bold"),
        Text(codes, style="dim"),
        Text(
            "oversell: …" if tally.oversell is None else f"oversell: {tally.oversell}",
            style="bold green" if tally.oversell == 0 else "bold red",
        ),
    )
    return Panel(line, title=f"flash crowd on {tally.window_id}", border_style="magenta")


def _reasons(board: Board) -> Panel | None:
    """The crowd's window with its reasons in words; the others in one line each."""
    table = Table.grid(padding=(0, 1), expand=True)
    table.add_column(min_width=26, no_wrap=True)
    table.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    crowd = board.crowd.window_id if board.crowd is not None else None
    for wid, row in sorted(board.windows.items(), key=lambda item: item[0] != crowd):
        if not row.reasons:
            continue
        if wid == crowd or crowd is None:
            table.add_row(Text(wid, style="bold"), Text(row.role, style="dim"))
            for r in row.reasons:
                table.add_row(
                    Text(f"  {r['code']} {_num(r['value'])}/{_num(r['threshold'])}", "cyan"),
                    r["text"],
                )
        else:
            codes = "  ".join(
                f"{r['code']} {_num(r['value'])}/{_num(r['threshold'])}" for r in row.reasons
            )
            table.add_row(Text(wid, style="bold"), Text(f"{codes}  ({row.role})", style="dim"))
    for line in board.decisions:
        table.add_row(Text("no window", style="yellow"), line)
    if not table.rows:
        return None
    return Panel(table, title="the campaign's reasons", border_style="cyan")


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.2f}"
    return str(int(value)) if isinstance(value, float) else str(value)


@asynccontextmanager
async def live_view(board: Board, console: Console | None = None) -> AsyncIterator[Live]:
    """``async with live_view(board):`` draws the board until left (and once more then)."""
    live = Live(
        render(board),
        console=console or Console(),
        auto_refresh=False,
        transient=False,
        redirect_stdout=False,
        redirect_stderr=False,
    )

    async def redraw() -> None:
        while True:
            live.update(render(board), refresh=True)
            await anyio.sleep(1 / _FPS)

    with live:
        async with anyio.create_task_group() as tg:
            tg.start_soon(redraw)
            try:
                yield live
            finally:
                tg.cancel_scope.cancel()
        live.update(render(board), refresh=True)
