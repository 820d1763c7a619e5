"""Steps 4-6: demand is aggregated, the campaign decides, windows are created.

All three are the shop acting on its own, so the demo only watches: the ``demand``
events must add up to exactly the intents it sent, each product must get the decision
its data was built for (``iceshop.demo.data``), and each proposed window must obey the
policy's bounds (price within the seller's floor and list price, size within stock and
accepted demand, a per-buyer limit under which a sell-out always reaches the tipping
point) and the configured timings.
"""

from __future__ import annotations

from typing import Any, Final

from iceshop.demo.context import Context, money, seconds
from iceshop.demo.data import WINDOW_ROLES, Product, Role
from iceshop.demo.steps import StepFailed
from iceshop.wire import CommandKind

__all__ = ["decisions", "demand", "windows_created"]

PROPOSAL_REASONS: Final = ["demand_sufficient", "price_accepted", "seller_selected", "window_sized"]
#: The first reason code of the decision each non-window role must end with.
NO_WINDOW_REASON: Final[dict[Role, str]] = {
    "price_gap": "price_gap",
    "below_min": "demand_below_minimum",
}
ROLE_TEXT: Final[dict[Role, str]] = {
    "crowd": "flash crowd",
    "succeeds": "reaches its tipping point",
    "fails": "too few buyers",
}
#: Times on the wire have millisecond precision.
_MS = 0.0015


async def demand(ctx: Context) -> str:
    catalog = ctx.catalog
    expected = {
        p.product_id: (
            len(catalog.intents_of(p.product_id)),
            sum(i.quantity for i in catalog.intents_of(p.product_id)),
        )
        for p in catalog.products
    }

    def mismatches() -> list[str]:
        wrong = []
        for pid, (count, quantity) in expected.items():
            seen = ctx.events.demand.get(pid)
            if seen is None:
                wrong.append(f"{pid}: no demand event")
                continue
            data = seen[1]
            if data["open_intents"] != count or data["quantity"] != quantity:
                wrong.append(
                    f"{pid}: open_intents {data['open_intents']} (sent {count}), "
                    f"quantity {data['quantity']} (sent {quantity})"
                )
        return wrong

    async def probe() -> bool | None:
        return True if not mismatches() else None

    await ctx.wait_for(
        probe,
        until=ctx.clock.now() + ctx.expect.settle_s,
        failure=lambda: "demand events do not add up: " + "; ".join(mismatches()),
    )
    for pid, (count, quantity) in expected.items():
        seq, data = ctx.events.demand[pid]
        score = float(data["score"])
        # Every arrival is seconds old and the half-life is hours: the score is the sum.
        if abs(score - quantity) > 0.01 * quantity + 0.01:
            raise StepFailed(f"{pid}: demand score {score:.3f}, expected about {quantity}")
        ctx.board.note(
            f"{pid}: {count} open intents, {quantity} units, score {score:.2f} (event #{seq})"
        )
    ctx.facts["demand"] = expected
    return f"demand events for {len(expected)} products match the intents sent"


def _wanted(ctx: Context, product: Product) -> dict[str, Any] | None:
    """The decision event this product's role is waiting for, if it has come."""
    seen = ctx.events.decisions_for(product.product_id)
    if product.role in WINDOW_ROLES:
        return next((d for d in seen if d["outcome"] == "window_proposed"), None)
    if not seen:
        return None
    last = seen[-1]
    reasons = last.get("reasons") or []
    if reasons and reasons[0]["code"] == NO_WINDOW_REASON[product.role]:
        return last
    return None


async def decisions(ctx: Context) -> str:
    products = ctx.catalog.products
    t = ctx.timings

    async def probe() -> bool | None:
        return True if all(_wanted(ctx, p) is not None for p in products) else None

    def missing() -> str:
        parts = []
        for p in products:
            if _wanted(ctx, p) is not None:
                continue
            seen = ", ".join(
                f"{d['decision_id']} {d['outcome']} "
                f"({'/'.join(r['code'] for r in d['reasons'][:1])})"
                for d in ctx.events.decisions_for(p.product_id)
            )
            want = (
                "window_proposed"
                if p.role in WINDOW_ROLES
                else f"no_action ({NO_WINDOW_REASON[p.role]})"
            )
            parts.append(f"{p.product_id}: expected {want}, decisions seen: {seen or 'none'}")
        return "; ".join(parts)

    await ctx.wait_for(
        probe,
        until=ctx.clock.now() + 3 * t.campaign_interval_s + ctx.expect.settle_s,
        failure=missing,
    )
    proposed, idle = [], []
    for p in products:
        event = _wanted(ctx, p)
        assert event is not None
        did = event["decision_id"]
        full = await ctx.client.ok(CommandKind.DECISION_GET, decision_id=did)
        _check_decision(p, did, event, full)
        ctx.decisions[p.product_id] = full
        codes = [r["code"] for r in full["reasons"]]
        if p.role in WINDOW_ROLES:
            proposed.append(p.product_id)
            ctx.board.note(f"{did}: window_proposed -> {full['window_id']}")
        else:
            idle.append(f"{p.product_id}: {codes[0]}")
            line = f"{p.product_id}: {full['outcome']}, {full['reasons'][0]['text']}"
            ctx.board.decision(line)
            ctx.board.note(f"{did}: {line}")
    ctx.facts["decisions"] = {pid: d["decision_id"] for pid, d in ctx.decisions.items()}
    return (
        f"{len(proposed)} windows proposed ({', '.join(proposed)}); "
        f"{len(idle)} products without one ({'; '.join(idle)})"
    )


