"""The scenario: the nine steps in order, each checked, the first failure ends the run.

``run_scenario`` needs only a contract client and a clock, so the same code drives the
embedded demo (real nats-server, a node on the real clock) and the tests (a node on a
virtual clock whose timers the test fires). Each step is bounded twice: its waits have
deadlines on the node's clock, and the step as a whole has a wall-clock limit, so a
stuck node fails the step instead of hanging the demo.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
import msgspec
import structlog

from iceshop.demo.board import Board
from iceshop.demo.client import DemoClient, UnexpectedReply
from iceshop.demo.context import Context
from iceshop.demo.data import Catalog, build_catalog
from iceshop.demo.events import EventLog
from iceshop.demo.joins import buyers_join
from iceshop.demo.lifecycle import activated, expired
from iceshop.demo.parties import buyers_register, intents, sellers_register
from iceshop.demo.proposal import decisions, demand, windows_created
from iceshop.demo.steps import StepFailed, StepRecord, step_label
from iceshop.demo.timing import DemoClock, Expectations, Timings

__all__ = ["DEFAULT_CROWD", "ScenarioResult", "run_scenario"]

log = structlog.get_logger("iceshop.demo")

DEFAULT_CROWD: Final = 300

Step = Callable[[Context], Awaitable[str]]

_STEPS: Final[dict[int, Step]] = {
    1: buyers_register,
    2: sellers_register,
    3: intents,
    4: demand,
    5: decisions,
    6: windows_created,
    7: activated,
    8: buyers_join,
    9: expired,
}


def _wall_limit(number: int, t: Timings) -> float:
    """The most a step may take on the wall clock (a backstop; waits have deadlines)."""
    base = 30.0
    if number == 5:
        return base + 3 * t.campaign_interval_s
    if number == 7:
        return base + t.window_lead_s
    if number == 9:
        return base + t.window_duration_s
    return base


class ScenarioResult(msgspec.Struct, kw_only=True):
    steps: list[StepRecord]
    facts: dict[str, Any]
    seconds: float
    #: What stopped the run outside any step (the shop itself failed), if anything.
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(s.status == "ok" for s in self.steps)

    @property
    def failed(self) -> StepRecord | None:
        return next((s for s in self.steps if s.status == "failed"), None)

    def verdict(self) -> str:
        """One line: what held, or which step did not and why."""
        failed = self.failed
        if failed is not None:
            return f"{failed.label}: {failed.summary}"
        pending = next((s for s in self.steps if s.status != "ok"), None)
        if pending is not None:
            return f"{pending.label}: did not run ({self.error or 'the run stopped'})"
        if self.error is not None:
            return f"every step held, then {self.error}"
        return f"all {len(self.steps)} steps held in {self.seconds:.1f} s"

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


async def run_scenario(
    client: DemoClient,
    clock: DemoClock,
    timings: Timings,
    board: Board,
    *,
    catalog: Catalog | None = None,
    crowd: int = DEFAULT_CROWD,
    expect: Expectations | None = None,
    seed: int = 2024,
) -> ScenarioResult:
    """Run the nine steps against the shop behind ``client``; never raises for a step
    that does not hold (the result says which)."""
    board.now = clock.now
    events = EventLog(board, client.prefix)
    await events.attach(client.transport)
    ctx = Context(
        client=client,
        clock=clock,
        timings=timings,
        board=board,
        events=events,
        catalog=catalog if catalog is not None else build_catalog(seed),
        crowd=crowd,
        expect=expect if expect is not None else Expectations(),
        seed=seed,
    )
    began = board.elapsed()
    try:
        for number, step in _STEPS.items():
            if not await _run_step(ctx, number, step):
                break
    finally:
        with anyio.CancelScope(shield=True):
            await events.detach(client.transport)
    ctx.facts["requests"] = client.requests
    ctx.facts["events"] = events.total
    return ScenarioResult(steps=board.steps, facts=ctx.facts, seconds=board.elapsed() - began)


async def _run_step(ctx: Context, number: int, step: Step) -> bool:
    board = ctx.board
    limit = _wall_limit(number, ctx.timings)
    board.start(number)
    try:
        with anyio.fail_after(limit):
            summary = await step(ctx)
    except (StepFailed, UnexpectedReply) as exc:
        board.fail(number, str(exc))
    except TimeoutError:
        board.fail(number, f"did not finish within {limit:g} s")
    except Exception as exc:
        log.exception("demo step crashed", step=step_label(number))
        board.fail(number, f"unexpected error: {exc!r}")
    else:
        board.ok(number, summary)
        return True
    return False
