"""Steps 7 and 9: windows activate and close on time, on their own.

Nobody sends a message to make a window move: its own durable timers do it. The demo
waits (on the node's clock) until a window's ``activates_at`` / ``expires_at``, then
checks the window's state within the allowed tolerance, and the time its ``activated`` /
``closed`` event carries. At the end every window must have closed with the outcome the
tipping point dictates, its reservations confirmed or released accordingly, later joins
refused, and its events complete and in ``seq`` order.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from iceshop.demo.context import Context, Joined, seconds
from iceshop.demo.steps import StepFailed
from iceshop.wire import CommandKind

__all__ = ["activated", "expired"]


async def _wait_state(
    ctx: Context, view: dict[str, Any], state: str, due_field: str, tolerance: float, what: str
) -> dict[str, Any]:
    """Sleep until the window's ``due_field`` time, then wait for ``state``."""
    wid = view["window_id"]
    due = seconds(view[due_field])
    await ctx.clock.sleep(due - ctx.clock.now())
    last: dict[str, Any] = view

    async def probe() -> dict[str, Any] | None:
        nonlocal last
        last = await ctx.window_view(wid)
        return last if last["state"] == state else None

    return await ctx.wait_for(
        probe,
        until=due + tolerance,
        failure=lambda: f"window {wid} still {last['state']} {tolerance:g} s after its {what} time",
    )


async def _event_lateness(
    ctx: Context, wid: str, kind: str, due: float, tolerance: float, what: str
) -> float:
    """Seconds between ``due`` and the ``at`` of the window's ``kind`` event."""
    found = await ctx.wait_for(
        _present(ctx, wid, kind),
        until=ctx.clock.now() + ctx.expect.settle_s,
        failure=lambda: f"window {wid}: no {kind} event (saw {ctx.events.window_types(wid)})",
    )
    late = seconds(found[2]) - due
    if late < -0.001:
        raise StepFailed(f"window {wid} {kind} {-late:.3f} s before its {what} time")
    if late > tolerance:
        raise StepFailed(
            f"window {wid} {kind} {late:.2f} s after its {what} time (allowed {tolerance:g} s)"
        )
    return late


def _present(ctx: Context, wid: str, kind: str) -> Any:
    async def probe() -> tuple[int, str, str] | None:
        return ctx.events.window_event(wid, kind)

    return probe


async def activated(ctx: Context) -> str:
    tolerance = ctx.expect.activation_tolerance_s
    worst = 0.0
    for view in sorted(ctx.windows.values(), key=lambda v: v["activates_at"]):
        wid = view["window_id"]
        await _wait_state(ctx, view, "active", "activates_at", tolerance, "activation")
        late = await _event_lateness(
            ctx, wid, "activated", seconds(view["activates_at"]), tolerance, "activation"
        )
        worst = max(worst, late)
        ctx.board.note(f"{wid} activated {late * 1000:.0f} ms after its activation time")
    wanted = {v["window_id"] for v in ctx.windows.values()}

    async def listed() -> bool | None:
        active = {w["window_id"] for w in await ctx.list_windows(state="active")}
        return True if wanted <= active else None

    await ctx.wait_for(
        listed,
        until=ctx.clock.now() + ctx.expect.settle_s,
        failure=lambda: "windows.list state=active does not list every active window",
    )
    ctx.facts["activation_late_s"] = worst
    return (
        f"{len(wanted)} windows active on their own timers, at most {worst * 1000:.0f} ms "
        "after their activation time; windows.list lists them as active"
    )


async def expired(ctx: Context) -> str:
    tolerance = ctx.expect.expiry_tolerance_s
    lines = []
    outcomes: dict[str, str] = {}
    crowd = ctx.windows["crowd"]
    for role in ("succeeds", "fails"):
        view = ctx.windows[role]
        wid = view["window_id"]
        closed = await _wait_state(ctx, view, "closed", "expires_at", tolerance, "expiry")
        late = await _event_lateness(
            ctx, wid, "closed", seconds(view["expires_at"]), tolerance, "expiry"
        )
        # The buyers holding a reservation at the close (a failed close releases them all).
        left = ctx.left.get(wid, set())
        holders = len(
            {j.buyer_id for j in ctx.joins.get(wid, {}).values() if j.join_id not in left}
        )
        low = closed["min_participants"]
        want = "succeeded" if holders >= low else "failed"
        planned = "succeeded" if role == "succeeds" else "failed"
        if closed["close_reason"] != "expired" or closed["outcome"] != want or want != planned:
            raise StepFailed(
                f"window {wid} closed {closed['close_reason']}/{closed['outcome']} with "
                f"{holders} of {low} buyers holding a reservation; expected expired/{planned}"
            )
        if want == "failed" and closed["participants"] != 0:
            raise StepFailed(
                f"window {wid} failed but still counts {closed['participants']} buyers"
            )
        summary = await _settled(ctx, closed)
        outcomes[wid] = want
        ctx.board.note(f"{wid} closed {late * 1000:.0f} ms after its expiry time: {summary}")
        lines.append(f"{closed['product_id']} {want} ({holders} of {low} buyers): {summary}")
    final = await ctx.window_view(crowd["window_id"])
    if final["state"] != "closed" or final["close_reason"] != "sold_out":
        raise StepFailed(f"window {crowd['window_id']} is {final['state']}/{final['close_reason']}")
    summary = await _settled(ctx, final)
    outcomes[final["window_id"]] = final["outcome"]
    lines.append(f"{final['product_id']} sold out, {final['outcome']}: {summary}")

    await _late_commands(ctx)
    await _event_history(ctx)
    wanted = {v["window_id"] for v in ctx.windows.values()}

    async def listed() -> bool | None:
        closed = {w["window_id"] for w in await ctx.list_windows(state="closed")}
        return True if wanted <= closed else None

    await ctx.wait_for(
        listed,
        until=ctx.clock.now() + ctx.expect.settle_s,
        failure=lambda: "windows.list state=closed does not list every closed window",
    )
    ctx.facts["outcomes"] = outcomes
    return "; ".join(lines)


