"""Step 8: buyers join the active windows, and a flash crowd hits one of them.

The crowd: hundreds of join attempts at once, from many buyers, for a window whose stock
is far below them. What must hold: exactly the stock is sold (never more: the oversell
is computed from the window's own reservations, read page by page), every acknowledged
join is among them, no buyer holds more than the per-buyer limit, and every refusal is
one the contract names for this (``sold_out``, ``insufficient_stock``,
``limit_exceeded``). A retryable answer (``overloaded``, ``unavailable``, no reply) is
retried with the same ``join_id``, as the contract tells clients to.

The other two windows get ordinary traffic that shows the rules one by one: a replay
returns the first reply, a reused ``join_id`` with other parameters is a conflict, the
per-buyer limit holds, an unknown buyer is refused, a leave releases (and is idempotent),
and nobody can leave another buyer's join. One of them is joined by fewer buyers than its
tipping point, so step 9 sees it fail.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Final

import anyio

from iceshop.demo.board import CrowdTally
from iceshop.demo.context import Context, Joined, money
from iceshop.demo.steps import StepFailed
from iceshop.wire import CommandKind

__all__ = ["CROWD_REFUSALS", "buyers_join"]

CROWD_REFUSALS: Final = frozenset({"sold_out", "insufficient_stock", "limit_exceeded"})
RETRYABLE: Final = frozenset({"overloaded", "unavailable", "internal"})
_TRIES: Final = 4
_CONCURRENCY: Final = 100
_WAVES: Final = 5
#: Reservations are read this many at a time (small, so the paging is exercised).
PAGE: Final = 10


async def buyers_join(ctx: Context) -> str:
    crowd = await _flash_crowd(ctx)
    regular = await _ordinary_joins(ctx)
    few = await _too_few(ctx)
    return f"{crowd}; {regular}; {few}"


async def _join(
    ctx: Context, window_id: str, join_id: str, buyer_id: str, quantity: int
) -> dict[str, Any]:
    """One join, retried with the same id while the answer is retryable."""
    body = {"join_id": join_id, "buyer_id": buyer_id, "quantity": quantity}
    reply: dict[str, Any] = {}
    for attempt in range(_TRIES):
        reply = await ctx.client.call(CommandKind.WINDOW_JOIN, body, window_id=window_id)
        if reply.get("ok") or reply["error"]["code"] not in RETRYABLE:
            return reply
        await ctx.clock.sleep(0.05 * (attempt + 1))
    return reply


def _record(ctx: Context, window: dict[str, Any], joined: Joined) -> None:
    reply = joined.reply
    expected = {
        "join_id": joined.join_id,
        "window_id": window["window_id"],
        "status": "reserved",
        "quantity": joined.quantity,
        "unit_price_minor": window["unit_price_minor"],
        "currency": window["currency"],
    }
    if reply != expected:
        raise StepFailed(f"join {joined.join_id}: expected {expected}, got {reply}")
    ctx.joins.setdefault(window["window_id"], {})[joined.join_id] = joined


async def _flash_crowd(ctx: Context) -> str:
    window = ctx.windows["crowd"]
    wid, total = window["window_id"], window["quantity_total"]
    buyers = [b.buyer_id for b in ctx.catalog.buyers]
    rng = ctx.rng
    plan = [
        (f"fc-{n:04d}", rng.choice(buyers), 2 if rng.random() < 0.15 else 1)
        for n in range(1, ctx.crowd + 1)
    ]
    tally = CrowdTally(window_id=wid, attempts=len(plan), buyers=len({b for _, b, _ in plan}))
    ctx.board.crowd = tally
    began = time.monotonic()

    limiter = anyio.CapacityLimiter(_CONCURRENCY)
    errors: list[Exception] = []

    async def attempt(join_id: str, buyer_id: str, quantity: int) -> None:
        async with limiter:
            try:
                reply = await _join(ctx, wid, join_id, buyer_id, quantity)
                tally.done += 1
                if reply.get("ok"):
                    joined = Joined(
                        join_id=join_id, buyer_id=buyer_id, quantity=quantity, reply=reply["data"]
                    )
                    _record(ctx, window, joined)
                    tally.reserved += quantity
                    tally.codes["reserved"] += 1
                else:
                    tally.codes[reply["error"]["code"]] += 1
            except Exception as exc:
                errors.append(exc)

    # The crowd arrives in waves over ``crowd_spread_s`` (as after a notification), each
    # wave all at once; waves overlap when the node is slower than they come.
    wave = -(-len(plan) // _WAVES)
    async with anyio.create_task_group() as tg:
        for n, p in enumerate(plan):
            if n and n % wave == 0 and ctx.timings.crowd_spread_s > 0:
                await ctx.clock.sleep(ctx.timings.crowd_spread_s / _WAVES)
            tg.start_soon(attempt, *p)
    if errors:
        raise errors[0]
    tally.seconds = time.monotonic() - began
    unexpected = {
        c: n for c, n in tally.codes.items() if c != "reserved" and c not in CROWD_REFUSALS
    }
    if unexpected:
        raise StepFailed(f"the crowd got unexpected answers: {unexpected}")
    ctx.board.note(
        f"flash crowd: {tally.attempts} join attempts by {tally.buyers} buyers in "
        f"{tally.seconds:.2f} s: " + ", ".join(f"{n} {c}" for c, n in tally.codes.most_common())
    )

    # The window's own record, page by page: what it holds, against what was acknowledged.
    view = await ctx.window_view(wid)
    reservations = await ctx.reservations(wid, page=PAGE)
    acked = ctx.joins.get(wid, {})
    by_id = {r["join_id"]: r for r in reservations}
    for j in acked.values():
        r = by_id.get(j.join_id)
        if r is None or r["buyer_id"] != j.buyer_id or r["quantity"] != j.quantity:
            raise StepFailed(f"acknowledged join {j.join_id} is missing or altered: {r}")
    held = [r for r in reservations if r["status"] != "released"]
    held_quantity = sum(r["quantity"] for r in held)
    unacked = [r for r in reservations if r["join_id"] not in acked]
    for r in unacked:  # committed, but its reply was lost: still the window's truth
        acked[r["join_id"]] = Joined(
            join_id=r["join_id"], buyer_id=r["buyer_id"], quantity=r["quantity"], reply={}
        )
    per_buyer = Counter[str]()
    for r in held:
        per_buyer[r["buyer_id"]] += r["quantity"]
    oversell = max(0, held_quantity - total)
    tally.oversell = oversell
    ctx.facts["crowd"] = {
        "attempts": tally.attempts,
        "codes": dict(tally.codes),
        "reserved_quantity": tally.reserved,
        "held_quantity": held_quantity,
        "quantity_total": total,
        "oversell": oversell,
        "unacked": len(unacked),
        "pages": -(-len(reservations) // PAGE),
    }
    if oversell > ctx.expect.oversell_allowed:
        raise StepFailed(f"window {wid} oversold: {held_quantity} units held of {total}")
    if held_quantity != view["quantity_reserved"] or held_quantity != tally.reserved + sum(
        r["quantity"] for r in unacked
    ):
        raise StepFailed(
            f"window {wid}: reservations hold {held_quantity} units, the view says "
            f"{view['quantity_reserved']}, acknowledged joins {tally.reserved}"
        )
    greedy = {b: q for b, q in per_buyer.items() if q > window["max_per_buyer"]}
    if greedy:
        raise StepFailed(f"buyers above the per-buyer limit {window['max_per_buyer']}: {greedy}")
    demand = sum(q for _, _, q in plan)
    if demand >= 2 * total and held_quantity != total:
        raise StepFailed(
            f"window {wid}: {held_quantity} of {total} sold to a crowd asking {demand}"
        )
    if held_quantity == total:

        async def sold_out() -> dict[str, Any] | None:
            v = await ctx.window_view(wid)
            return v if v["state"] == "closed" else None

        closed = await ctx.wait_for(
            sold_out,
            until=ctx.clock.now() + ctx.expect.settle_s,
            failure=lambda: f"window {wid} sold out but did not close",
        )
        if closed["close_reason"] != "sold_out" or closed["outcome"] != "succeeded":
            raise StepFailed(
                f"window {wid} sold out, closed {closed['close_reason']}/{closed['outcome']}"
            )
    # A replay after the sell-out is the first reply again, with the current status.
    first = next(iter(j for j in acked.values() if j.reply), None)
    if first is not None:
        again = await ctx.client.ok(
            CommandKind.WINDOW_JOIN,
            {"join_id": first.join_id, "buyer_id": first.buyer_id, "quantity": first.quantity},
            window_id=wid,
        )
        if {**again, "status": "reserved"} != first.reply:
            raise StepFailed(f"replaying join {first.join_id} gave {again}, first {first.reply}")
    ctx.board.note(
        f"{len(reservations)} reservations read in pages of {PAGE}: {held_quantity} units held of "
        f"{total}, {len(per_buyer)} buyers, oversell {oversell}"
    )
    return (
        f"flash crowd of {tally.attempts} attempts sold {held_quantity}/{total} to "
        f"{len(per_buyer)} buyers, oversell {oversell}"
    )


def _takers(ctx: Context, window: dict[str, Any], count: int) -> list[str]:
    """Buyers whose intent accepts the window's price (they were told), then others."""
    price = window["unit_price_minor"]
    keen = [
        i.buyer_id
        for i in ctx.catalog.intents_of(window["product_id"])
        if i.max_price_minor >= price
    ]
    others = [b.buyer_id for b in ctx.catalog.buyers if b.buyer_id not in keen]
    chosen = (keen + others)[:count]
    if len(chosen) < count:
        raise StepFailed(f"window {window['window_id']}: fewer than {count} buyers to join")
    return chosen


