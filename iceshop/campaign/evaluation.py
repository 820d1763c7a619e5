"""The bridge between the campaign actor and the pure policy, in both directions.

In: the product's :class:`~iceshop.protocol.ProductState` (listings, open intents, demand
score) plus the campaign's own record of windows and pending proposals become the
policy's frozen views, and ``Settings`` become ``PolicySettings``. Out: an
:class:`~iceshop.policy.Evaluation` becomes the wire's :class:`~iceshop.wire.DecisionView`.

Kept apart from the actor so the mapping can be read (and tested) without a turn.

``inputs`` on the wire are numbers (the contract: "every number the policy used"); the
policy's few text inputs (a listing's load ``status`` and ``choice.seller_id``) are
labels derived from numbers already present (the status from stock and slots, the chosen
seller from the offer or window), so they are left out of the view.
"""

from __future__ import annotations

from collections.abc import Callable

from iceshop.demand import DemandScore
from iceshop.policy import (
    MAX_REASONS,
    Evaluation,
    IntentView,
    ListingView,
    PolicySettings,
    SellerListing,
    SellerView,
    evaluate,
)
from iceshop.policy import Reason as PolicyReason
from iceshop.protocol import ProductState
from iceshop.settings import Settings
from iceshop.wire import DecisionView, OfferView, Reason, ShopError, format_time

from .state import ProductBook

__all__ = [
    "decision_view",
    "evaluate_product",
    "numeric_inputs",
    "policy_settings",
    "reservation_failed",
    "signature",
]

SellerSlots = Callable[[str], tuple[int, int]]
"""``seller_id -> (windows, pending proposals)`` the campaign holds for that seller."""


def policy_settings(settings: Settings) -> PolicySettings:
    """The node settings the policy reads, under the policy's names."""
    return PolicySettings(
        campaign_min_quantity=settings.campaign_min_quantity,
        window_lead_s=settings.window_lead_s,
        window_duration_s=settings.window_duration_s,
        window_min_participants=settings.window_min_participants,
        window_max_per_buyer=settings.window_max_per_buyer,
        cooldown_s=settings.campaign_cooldown_s,
        half_life_s=settings.demand_half_life_s,
    )


def evaluate_product(
    state: ProductState,
    book: ProductBook,
    seller_slots: SellerSlots,
    settings: PolicySettings,
    now: float,
) -> Evaluation:
    """Run the policy on what the product reports and what the campaign remembers.

    Intents past their ``expires_at`` are left out even if the product has not expired
    them yet: they would not be there to join.
    """
    supply = []
    for listing in state.listings:
        windows, pending = seller_slots(listing.seller_id)
        supply.append(
            SellerListing(
                seller=SellerView(
                    seller_id=listing.seller_id,
                    max_active_windows=listing.max_active_windows,
                    active_windows=windows,
                    pending_offers=pending,
                ),
                listing=ListingView(
                    seller_id=listing.seller_id,
                    product_id=state.product_id,
                    list_price_minor=listing.list_price_minor,
                    floor_price_minor=listing.floor_price_minor,
                    stock=listing.stock,
                    currency=listing.currency,
                ),
            )
        )
    intents = [
        IntentView(
            intent_id=i.intent_id,
            buyer_id=i.buyer_id,
            quantity=i.quantity,
            max_price_minor=i.max_price_minor,
        )
        for i in state.intents
        if i.expires_at > now
    ]
    demand = DemandScore(score=state.score, as_of=state.score_as_of)
    return evaluate(state.product_id, now, demand, supply, intents, settings, book.policy_state())


def signature(outcome: str, reasons: list[Reason] | tuple[PolicyReason, ...]) -> str:
    """What makes two evaluations the same decision: the outcome and the reason codes."""
    return outcome + ":" + ",".join(r.code for r in reasons)


def numeric_inputs(inputs: dict[str, int | float | str]) -> dict[str, int | float]:
    """The numbers among the policy's inputs (see the module docstring)."""
    return {k: v for k, v in inputs.items() if not isinstance(v, str)}


def _wire_reason(reason: PolicyReason) -> Reason:
    def number(value: int | float | str | None) -> int | float | None:
        return None if isinstance(value, str) else value

    return Reason(
        code=reason.code,
        text=reason.text,
        value=number(reason.value),
        threshold=number(reason.threshold),
    )


def decision_view(
    evaluation: Evaluation,
    decision_id: str,
    *,
    offer: OfferView | None = None,
    window_id: str | None = None,
) -> DecisionView:
    return DecisionView(
        decision_id=decision_id,
        product_id=evaluation.product_id,
        made_at=format_time(evaluation.made_at),
        outcome=evaluation.outcome,
        reasons=[_wire_reason(r) for r in evaluation.reasons[:MAX_REASONS]],
        offer=offer,
        window_id=window_id,
        inputs=numeric_inputs(evaluation.inputs),
    )


def reservation_failed(
    view: DecisionView, seller_id: str, quantity: int, error: ShopError
) -> DecisionView:
    """The decision of a proposal whose stock could not be set aside: ``deferred`` (the
    next evaluation sees the seller's current stock), the failure first, then the
    proposal's own reasons as context."""
    details = error.details or {}
    available = details.get("available")
    reason = Reason(
        code="reservation_failed",
        text=f"Seller {seller_id} could not set aside {quantity} units for the window "
        f"({error.code.value}: {error.message}); the product is evaluated again with the "
        "seller's current stock.",
        value=quantity,
        threshold=available if isinstance(available, int | float) else None,
    )
    return DecisionView(
        decision_id=view.decision_id,
        product_id=view.product_id,
        made_at=view.made_at,
        outcome="deferred",
        reasons=[reason, *view.reasons[: MAX_REASONS - 1]],
        offer=None,
        window_id=None,
        inputs=view.inputs,
    )