async def _settled(ctx: Context, view: dict[str, Any]) -> str:
    """Check that the closed window's reservations are confirmed or released as its
    outcome says; a short text of the counts."""
    wid = view["window_id"]
    acked = ctx.joins.get(wid, {})
    left = ctx.left.get(wid, set())
    found = {r["join_id"]: r for r in await ctx.reservations(wid)}
    statuses = Counter(r["status"] for r in found.values())
    for join_id in acked:
        r = found.get(join_id)
        if r is None:
            raise StepFailed(
                f"window {wid}: acknowledged join {join_id} is not among its reservations"
            )
        want = "released" if join_id in left or view["outcome"] == "failed" else "confirmed"
        if r["status"] != want:
            raise StepFailed(f"window {wid}: reservation {join_id} is {r['status']}, not {want}")
    if view["outcome"] == "succeeded" and statuses["reserved"]:
        raise StepFailed(f"window {wid}: {statuses['reserved']} reservations still reserved")
    return ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "no reservations"


async def _late_commands(ctx: Context) -> None:
    """After the close: a join is refused, a leave too."""
    buyer = ctx.catalog.buyers[-1].buyer_id
    done = ctx.windows["succeeds"]["window_id"]
    await ctx.client.expect_error(
        "window_closed",
        CommandKind.WINDOW_JOIN,
        {"join_id": "j-too-late", "buyer_id": buyer},
        window_id=done,
    )
    kept = next(
        (j for j in ctx.joins.get(done, {}).values() if j.join_id not in ctx.left.get(done, set())),
        None,
    )
    if kept is not None:
        await ctx.client.expect_error(
            "window_closed",
            CommandKind.WINDOW_LEAVE,
            {"join_id": kept.join_id, "buyer_id": kept.buyer_id},
            window_id=done,
        )
    await ctx.client.expect_error(
        "sold_out",
        CommandKind.WINDOW_JOIN,
        {"join_id": "j-after-sellout", "buyer_id": buyer},
        window_id=ctx.windows["crowd"]["window_id"],
    )


async def _event_history(ctx: Context) -> None:
    """Each window's events: created, activated, ..., closed; seq 1..n without gaps (none
    lost); one ``joined`` per acknowledged join and one ``left`` per leave."""
    for view in ctx.windows.values():
        await _window_history(ctx, view["window_id"])


async def _window_history(ctx: Context, wid: str) -> None:
    async def complete() -> bool | None:
        types = ctx.events.window_types(wid)
        return True if types and types[-1] == "closed" else None

    await ctx.wait_for(
        complete,
        until=ctx.clock.now() + ctx.expect.settle_s,
        failure=lambda: f"window {wid}: events end with {ctx.events.window_types(wid)[-1:]}",
    )
    seqs = ctx.events.window_seqs(wid)
    types = ctx.events.window_types(wid)
    if seqs != list(range(1, len(seqs) + 1)):
        missing = sorted(set(range(1, seqs[-1] + 1)) - set(seqs))
        raise StepFailed(f"window {wid}: events with seq {missing[:10]} never arrived")
    joined: dict[str, Joined] = ctx.joins.get(wid, {})
    counts = Counter(types)
    if types[:2] != ["created", "activated"] or counts["closed"] != 1:
        raise StepFailed(f"window {wid}: events {types[:3]} ... {types[-2:]}")
    if counts["joined"] != len(joined) or counts["left"] != len(ctx.left.get(wid, set())):
        raise StepFailed(
            f"window {wid}: {counts['joined']} joined / {counts['left']} left events for "
            f"{len(joined)} joins and {len(ctx.left.get(wid, set()))} leaves"
        )
