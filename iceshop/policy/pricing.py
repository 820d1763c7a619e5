"""Choosing a price for each listing, and the seller whose window would sell the most.

The price rule keeps every buyer who accepts the seller's floor and then takes the highest
price that keeps them; the seller rule prefers the window that can actually sell the most.
Both are total orders with a final tie-break on ids, so input order never matters.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import msgspec

from iceshop.policy.assess import LoadAssessment, seller_load
from iceshop.policy.model import (
    IntentView,
    ListingView,
    PolicySettings,
    SellerListing,
    SellerView,
    require,
)

__all__ = [
    "PriceChoice",
    "SellerCandidate",
    "SellerChoice",
    "assess_candidate",
    "choose_price",
    "choose_seller",
    "demand_viable",
]


class PriceChoice(msgspec.Struct, frozen=True, kw_only=True):
    """A unit price for one listing and the open demand that accepts it.

    Cannot be constructed outside ``[floor_price_minor, list_price_minor]``.
    """

    unit_price_minor: int
    floor_price_minor: int
    list_price_minor: int
    accepted_quantity: int
    accepted_buyers: int

    def __post_init__(self) -> None:
        require(
            self.floor_price_minor <= self.unit_price_minor <= self.list_price_minor,
            "unit_price_minor must lie within [floor_price_minor, list_price_minor]",
        )
        require(self.accepted_quantity >= 1, "a price choice needs accepted demand")


def choose_price(listing: ListingView, intents: Sequence[IntentView]) -> PriceChoice | None:
    """The price in ``[floor, list]`` that the most intent quantity accepts; ties go to the
    highest such price. None when no intent accepts even the floor (then: no window).

    Accepted quantity can only fall as the price rises, so the floor always captures the
    most. The tie rule then picks the highest price that loses none of those buyers:
    ``min(list, lowest max_price_minor among intents that accept the floor)``. Every
    candidate price is one of ``list`` or a buyer's limit that is ``>= floor`` and, being
    clamped by ``list``, lies within the bounds.

    Why most quantity first: a window succeeds only when enough buyers join, so the policy
    never trades away a buyer for revenue; the seller's floor already says what price is
    acceptable to them. Why the highest price among ties: at equal demand a higher price
    costs no buyer anything they did not say they would pay, and it is the seller's revenue.
    """
    accepting = [i for i in intents if i.accepts(listing.floor_price_minor)]
    if not accepting:
        return None
    price = min(listing.list_price_minor, min(i.max_price_minor for i in accepting))
    return PriceChoice(
        unit_price_minor=price,
        floor_price_minor=listing.floor_price_minor,
        list_price_minor=listing.list_price_minor,
        accepted_quantity=sum(i.quantity for i in accepting),
        accepted_buyers=len({i.buyer_id for i in accepting}),
    )


class SellerCandidate(msgspec.Struct, frozen=True, kw_only=True):
    """One seller's listing with its load and best price."""

    seller: SellerView
    listing: ListingView
    load: LoadAssessment
    price: PriceChoice | None

    @property
    def seller_id(self) -> str:
        return self.seller.seller_id

    @property
    def captured_quantity(self) -> int:
        """What its window could sell: accepted quantity capped by stock (0 if no price)."""
        if self.price is None:
            return 0
        return min(self.price.accepted_quantity, self.listing.stock)


class SellerChoice(msgspec.Struct, frozen=True, kw_only=True):
    """The chosen candidate, its price, and every contender in rank order
    (``ranked[0]`` is the chosen one)."""

    chosen: SellerCandidate
    price: PriceChoice
    ranked: tuple[SellerCandidate, ...]

    @property
    def runner_up(self) -> SellerCandidate | None:
        return self.ranked[1] if len(self.ranked) > 1 else None


def assess_candidate(
    supply: SellerListing, intents: Sequence[IntentView], *, min_stock: int = 1
) -> SellerCandidate:
    """Load and price of one seller's listing against the open intents."""
    return SellerCandidate(
        seller=supply.seller,
        listing=supply.listing,
        load=seller_load(supply.seller, supply.listing, min_stock=min_stock),
        price=choose_price(supply.listing, intents),
    )


def demand_viable(candidate: SellerCandidate, settings: PolicySettings) -> bool:
    """Demand-side viability: enough quantity and buyers accept this listing's price."""
    price = candidate.price
    return (
        price is not None
        and price.accepted_quantity >= settings.campaign_min_quantity
        and price.accepted_buyers >= settings.tipping_point
    )


def choose_seller(candidates: Sequence[SellerCandidate]) -> SellerChoice | None:
    """Rank eligible, priced candidates; None when there is none.

    Rule, in order: the most ``captured_quantity`` (accepted demand capped by stock: what
    the window can actually sell); then the lower load ratio (spread windows across
    sellers); then the lower unit price (better for buyers); then ``seller_id`` (so the
    result never depends on input order).
    """
    ranked = sorted(
        (c for c in candidates if c.load.eligible and c.price is not None), key=_seller_rank
    )
    if not ranked or ranked[0].price is None:
        return None
    return SellerChoice(chosen=ranked[0], price=ranked[0].price, ranked=tuple(ranked))


def _seller_rank(candidate: SellerCandidate) -> tuple[int, Fraction, int, str]:
    price = candidate.price.unit_price_minor if candidate.price is not None else 0
    return (-candidate.captured_quantity, candidate.load.load_ratio, price, candidate.seller_id)
