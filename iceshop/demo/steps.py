"""The nine steps of the happy path, and how a step says it did not hold.

The numbering and titles are the seed architecture's data flow; the demo reports every
step under both ("step 7 (window activated)") so a failure names what broke in the words
of the design, not of the code.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

__all__ = ["STEPS", "StepFailed", "StepRecord", "StepStatus", "step_label"]

StepStatus = Literal["pending", "running", "ok", "failed"]

STEPS: Final[dict[int, str]] = {
    1: "buyers register",
    2: "sellers register + listings",
    3: "buyers send intents",
    4: "demand aggregated",
    5: "campaign evaluates",
    6: "window created",
    7: "window activated",
    8: "buyers join",
    9: "window expires",
}


def step_label(number: int) -> str:
    """``step 7 (window activated)``."""
    return f"step {number} ({STEPS[number]})"


class StepFailed(Exception):
    """A step's expectation did not hold; the message says what was seen instead."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StepRecord(msgspec.Struct, kw_only=True):
    """One step as the report shows it (mutable: the board updates it in place)."""

    number: int
    title: str
    status: StepStatus = "pending"
    summary: str = ""
    started: float | None = None
    finished: float | None = None

    @property
    def label(self) -> str:
        return step_label(self.number)

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started
