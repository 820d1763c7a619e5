"""The demo's board: everything the terminal shows, kept in one place.

The scenario writes to the board (a step starts, a window changes, the crowd's tally
moves) and never prints. Two readers render it: the live view redraws the whole board a
few times a second, and plain mode (stdout is not a terminal) prints the board's
``echo`` lines as they come. Both run on the event loop's thread, so the board needs no
locks.

Times shown as countdowns are on the node's clock (``now``), which the scenario sets: the
real clock for the demo, a virtual one in tests.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import msgspec

from iceshop.demo.steps import STEPS, StepRecord, step_label

__all__ = ["Board", "CrowdTally", "WindowRow"]

Echo = Callable[[str], None]


class WindowRow(msgspec.Struct, kw_only=True):
    """A window as last seen in its events or replies."""

    view: dict[str, Any]
    seq: int = 0
    role: str = ""
    reasons: list[dict[str, Any]] = msgspec.field(default_factory=list)


class CrowdTally(msgspec.Struct, kw_only=True):
    """The flash crowd's progress and verdict."""

    window_id: str
    attempts: int
    buyers: int
    done: int = 0
    reserved: int = 0
    codes: Counter[str] = msgspec.field(default_factory=Counter)
    oversell: int | None = None
    seconds: float | None = None


class Board:
    def __init__(self, echo: Echo | None = None, *, title: str = "ICESHOP demo") -> None:
        self.title = title
        self.subtitle = ""
        self.echo = echo
        self.began = time.monotonic()
        self.now: Callable[[], float] = time.time
        self.steps = [StepRecord(number=n, title=t) for n, t in STEPS.items()]
        self.windows: dict[str, WindowRow] = {}
        self.decisions: list[str] = []
        self.crowd: CrowdTally | None = None
        self.log: deque[str] = deque(maxlen=8)
        self.verdict: str | None = None

    # -- steps -----------------------------------------------------------------------

    def step(self, number: int) -> StepRecord:
        return self.steps[number - 1]

    def start(self, number: int) -> None:
        s = self.step(number)
        s.status, s.started = "running", self.elapsed()
        self._say(f"{step_label(number)} ...")

    def ok(self, number: int, summary: str) -> None:
        s = self.step(number)
        s.status, s.summary, s.finished = "ok", summary, self.elapsed()
        self._say(f"{step_label(number)} ok: {summary}")

    def fail(self, number: int, message: str) -> None:
        s = self.step(number)
        s.status, s.summary, s.finished = "failed", message, self.elapsed()
        self._say(f"{step_label(number)} FAILED: {message}")

    def note(self, text: str) -> None:
        """A detail line under the running step."""
        self._say(f"  {text}")

    def info(self, text: str) -> None:
        """A line outside any step (setup, verdict)."""
        self._say(text)

    # -- windows and decisions ----------------------------------------------------------

    def window(self, view: dict[str, Any], seq: int = 0) -> None:
        """Record a window view; an older event (lower ``seq``) never overwrites a newer."""
        wid = view["window_id"]
        row = self.windows.get(wid)
        if row is None:
            self.windows[wid] = WindowRow(view=view, seq=seq)
            return
        if seq and seq < row.seq:
            return
        before = row.view["state"]
        row.view = view
        row.seq = max(row.seq, seq)
        if view["state"] != before:
            self._say(f"  window {wid} is {_state_text(view)}")

    def label_window(self, window_id: str, role: str, reasons: list[dict[str, Any]]) -> None:
        row = self.windows.get(window_id)
        if row is not None:
            row.role, row.reasons = role, reasons

    def decision(self, line: str) -> None:
        self.decisions.append(line)

    # -- output ------------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.began

    def _say(self, line: str) -> None:
        stamped = f"[{self.elapsed():5.1f}s] {line}"
        self.log.append(stamped)
        if self.echo is not None:
            self.echo(stamped)


def _state_text(view: dict[str, Any]) -> str:
    state = view["state"]
    fill = f"{view['quantity_reserved']}/{view['quantity_total']} reserved"
    if state in ("closed", "cancelled"):
        return f"{state} ({view['close_reason']}, {view['outcome']}), {fill}"
    return f"{state}, {fill}"
