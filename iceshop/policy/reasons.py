"""Reasons: the stable codes and the English sentences that explain a decision.

Each builder turns one comparison the policy made into a :class:`Reason` carrying the
compared ``value`` and ``threshold``, so a reader (or a dashboard) sees both the words and
the numbers. Codes are API; texts may be reworded.
"""

from __future__ import annotations

import msgspec

from iceshop.policy.assess import DemandAssessment
from iceshop.policy.model import CampaignState, Outcome, PolicySettings
from iceshop.policy.pricing import PriceChoice, SellerCandidate, SellerChoice, demand_viable
from iceshop.policy.sizing import WindowSize

__all__ = [
    "MAX_REASONS",
    "REASON_CODES",
    "Reason",
    "ReasonValue",
    "demand_reason",
    "ineligible_reason",
    "plain_number",
    "price_reason",
    "seller_reason",
    "size_reason",
    "supply_blocker",
    "time_blockers",
]

MAX_REASONS = 4
"""The contract's limit on principal reasons per decision."""
ReasonValue = int | float | str | None

REASON_CODES: dict[str, str] = {
    # window_proposed (and the context of a deferral)
    "demand_sufficient": "open intent quantity meets campaign_min_quantity",
    "price_accepted": "quantity accepting the chosen price meets campaign_min_quantity",
    "seller_selected": "the chosen seller and the quantity its window captures",
    "window_sized": "the window's quantity, tipping point and per-buyer limit",
    # no_action
    "demand_below_minimum": "open intent quantity is below campaign_min_quantity",
    "no_listing": "no seller lists the product",
    "price_gap": "no open intent accepts any seller's floor price",
    "accepted_below_minimum": "no seller's price is accepted by campaign_min_quantity units",
    "too_few_buyers": "no seller's price is accepted by min_participants buyers",
    "insufficient_stock": "no seller buyers accept has the stock a window needs",
    # deferred
    "seller_at_capacity": "every seller buyers accept has all its window slots in use",
    "window_open": "a window for the product is still scheduled or active",
    "cooldown_active": "the last window for the product was proposed within cooldown_s",
}
"""Every reason code the policy emits, with its meaning. Codes are stable API."""


class Reason(msgspec.Struct, frozen=True, kw_only=True):
    """One principal reason: a stable ``code`` (see :data:`REASON_CODES`), an English
    ``text``, and the ``value`` that was compared with ``threshold``."""

    code: str
    text: str
    value: ReasonValue
    threshold: ReasonValue


def time_blockers(now: float, settings: PolicySettings, state: CampaignState) -> list[Reason]:
    """Reasons that only time removes: an open window, a running cooldown."""
    reasons: list[Reason] = []
    if state.open_windows > 0:
        reasons.append(
            Reason(
                code="window_open",
                text=f"{state.open_windows} window(s) for this product are still "
                "scheduled or active; the next waits until they close.",
                value=state.open_windows,
                threshold=0,
            )
        )
    if state.last_proposed_at is not None:
        elapsed = now - state.last_proposed_at
        if elapsed < settings.cooldown_s:
            reasons.append(
                Reason(
                    code="cooldown_active",
                    text=f"The last window for this product was proposed "
                    f"{_duration(elapsed)} ago; the cooldown is {_duration(settings.cooldown_s)}.",
                    value=plain_number(elapsed),
                    threshold=plain_number(settings.cooldown_s),
                )
            )
    return reasons


def supply_blocker(
    product_id: str,
    assessment: DemandAssessment,
    candidates: list[SellerCandidate],
    settings: PolicySettings,
) -> Reason | None:
    """The ``no_action`` reason when no listing has enough demand at its price."""
    if not candidates:
        return Reason(
            code="no_listing",
            text=f"No seller lists product {product_id}.",
            value=0,
            threshold=1,
        )
    priced = [c for c in candidates if c.price is not None]
    if not priced:
        lowest = min(candidates, key=lambda c: (c.listing.floor_price_minor, c.seller_id))
        highest = assessment.highest_max_price_minor or 0
        cur = lowest.listing.currency
        return Reason(
            code="price_gap",
            text=f"No buyer accepts any seller's floor price: buyers accept at most "
            f"{_money(highest, cur)}, the lowest floor is "
            f"{_money(lowest.listing.floor_price_minor, cur)} ({lowest.seller_id}).",
            value=highest,
            threshold=lowest.listing.floor_price_minor,
        )
    if any(demand_viable(c, settings) for c in priced):
        return None
    return _acceptance_reason(priced, settings)


def _acceptance_reason(priced: list[SellerCandidate], settings: PolicySettings) -> Reason:
    """Why no priced listing is demand-viable: too little quantity, else too few buyers."""
    best = min(priced, key=lambda c: (-_accepted(c), c.seller_id))
    price = best.price
    assert price is not None
    cur = best.listing.currency
    if price.accepted_quantity < settings.campaign_min_quantity:
        return Reason(
            code="accepted_below_minimum",
            text=f"At best {price.accepted_quantity} units accept a seller's price "
            f"({best.seller_id} at {_money(price.unit_price_minor, cur)}), below the "
            f"campaign minimum of {settings.campaign_min_quantity}.",
            value=price.accepted_quantity,
            threshold=settings.campaign_min_quantity,
        )
    enough = [c for c in priced if _accepted(c) >= settings.campaign_min_quantity]
    most = min(enough, key=lambda c: (-_buyers(c), c.seller_id))
    return Reason(
        code="too_few_buyers",
        text=f"At best {_buyers(most)} buyers accept a seller's price ({most.seller_id}), "
        f"fewer than the tipping point of {settings.tipping_point}.",
        value=_buyers(most),
        threshold=settings.tipping_point,
    )


