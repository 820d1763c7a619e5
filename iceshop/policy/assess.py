"""Assessing the two sides: the product's open demand and a seller's load.

Both are summaries the later steps rank and explain; neither decides anything on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import msgspec

from iceshop.policy.model import (
    IntentView,
    ListingView,
    LoadStatus,
    PolicySettings,
    SellerView,
    require,
)

__all__ = [
    "DemandAssessment",
    "LoadAssessment",
    "PriceLevel",
    "score_demand",
    "seller_load",
]


class PriceLevel(msgspec.Struct, frozen=True, kw_only=True):
    """Open quantity and intents whose ``max_price_minor`` is exactly this price."""

    max_price_minor: int
    quantity: int
    intents: int


class DemandAssessment(msgspec.Struct, frozen=True, kw_only=True):
    """The product's open demand. ``price_levels`` is the distribution of buyers' price
    limits weighted by quantity, highest price first."""

    open_intents: int
    open_quantity: int
    buyers: int
    score: float
    price_levels: tuple[PriceLevel, ...]
    campaign_min_quantity: int

    @property
    def meets_minimum(self) -> bool:
        return self.open_quantity >= self.campaign_min_quantity

    @property
    def highest_max_price_minor(self) -> int | None:
        return self.price_levels[0].max_price_minor if self.price_levels else None

    @property
    def lowest_max_price_minor(self) -> int | None:
        return self.price_levels[-1].max_price_minor if self.price_levels else None

    @property
    def median_max_price_minor(self) -> int | None:
        """The highest price that at least half of the open quantity accepts."""
        accepted = 0
        for level in self.price_levels:
            accepted += level.quantity
            if 2 * accepted >= self.open_quantity:
                return level.max_price_minor
        return None


def score_demand(
    open_intents: Sequence[IntentView], score: float, settings: PolicySettings
) -> DemandAssessment:
    """Summarise open demand.

    Rule: ``open_quantity`` is the sum of open intents' quantities, ``buyers`` the number of
    distinct buyers; ``score`` (the decayed momentum, see :mod:`iceshop.demand`) is carried
    as given. Only ``open_quantity`` gates a campaign; the score explains it.
    """
    levels: dict[int, tuple[int, int]] = {}
    for intent in open_intents:
        quantity, count = levels.get(intent.max_price_minor, (0, 0))
        levels[intent.max_price_minor] = (quantity + intent.quantity, count + 1)
    return DemandAssessment(
        open_intents=len(open_intents),
        open_quantity=sum(i.quantity for i in open_intents),
        buyers=len({i.buyer_id for i in open_intents}),
        score=score,
        price_levels=tuple(
            PriceLevel(max_price_minor=price, quantity=quantity, intents=count)
            for price, (quantity, count) in sorted(levels.items(), reverse=True)
        ),
        campaign_min_quantity=settings.campaign_min_quantity,
    )


class LoadAssessment(msgspec.Struct, frozen=True, kw_only=True):
    """Whether a seller's listing can take a new window now, and why not."""

    seller_id: str
    slots_used: int
    max_active_windows: int
    stock: int
    min_stock: int
    status: LoadStatus

    @property
    def eligible(self) -> bool:
        return self.status == "eligible"

    @property
    def load_ratio(self) -> Fraction:
        """``slots_used / max_active_windows``; a seller taking no windows counts as full."""
        if self.max_active_windows == 0:
            return Fraction(1)
        return Fraction(self.slots_used, self.max_active_windows)


def seller_load(seller: SellerView, listing: ListingView, *, min_stock: int = 1) -> LoadAssessment:
    """Assess one seller's listing.

    Rule, first match wins: ``insufficient_stock`` when ``stock < min_stock`` (stock only
    comes back through the seller or a closing window, so this is checked first);
    ``at_capacity`` when ``active_windows + pending_offers >= max_active_windows``;
    otherwise ``eligible``. :func:`evaluate` passes ``min_stock = max(1,
    window_min_participants)``: a smaller window could never reach its tipping point.
    """
    require(seller.seller_id == listing.seller_id, "listing belongs to another seller")
    status: LoadStatus = "eligible"
    if listing.stock < min_stock:
        status = "insufficient_stock"
    elif seller.slots_used >= seller.max_active_windows:
        status = "at_capacity"
    return LoadAssessment(
        seller_id=seller.seller_id,
        slots_used=seller.slots_used,
        max_active_windows=seller.max_active_windows,
        stock=listing.stock,
        min_stock=min_stock,
        status=status,
    )
