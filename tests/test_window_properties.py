"""Property tests of the window actor against a reference model.

Hypothesis draws a window (stock, tipping point, per-buyer limit) and a run of steps:
joins (from a small pool of ids, buyers and quantities, so repeats with the same or other
parameters are frequent), exact repeats, leaves, time passing (also exactly onto the
activation and expiry), admin cancels, node restarts (the clock moving on while down)
and bursts of concurrent joins whose buyer checks are still in flight.

Every sequential step must give exactly the reply the model gives, and a burst must
give the replies of *some* order of its joins (it is linearizable). After every step
the invariants are checked on what the actor shows: reserved <= stock and equal to
the sum of unreleased reservations, each buyer within the limit, participants counted
right, the state equal to the model's, and once the window is over: the outcome is
``succeeded`` iff participants >= min_participants at close, the seller got its stock
back exactly once and the campaign heard about the end exactly once. At the end, the
events of the window are numbered 1..n and in lifecycle order.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iceshop.protocol import ReturnStock, WindowEnded
from iceshop.wire import JoinReply, LeaveReply, ShopError
from tests.window_support import Shop

pytestmark = pytest.mark.anyio

ACTIVATE_IN = 10.0
EXPIRE_IN = 60.0
JOIN_IDS = ("j0", "j1", "j2", "j3", "j4")
BUYERS = ("b0", "b1", "b2", "b3", "ghost")

# -- the reference model --------------------------------------------------------------------


@dataclass
class Res:
    buyer: str
    quantity: int
    released: bool = False


@dataclass
class Model:
    total: int
    min_participants: int
    max_per_buyer: int
    activates_at: float
    expires_at: float
    state: str = "scheduled"
    outcome: str | None = None
    close_reason: str | None = None
    participants_at_close: int | None = None
    res: dict[str, Res] = field(default_factory=dict)

    def released(self, r: Res) -> bool:
        return r.released or self.outcome == "failed"

    def status(self, r: Res) -> str:
        if self.released(r):
            return "released"
        return "confirmed" if self.outcome == "succeeded" else "reserved"

    def held(self, buyer: str) -> int:
        return sum(
            r.quantity for r in self.res.values() if r.buyer == buyer and not self.released(r)
        )

    def reserved(self) -> int:
        return sum(r.quantity for r in self.res.values() if not self.released(r))

    def participants(self) -> int:
        return len({r.buyer for r in self.res.values() if not self.released(r)})

    def _end(self, state: str, reason: str, outcome: str) -> None:
        self.participants_at_close = self.participants()
        self.state, self.close_reason, self.outcome = state, reason, outcome

    def close(self, reason: str) -> None:
        ok = self.participants() >= self.min_participants
        self._end("closed", reason, "succeeded" if ok else "failed")

    def tick(self, now: float) -> None:
        if self.state == "scheduled" and now >= self.activates_at:
            self.state = "active"
        if self.state == "active" and now >= self.expires_at:
            self.close("expired")

    def reply(self, join_id: str, r: Res) -> JoinReply:
        return JoinReply(
            join_id=join_id,
            window_id="W1",
            status=self.status(r),  # type: ignore[arg-type]
            quantity=r.quantity,
            unit_price_minor=4_500,
            currency="TRY",
        )

    def join(self, join_id: str, buyer: str, quantity: int) -> Any:
        r = self.res.get(join_id)
        if r is not None:
            if (r.buyer, r.quantity) != (buyer, quantity):
                return ("idempotency_conflict", None)
            return self.reply(join_id, r)
        if buyer.startswith("ghost"):
            return ("unknown_buyer", None)
        if self.state == "scheduled":
            return ("window_not_active", None)
        if self.state == "cancelled":
            return ("window_closed", None)
        if self.state == "closed":
            return ("sold_out" if self.close_reason == "sold_out" else "window_closed", None)
        if self.held(buyer) + quantity > self.max_per_buyer:
            return ("limit_exceeded", None)
        available = self.total - self.reserved()
        if available == 0:
            return ("sold_out", None)
        if quantity > available:
            return ("insufficient_stock", {"available": available})
        r = self.res[join_id] = Res(buyer, quantity)
        first = self.reply(join_id, r)
        if self.reserved() == self.total:
            self.close("sold_out")
        return first

    def leave(self, join_id: str, buyer: str) -> Any:
        r = self.res.get(join_id)
        if r is None:
            return ("unknown_join", None)
        if r.buyer != buyer:
            return ("forbidden", None)
        if not self.released(r):
            if self.state != "active":
                return ("window_closed", None)
            r.released = True
        return LeaveReply(join_id=join_id, status="released")

    def cancel(self) -> Any:
        if self.state == "closed":
            return ("window_closed", None)
        if self.state == "scheduled" or self.state == "active":
            self._end("cancelled", "cancelled", "failed")
        return "view"


def norm(reply: Any) -> Any:
    """A reply as the model writes it: errors as (code, details of insufficient_stock)."""
    if isinstance(reply, ShopError):
        details = reply.details if reply.code.value == "insufficient_stock" else None
        return (reply.code.value, details)
    return reply


# -- steps ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Join:
    join_id: str
    buyer: str
    quantity: int


@dataclass(frozen=True)
class Again:
    """Repeat the last join exactly."""


@dataclass(frozen=True)
class Leave:
    join_id: str
    buyer: str


@dataclass(frozen=True)
class LeaveHeld:
    """Leave one of the window's joins (picked by index), as its own buyer."""

    index: int


