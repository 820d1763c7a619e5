"""What the steps share: the connection, the clock, the data, and what earlier steps found.

Also the two helpers every step uses: :func:`wait_for` (poll until something holds or a
deadline on the node's clock passes, then fail with a message that says what was seen)
and :func:`run_all` (many requests at once, with a bound, and the first failure raised
as itself rather than wrapped in an exception group).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import anyio
import msgspec

from iceshop.demo.board import Board
from iceshop.demo.client import DemoClient
from iceshop.demo.data import Catalog, Role
from iceshop.demo.events import EventLog
from iceshop.demo.steps import StepFailed
from iceshop.demo.timing import DemoClock, Expectations, Timings
from iceshop.wire import CommandKind, parse_time

__all__ = ["Context", "Joined", "money", "run_all", "seconds", "wait_for"]

T = TypeVar("T")


class Joined(msgspec.Struct, frozen=True, kw_only=True):
    """An acknowledged join: who asked for how much, and the reply."""

    join_id: str
    buyer_id: str
    quantity: int
    reply: dict[str, Any]


class Context:
    def __init__(
        self,
        *,
        client: DemoClient,
        clock: DemoClock,
        timings: Timings,
        board: Board,
        events: EventLog,
        catalog: Catalog,
        crowd: int,
        expect: Expectations,
        seed: int,
    ) -> None:
        self.client = client
        self.clock = clock
        self.timings = timings
        self.board = board
        self.events = events
        self.catalog = catalog
        self.crowd = crowd
        self.expect = expect
        self.rng = random.Random(seed + 1)
        #: product_id -> the decision that matters for it (as ``decisions.get`` returns it)
        self.decisions: dict[str, dict[str, Any]] = {}
        #: role -> the window proposed for that role's product
        self.windows: dict[Role, dict[str, Any]] = {}
        #: window_id -> join_id -> acknowledged join
        self.joins: dict[str, dict[str, Joined]] = {}
        #: window_id -> join_ids released by a leave
        self.left: dict[str, set[str]] = {}
        #: numbers a test (or the summary) may want
        self.facts: dict[str, Any] = {}

    async def window_view(self, window_id: str) -> dict[str, Any]:
        view = await self.client.ok(CommandKind.WINDOW_GET, window_id=window_id)
        self.board.window(view)
        return view

    async def list_windows(self, **filters: str) -> list[dict[str, Any]]:
        """Every window the read model lists (all pages)."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(1000):
            body: dict[str, Any] = {**filters, "limit": 100}
            if cursor is not None:
                body["cursor"] = cursor
            page = await self.client.ok(CommandKind.WINDOWS_LIST, body)
            found += page["windows"]
            cursor = page["next_cursor"]
            if cursor is None:
                return found
        raise StepFailed("windows.list: more than 1000 pages")

    async def reservations(self, window_id: str, *, page: int = 25) -> list[dict[str, Any]]:
        """Every reservation of a window, read ``page`` at a time."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(10_000):
            body: dict[str, Any] = {"limit": page}
            if cursor is not None:
                body["cursor"] = cursor
            data = await self.client.ok(CommandKind.WINDOW_RESERVATIONS, body, window_id=window_id)
            found += data["reservations"]
            cursor = data["next_cursor"]
            if cursor is None:
                return found
        raise StepFailed(f"{window_id}: reservations never ended")

    async def wait_for(
        self,
        probe: Callable[[], Awaitable[T | None]],
        *,
        until: float,
        failure: Callable[[], str],
    ) -> T:
        return await wait_for(self.clock, self.timings.poll_s, probe, until=until, failure=failure)


async def wait_for(
    clock: DemoClock,
    poll_s: float,
    probe: Callable[[], Awaitable[T | None]],
    *,
    until: float,
    failure: Callable[[], str],
) -> T:
    """Call ``probe`` until it returns something other than ``None``; past ``until`` (node
    time) fail with ``failure()``. The probe always runs at least once."""
    while True:
        found = await probe()
        if found is not None:
            return found
        if clock.now() >= until:
            raise StepFailed(failure())
        await clock.sleep(poll_s)


async def run_all(jobs: Iterable[Callable[[], Awaitable[None]]], *, limit: int = 32) -> None:
    """Run the jobs concurrently, at most ``limit`` at a time; re-raise the first error."""
    limiter = anyio.CapacityLimiter(limit)
    errors: list[Exception] = []

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with limiter:
            if errors:
                return
            try:
                await job()
            except Exception as exc:
                errors.append(exc)

    async with anyio.create_task_group() as tg:
        for job in jobs:
            tg.start_soon(one, job)
    if errors:
        raise errors[0]


def money(minor: int, currency: str = "TRY") -> str:
    """``32990`` -> ``329.90 TRY``."""
    return f"{minor / 100:,.2f} {currency}"


def seconds(text: str) -> float:
    """A contract time as epoch seconds."""
    return parse_time(text)