def _check_decision(
    product: Product, did: str, event: dict[str, Any], full: dict[str, Any]
) -> None:
    if full["decision_id"] != did or full["product_id"] != product.product_id:
        raise StepFailed(f"decisions.{did}.get returned decision {full['decision_id']}")
    if full["outcome"] != event["outcome"] or full["reasons"] != event["reasons"]:
        raise StepFailed(f"{did}: the stored decision differs from its made event")
    reasons = full["reasons"]
    if not 1 <= len(reasons) <= 4:
        raise StepFailed(f"{did}: {len(reasons)} reasons, the contract allows 1 to 4")
    for r in reasons:
        if set(r) != {"code", "text", "value", "threshold"} or not r["text"]:
            raise StepFailed(f"{did}: malformed reason {r}")
    inputs = full.get("inputs") or {}
    if "demand.open_quantity" not in inputs:
        raise StepFailed(f"{did}: inputs lack demand.open_quantity")
    if product.role in WINDOW_ROLES:
        codes = [r["code"] for r in reasons]
        if codes != PROPOSAL_REASONS or not full["window_id"]:
            raise StepFailed(f"{did}: a proposal with reasons {codes}, window {full['window_id']}")


async def windows_created(ctx: Context) -> str:
    catalog = ctx.catalog
    wanted = {
        ctx.decisions[p.product_id]["window_id"]: p
        for p in catalog.products
        if p.role in WINDOW_ROLES
    }
    listed: dict[str, dict[str, Any]] = {}

    async def probe() -> bool | None:
        listed.clear()
        listed.update(
            (w["window_id"], w) for w in await ctx.list_windows() if w["window_id"] in wanted
        )
        return True if len(listed) == len(wanted) else None

    await ctx.wait_for(
        probe,
        until=ctx.clock.now() + ctx.expect.settle_s,
        failure=lambda: "windows.list lacks " + ", ".join(sorted(set(wanted) - set(listed))),
    )
    lines = []
    for wid, product in sorted(wanted.items()):
        view = await ctx.window_view(wid)
        decision = ctx.decisions[product.product_id]
        _check_window(ctx, product, view, decision)
        role = product.role
        ctx.windows[role] = view
        ctx.board.label_window(wid, ROLE_TEXT[role], decision["reasons"])
        lines.append(
            f"{wid}: {view['quantity_total']} x {money(view['unit_price_minor'])} "
            f"by {view['seller_id']}"
        )
        ctx.board.note(
            f"{wid}: {view['quantity_total']} units at {money(view['unit_price_minor'])} "
            f"from {view['seller_id']}, tipping point {view['min_participants']}, "
            f"at most {view['max_per_buyer']} per buyer; activates in "
            f"{seconds(view['activates_at']) - ctx.clock.now():.1f} s"
        )
        for r in decision["reasons"]:
            ctx.board.note(f"  {r['code']}: {r['text']}")
    # A join before the activation time is refused (if there is time left to try).
    early = ctx.windows["succeeds"]
    if seconds(early["activates_at"]) - ctx.clock.now() > 0.5:
        buyer = ctx.catalog.buyers[0].buyer_id
        await ctx.client.expect_error(
            "window_not_active",
            CommandKind.WINDOW_JOIN,
            {"join_id": "j-too-early", "buyer_id": buyer},
            window_id=early["window_id"],
        )
        lines.append("a join before activation is window_not_active")
    ctx.facts["windows"] = {role: v["window_id"] for role, v in ctx.windows.items()}
    return f"{len(wanted)} windows scheduled: " + "; ".join(lines)


def _check_window(
    ctx: Context, product: Product, view: dict[str, Any], decision: dict[str, Any]
) -> None:
    wid, t = view["window_id"], ctx.timings
    if view["decision_id"] != decision["decision_id"] or view["product_id"] != product.product_id:
        raise StepFailed(f"{wid}: decision {view['decision_id']}, product {view['product_id']}")
    if view["state"] != "scheduled" and ctx.clock.now() < seconds(view["activates_at"]):
        raise StepFailed(f"{wid}: {view['state']} before its activation time")
    listing = next(
        (
            x
            for x in ctx.catalog.listings_of(product.product_id)
            if x.seller_id == view["seller_id"]
        ),
        None,
    )
    if listing is None:
        raise StepFailed(
            f"{wid}: seller {view['seller_id']} has no listing of {product.product_id}"
        )
    price, total = view["unit_price_minor"], view["quantity_total"]
    if not listing.floor_price_minor <= price <= listing.list_price_minor:
        raise StepFailed(
            f"{wid}: price {money(price)} outside the listing's "
            f"{money(listing.floor_price_minor)}-{money(listing.list_price_minor)}"
        )
    accepted = ctx.catalog.accepted_quantity(product.product_id, price)
    if total > listing.stock or total > accepted:
        raise StepFailed(
            f"{wid}: {total} units, but stock is {listing.stock} and only {accepted} units "
            f"of demand accept {money(price)}"
        )
    low, per = view["min_participants"], view["max_per_buyer"]
    if low != t.window_min_participants or not 1 <= per <= t.window_max_per_buyer:
        raise StepFailed(f"{wid}: tipping point {low}, per-buyer limit {per}")
    if total < max(1, low) or per * (low - 1) >= total:
        raise StepFailed(
            f"{wid}: {total} units with tipping point {low} and {per} per buyer: "
            "a sell-out could miss the tipping point"
        )
    made = seconds(decision["made_at"])
    lead = seconds(view["activates_at"]) - made
    length = seconds(view["expires_at"]) - seconds(view["activates_at"])
    if abs(lead - t.window_lead_s) > _MS or abs(length - t.window_duration_s) > _MS:
        raise StepFailed(
            f"{wid}: activates {lead:.3f} s after its decision and lasts {length:.3f} s; "
            f"configured {t.window_lead_s:g} s and {t.window_duration_s:g} s"
        )