@dataclass(frozen=True)
class Advance:
    seconds: float


@dataclass(frozen=True)
class AdvanceOnto:
    """Move exactly onto the activation or the expiry (if it is still ahead)."""

    to: str


@dataclass(frozen=True)
class Cancel:
    pass


@dataclass(frozen=True)
class Restart:
    down_for: float


@dataclass(frozen=True)
class Burst:
    joins: tuple[Join, ...]


joins = st.builds(Join, st.sampled_from(JOIN_IDS), st.sampled_from(BUYERS), st.integers(1, 3))
_leave = st.builds(Leave, st.sampled_from(JOIN_IDS), st.sampled_from(BUYERS))
_leave_held = st.builds(LeaveHeld, st.integers(0, 7))
_advance = st.builds(Advance, st.sampled_from([0.5, 2.0, 5.0, 9.0]))
_bursts = st.builds(Burst, st.lists(joins, min_size=2, max_size=4).map(tuple))
# Weighted by repetition: mostly joins and leaves, time in small steps (and exactly
# onto the activation or the expiry now and then), rare cancels and restarts.
steps = st.one_of(
    *[joins] * 8,
    st.just(Again()),
    _leave,
    _leave_held,
    _leave_held,
    _advance,
    _advance,
    st.builds(AdvanceOnto, st.sampled_from(["activation", "expiry"])),
    st.just(Cancel()),
    st.builds(Restart, st.sampled_from([0.0, 2.0, 40.0])),
    _bursts,
    _bursts,
)
windows = st.tuples(st.integers(1, 8), st.integers(0, 3), st.integers(1, 4))


# -- the run -------------------------------------------------------------------------------


async def check_invariants(shop: Shop, model: Model) -> None:
    view = await shop.get()
    reservations = await shop.all_reservations()
    unreleased = [r for r in reservations if r.status != "released"]
    assert 0 <= view.quantity_reserved <= view.quantity_total
    assert view.quantity_reserved == sum(r.quantity for r in unreleased)
    per_buyer: dict[str, int] = {}
    for r in unreleased:
        per_buyer[r.buyer_id] = per_buyer.get(r.buyer_id, 0) + r.quantity
    assert all(q <= view.max_per_buyer for q in per_buyer.values())
    assert view.participants == len(per_buyer)
    # The actor is the model.
    assert (view.state, view.outcome, view.close_reason) == (
        model.state,
        model.outcome,
        model.close_reason,
    )
    assert view.quantity_reserved == model.reserved()
    assert [(r.join_id, r.buyer_id, r.quantity, r.status) for r in reservations] == [
        (j, r.buyer, r.quantity, model.status(r)) for j, r in model.res.items()
    ]
    returns = shop.peers.of("seller", ReturnStock)
    ended = shop.peers.of("campaign", WindowEnded)
    if model.state in ("closed", "cancelled"):
        assert model.participants_at_close is not None
        succeeded = model.participants_at_close >= model.min_participants
        assert view.outcome == ("succeeded" if succeeded and view.state == "closed" else "failed")
        if view.outcome == "failed":
            assert all(r.status == "released" for r in reservations)
        else:
            assert all(r.status in ("confirmed", "released") for r in reservations)
        assert returns == [ReturnStock("P1", view.quantity_total - view.quantity_reserved, "W1")]
        assert ended == [WindowEnded("W1", "S1", "P1", view.state, view.outcome)]
    else:
        assert returns == [] and ended == []