async def _ordinary_joins(ctx: Context) -> str:
    window = ctx.windows["succeeds"]
    wid, per = window["window_id"], window["max_per_buyer"]
    need = window["min_participants"] + 1
    if window["quantity_total"] < per + need - 1:
        raise StepFailed(
            f"window {wid} is too small for the demo: {window['quantity_total']} units"
        )
    a, *rest = _takers(ctx, window, need)
    c = ctx.client

    async def join(join_id: str, buyer_id: str, quantity: int = 1) -> None:
        data = await c.ok(
            CommandKind.WINDOW_JOIN,
            {"join_id": join_id, "buyer_id": buyer_id, "quantity": quantity},
            window_id=wid,
        )
        _record(
            ctx, window, Joined(join_id=join_id, buyer_id=buyer_id, quantity=quantity, reply=data)
        )

    await join("j-001", a, per)
    again = await c.ok(
        CommandKind.WINDOW_JOIN, {"join_id": "j-001", "buyer_id": a, "quantity": per}, window_id=wid
    )
    if again != ctx.joins[wid]["j-001"].reply:
        raise StepFailed(f"replaying join j-001 gave {again}")
    await c.expect_error(
        "idempotency_conflict",
        CommandKind.WINDOW_JOIN,
        {"join_id": "j-001", "buyer_id": rest[0]},
        window_id=wid,
    )
    await c.expect_error(
        "limit_exceeded",
        CommandKind.WINDOW_JOIN,
        {"join_id": "j-002", "buyer_id": a},
        window_id=wid,
    )
    await c.expect_error(
        "unknown_buyer",
        CommandKind.WINDOW_JOIN,
        {"join_id": "j-003", "buyer_id": "b-kayitsiz"},
        window_id=wid,
    )
    for n, buyer in enumerate(rest, start=4):
        await join(f"j-{n:03d}", buyer)
    leaver = ctx.joins[wid]["j-004"]
    left = await c.ok(
        CommandKind.WINDOW_LEAVE, {"join_id": "j-004", "buyer_id": leaver.buyer_id}, window_id=wid
    )
    if left != {"join_id": "j-004", "status": "released"}:
        raise StepFailed(f"leave j-004: {left}")
    if (
        await c.ok(
            CommandKind.WINDOW_LEAVE,
            {"join_id": "j-004", "buyer_id": leaver.buyer_id},
            window_id=wid,
        )
        != left
    ):
        raise StepFailed("leave j-004 again did not return the same reply")
    ctx.left.setdefault(wid, set()).add("j-004")
    await c.expect_error(
        "forbidden", CommandKind.WINDOW_LEAVE, {"join_id": "j-005", "buyer_id": a}, window_id=wid
    )
    view = await ctx.window_view(wid)
    holders = {a, *rest} - {leaver.buyer_id}
    quantity = per + len(rest) - 1
    if view["quantity_reserved"] != quantity or view["participants"] != len(holders):
        raise StepFailed(
            f"window {wid}: {view['quantity_reserved']} units / {view['participants']} buyers, "
            f"expected {quantity} / {len(holders)}"
        )
    ctx.board.note(
        f"{wid}: {a} took {per} at {money(window['unit_price_minor'])}, a replay gave the same "
        f"reply, a third unit was limit_exceeded; {leaver.buyer_id} joined and left"
    )
    return f"{window['product_id']}: {len(holders)} buyers hold {quantity} units after a leave"


async def _too_few(ctx: Context) -> str:
    window = ctx.windows["fails"]
    wid = window["window_id"]
    few = window["min_participants"] - 1
    for n, buyer in enumerate(_takers(ctx, window, few), start=1):
        data = await ctx.client.ok(
            CommandKind.WINDOW_JOIN, {"join_id": f"j-{n:03d}", "buyer_id": buyer}, window_id=wid
        )
        _record(ctx, window, Joined(join_id=f"j-{n:03d}", buyer_id=buyer, quantity=1, reply=data))
    view = await ctx.window_view(wid)
    if view["participants"] != few:
        raise StepFailed(f"window {wid}: {view['participants']} participants, expected {few}")
    low = window["min_participants"]
    return f"{window['product_id']}: {few} buyers, below its tipping point {low}"