def ineligible_reason(viable: list[SellerCandidate]) -> tuple[Outcome, Reason]:
    """Why no demand-viable listing can take a window: capacity (deferred) or stock."""
    full = [c for c in viable if c.load.status == "at_capacity"]
    if full:
        best = min(full, key=lambda c: (-c.captured_quantity, c.seller_id))
        load = best.load
        return "deferred", Reason(
            code="seller_at_capacity",
            text=f"Buyers accept {len(full)} seller(s) that have every window slot in use; "
            f"the best, {best.seller_id}, has {load.slots_used} of "
            f"{load.max_active_windows}.",
            value=load.slots_used,
            threshold=load.max_active_windows,
        )
    best = min(viable, key=lambda c: (-c.listing.stock, c.seller_id))
    return "no_action", Reason(
        code="insufficient_stock",
        text=f"No seller whose price buyers accept has the {best.load.min_stock} units a "
        f"window needs; the most stock is {best.listing.stock} ({best.seller_id}).",
        value=best.listing.stock,
        threshold=best.load.min_stock,
    )


def demand_reason(assessment: DemandAssessment, settings: PolicySettings) -> Reason:
    """``demand_sufficient`` or ``demand_below_minimum``: open quantity vs the minimum."""
    quantity, minimum = assessment.open_quantity, settings.campaign_min_quantity
    verdict = "meeting" if assessment.meets_minimum else "below"
    return Reason(
        code="demand_sufficient" if assessment.meets_minimum else "demand_below_minimum",
        text=f"Open demand is {quantity} units from {assessment.buyers} buyers, {verdict} "
        f"the campaign minimum of {minimum}; demand score {assessment.score:.1f} "
        f"(half-life {_duration(settings.half_life_s)}).",
        value=quantity,
        threshold=minimum,
    )


def price_reason(chosen: SellerCandidate, price: PriceChoice, settings: PolicySettings) -> Reason:
    """``price_accepted``: quantity accepting the chosen price vs the minimum."""
    cur = chosen.listing.currency
    return Reason(
        code="price_accepted",
        text=f"At {_money(price.unit_price_minor, cur)} (floor "
        f"{_money(price.floor_price_minor, cur)}, list {_money(price.list_price_minor, cur)}) "
        f"{price.accepted_buyers} buyers accept {price.accepted_quantity} units; the "
        f"campaign minimum is {settings.campaign_min_quantity}.",
        value=price.accepted_quantity,
        threshold=settings.campaign_min_quantity,
    )


def seller_reason(choice: SellerChoice, viable: list[SellerCandidate]) -> Reason:
    """``seller_selected``: the chosen seller's captured quantity vs the runner-up's."""
    chosen, runner_up = choice.chosen, choice.runner_up
    load = chosen.load
    text = (
        f"Seller {chosen.seller_id} captures {chosen.captured_quantity} units with "
        f"{load.slots_used} of {load.max_active_windows} window slots in use"
    )
    if runner_up is not None:
        text += f"; next best {runner_up.seller_id} captures {runner_up.captured_quantity}"
    else:
        text += "; no other eligible seller"
    skipped = [c.seller_id for c in viable if c.load.status == "at_capacity"]
    if skipped:
        text += f"; skipped at capacity: {', '.join(skipped)}"
    return Reason(
        code="seller_selected",
        text=text + ".",
        value=chosen.captured_quantity,
        threshold=runner_up.captured_quantity if runner_up is not None else None,
    )


def size_reason(
    chosen: SellerCandidate, price: PriceChoice, size: WindowSize, settings: PolicySettings
) -> Reason:
    """``window_sized``: the window's quantity vs the seller's stock."""
    text = (
        f"Window of {size.quantity_total} units (accepted demand {price.accepted_quantity}, "
        f"stock {chosen.listing.stock}), tipping point {size.min_participants} buyers, at "
        f"most {size.max_per_buyer} per buyer"
    )
    if size.max_per_buyer < settings.window_max_per_buyer:
        text += (
            f" (lowered from {settings.window_max_per_buyer} so that a sell-out always "
            "reaches the tipping point)"
        )
    return Reason(
        code="window_sized",
        text=text + ".",
        value=size.quantity_total,
        threshold=chosen.listing.stock,
    )


def _accepted(c: SellerCandidate) -> int:
    return c.price.accepted_quantity if c.price is not None else 0


def _buyers(c: SellerCandidate) -> int:
    return c.price.accepted_buyers if c.price is not None else 0


def plain_number(value: float) -> int | float:
    """Whole floats as ints, so ``inputs`` and reasons read ``3600`` not ``3600.0``."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# ISO 4217 currencies whose minor unit is not a hundredth.
_ZERO_DECIMAL = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND"}
    | {"VUV", "XAF", "XOF", "XPF"}
)
_THREE_DECIMAL = frozenset({"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"})


def _money(minor: int, currency: str) -> str:
    """Minor units as a human amount, e.g. ``8800, "TRY"`` -> ``"88.00 TRY"``."""
    digits = 0 if currency in _ZERO_DECIMAL else 3 if currency in _THREE_DECIMAL else 2
    if digits == 0:
        return f"{minor:,} {currency}"
    major, rest = divmod(minor, 10**digits)
    return f"{major:,}.{rest:0{digits}d} {currency}"


def _duration(seconds: float) -> str:
    """A short human duration: ``21600`` -> ``"6 h"``, ``90`` -> ``"1.5 min"``."""
    for unit, size in (("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{round(seconds / size, 1):g} {unit}"
    return f"{round(seconds, 1):g} s"
