"""Steps 1-3: buyers and sellers register, sellers list products, buyers send intents.

Each step sends its commands concurrently (as many clients would) and checks every
reply, then shows one rule of the contract at work: registration is an upsert, a listing
needs a registered seller, an intent is idempotent by its id.
"""

# Turkish text is meant: its dotless i is a letter, not a lookalike.
# ruff: noqa: RUF001

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any

from iceshop.demo.context import Context, run_all, seconds
from iceshop.demo.data import Buyer, Intent, Listing, Seller
from iceshop.demo.steps import StepFailed
from iceshop.wire import CommandKind

__all__ = ["buyers_register", "intents", "sellers_register"]

#: Intents live six hours: long enough for the demo, short enough to be realistic.
INTENT_TTL_S = 21_600


async def buyers_register(ctx: Context) -> str:
    buyers = ctx.catalog.buyers

    async def register(b: Buyer) -> None:
        body = {
            "name": b.name,
            "phone": b.phone,
            "locale": b.locale,
            "whatsapp_opt_in": b.whatsapp_opt_in,
        }
        data = await ctx.client.ok(CommandKind.BUYER_REGISTER, body, buyer_id=b.buyer_id)
        if data != {"buyer_id": b.buyer_id, "created": True}:
            raise StepFailed(f"buyer {b.buyer_id}: expected a new record, got {data}")

    await run_all(partial(register, b) for b in buyers)

    first = buyers[0]
    again = await ctx.client.ok(
        CommandKind.BUYER_REGISTER,
        {"name": first.name, "phone": first.phone},
        buyer_id=first.buyer_id,
    )
    if again.get("created") is not False:
        raise StepFailed(f"registering {first.buyer_id} again created a record: {again}")
    await ctx.client.expect_error(
        "invalid_request",
        CommandKind.BUYER_REGISTER,
        {"name": "Numarasız Müşteri", "phone": "0555 123 45 67"},
        buyer_id="b-bad-phone",
    )
    locales = Counter(b.locale for b in buyers)
    opted = sum(b.whatsapp_opt_in for b in buyers)
    ctx.board.note(f"e.g. {first.buyer_id} {first.name} {first.phone} ({first.locale})")
    return (
        f"{len(buyers)} buyers ({locales['tr']} tr, {locales['en']} en, {opted} opted in to "
        "WhatsApp); registering again is an upsert; a malformed phone is refused"
    )


async def sellers_register(ctx: Context) -> str:
    catalog = ctx.catalog

    async def register(s: Seller) -> None:
        body = {"name": s.name, "max_active_windows": s.max_active_windows}
        data = await ctx.client.ok(CommandKind.SELLER_REGISTER, body, seller_id=s.seller_id)
        if data != {"seller_id": s.seller_id, "created": True}:
            raise StepFailed(f"seller {s.seller_id}: expected a new record, got {data}")

    async def upsert(x: Listing) -> None:
        body = {
            "product_id": x.product_id,
            "title": x.title,
            "list_price_minor": x.list_price_minor,
            "floor_price_minor": x.floor_price_minor,
            "stock": x.stock,
            "currency": x.currency,
        }
        data = await ctx.client.ok(CommandKind.LISTING_UPSERT, body, seller_id=x.seller_id)
        expected = {"seller_id": x.seller_id, "product_id": x.product_id, "stock": x.stock}
        if data != expected:
            raise StepFailed(
                f"listing {x.seller_id}/{x.product_id}: expected {expected}, got {data}"
            )

    await run_all(partial(register, s) for s in catalog.sellers)
    await run_all(partial(upsert, x) for x in catalog.listings)
    await ctx.client.expect_error(
        "unknown_seller",
        CommandKind.LISTING_UPSERT,
        {
            "product_id": "cay-bardagi-seti",
            "title": "Kayıtsız satıcı",
            "list_price_minor": 10_000,
            "floor_price_minor": 9_000,
            "stock": 5,
        },
        seller_id="kayitsiz-satici",
    )
    for x in catalog.listings:
        ctx.board.note(
            f"{x.seller_id} lists {x.product_id}: {x.list_price_minor / 100:.2f} "
            f"(floor {x.floor_price_minor / 100:.2f}) {x.currency}, stock {x.stock}"
        )
    stock = sum(x.stock for x in catalog.listings)
    return (
        f"{len(catalog.sellers)} sellers, {len(catalog.listings)} listings of "
        f"{len(catalog.products)} products ({stock} units); a listing of an unknown seller "
        "is refused"
    )


def _intent_body(i: Intent, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "intent_id": i.intent_id,
        "product_id": i.product_id,
        "quantity": i.quantity,
        "max_price_minor": i.max_price_minor,
        "ttl_s": INTENT_TTL_S,
    }
    body.update(changes)
    return body


async def intents(ctx: Context) -> str:
    catalog = ctx.catalog
    replies: dict[str, dict[str, Any]] = {}
    sent_at = ctx.clock.now()

    async def submit(i: Intent) -> None:
        data = await ctx.client.ok(CommandKind.INTENT_SUBMIT, _intent_body(i), buyer_id=i.buyer_id)
        if data.get("intent_id") != i.intent_id or data.get("status") != "open":
            raise StepFailed(f"intent {i.intent_id}: expected it open, got {data}")
        expires = seconds(data["expires_at"]) - sent_at
        if not INTENT_TTL_S - 1 <= expires <= INTENT_TTL_S + 60:
            raise StepFailed(
                f"intent {i.intent_id}: expires {expires:.0f} s after it was sent, "
                f"its ttl is {INTENT_TTL_S} s"
            )
        replies[i.intent_id] = data

    # One burst per product: a product's demand arrives together, as after an announcement.
    for product in catalog.products:
        await run_all(
            (partial(submit, i) for i in catalog.intents_of(product.product_id)), limit=64
        )

    sample = catalog.intents[0]
    replay = await ctx.client.ok(
        CommandKind.INTENT_SUBMIT, _intent_body(sample), buyer_id=sample.buyer_id
    )
    if replay != replies[sample.intent_id]:
        raise StepFailed(
            f"replaying intent {sample.intent_id} gave {replay}, "
            f"not the first reply {replies[sample.intent_id]}"
        )
    await ctx.client.expect_error(
        "idempotency_conflict",
        CommandKind.INTENT_SUBMIT,
        _intent_body(sample, quantity=sample.quantity + 1),
        buyer_id=sample.buyer_id,
    )
    await ctx.client.expect_error(
        "unknown_product",
        CommandKind.INTENT_SUBMIT,
        _intent_body(sample, intent_id="i-yok-boyle-urun", product_id="yok-boyle-urun"),
        buyer_id=sample.buyer_id,
    )
    for product in catalog.products:
        mine = catalog.intents_of(product.product_id)
        limits = [i.max_price_minor for i in mine]
        ctx.board.note(
            f"{product.product_id}: {len(mine)} intents, "
            f"{sum(i.quantity for i in mine)} units, limits "
            f"{min(limits) / 100:.0f}-{max(limits) / 100:.0f} TRY"
        )
    buyers = len({i.buyer_id for i in catalog.intents})
    return (
        f"{len(catalog.intents)} intents from {buyers} buyers; a replay returns the first "
        "reply, a changed replay is idempotency_conflict, an unknown product is refused"
    )