def linearize(
    model: Model, burst: tuple[Join, ...], got: list[Any], join_order: list[str]
) -> Model:
    """The model after the order of ``burst`` that gives the replies ``got`` and the
    reservations in ``join_order``."""
    for order in itertools.permutations(range(len(burst))):
        trial = copy.deepcopy(model)
        expected: list[Any] = [None] * len(burst)
        for i in order:
            j = burst[i]
            expected[i] = trial.join(j.join_id, j.buyer, j.quantity)
        if expected == got and list(trial.res) == join_order:
            return trial
    raise AssertionError(f"no order of {burst} gives {got} and joins {join_order}")


async def run(params: tuple[int, int, int], plan: list[Any]) -> None:
    total, min_participants, max_per_buyer = params
    shop = Shop()
    await shop.start()
    try:
        start = shop.clock()
        await shop.create(
            quantity_total=total,
            min_participants=min_participants,
            max_per_buyer=max_per_buyer,
            activates_in=ACTIVATE_IN,
            expires_in=EXPIRE_IN,
        )
        model = Model(
            total, min_participants, max_per_buyer, start + ACTIVATE_IN, start + EXPIRE_IN
        )
        last: Join | None = None
        for step in plan:
            if isinstance(step, Again):
                if last is None:
                    continue
                step = last
            if isinstance(step, Join):
                last = step
                got = norm(await shop.join(step.join_id, step.buyer, step.quantity))
                assert got == model.join(step.join_id, step.buyer, step.quantity), step
            elif isinstance(step, Leave | LeaveHeld):
                if isinstance(step, LeaveHeld):
                    if not model.res:
                        continue
                    join_id = list(model.res)[step.index % len(model.res)]
                    step = Leave(join_id, model.res[join_id].buyer)
                got = norm(await shop.leave(step.join_id, step.buyer))
                assert got == model.leave(step.join_id, step.buyer), step
            elif isinstance(step, Advance | AdvanceOnto):
                if isinstance(step, Advance):
                    await shop.advance(step.seconds)
                else:
                    target = model.activates_at if step.to == "activation" else model.expires_at
                    await shop.advance_to(target)
                model.tick(shop.clock())
            elif isinstance(step, Cancel):
                got = norm(await shop.cancel())
                expected = model.cancel()
                if expected == "view":
                    assert got.state == "cancelled"
                else:
                    assert got == expected
            elif isinstance(step, Restart):
                await shop.restart(step.down_for)
                model.tick(shop.clock())
            elif isinstance(step, Burst):
                shop.peers.hold_checks = True
                replies = [shop.tell_join(j.join_id, j.buyer, j.quantity) for j in step.joins]
                await shop.settle()
                shop.peers.hold_checks = False
                shop.peers.release()
                await shop.settle()
                assert all(len(r) == 1 for r in replies)
                order = [r.join_id for r in await shop.all_reservations()]
                model = linearize(model, step.joins, [norm(r[0]) for r in replies], order)
            await check_invariants(shop, model)
        # Let the window run to its end, then look at its events.
        await shop.advance_to(model.expires_at)
        model.tick(shop.clock())
        await check_invariants(shop, model)
        events = shop.sink.events("W1")
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        types = [e["type"] for e in events]
        assert types[0] == "created"
        assert types[-1] in ("closed", "cancelled")
        assert types.count("closed") + types.count("cancelled") == 1
        if "activated" in types:
            assert types.index("activated") == 1
        assert types.count("joined") == len(model.res)
        assert types.count("sold_out") == (1 if model.close_reason == "sold_out" else 0)
        if model.close_reason == "sold_out":
            assert types[-2:] == ["sold_out", "closed"]
    finally:
        await shop.stop()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(params=windows, opening=st.integers(0, 3), plan=st.lists(steps, min_size=2, max_size=30))
async def test_the_window_behaves_like_its_model_under_any_interleaving(
    params: tuple[int, int, int], opening: int, plan: list[Any]
) -> None:
    if opening:  # most of the action is while the window is open
        plan = [AdvanceOnto("activation"), *plan]
    await run(params, plan)


async def test_a_crowd_of_bursts_never_oversells() -> None:
    """A fixed, heavier case the random runs rarely reach: many buyers at once."""
    plan: list[Any] = [AdvanceOnto("activation")]
    for round_ in range(5):
        plan.append(Burst(tuple(Join(f"r{round_}j{i}", f"b{i % 3}", 1 + i % 2) for i in range(4))))
    await run((6, 2, 3), plan)
