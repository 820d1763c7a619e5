"""The policy's inputs: settings and read-only views of intents, sellers and listings.

Views are what the campaign actor knows at evaluation time, copied into frozen values so
the policy can never reach back into live actor state. Each validates its own invariants
(a listing's floor never exceeds its list price, quantities are positive, ...): a value
that exists is a value the policy can trust.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from iceshop.demand import DEFAULT_HALF_LIFE_S

__all__ = [
    "CampaignState",
    "InputValue",
    "IntentView",
    "ListingView",
    "LoadStatus",
    "Outcome",
    "PolicySettings",
    "SellerListing",
    "SellerView",
    "require",
]


Outcome = Literal["window_proposed", "no_action", "deferred"]
"""``deferred``: only time is missing; ``no_action``: the inputs themselves must change."""
LoadStatus = Literal["eligible", "at_capacity", "insufficient_stock"]
InputValue = int | float | str
"""A value in a decision's flat ``inputs`` map."""


class PolicySettings(msgspec.Struct, frozen=True, kw_only=True):
    """The policy's knobs (node settings of the same names)."""

    campaign_min_quantity: int = 10
    """Open intent quantity below which no window is proposed (also applied to the
    quantity that accepts the chosen price)."""
    window_lead_s: float = 300.0
    """Seconds from proposal to activation."""
    window_duration_s: float = 3600.0
    """Seconds a window stays active."""
    window_min_participants: int = 3
    """The tipping point: distinct buyers a window needs to succeed."""
    window_max_per_buyer: int = 5
    """Upper bound of a window's per-buyer limit (sizing may lower it)."""
    cooldown_s: float = 1800.0
    """Seconds after a proposal for a product before the next one."""
    half_life_s: float = DEFAULT_HALF_LIFE_S
    """Half-life of the demand score."""

    def __post_init__(self) -> None:
        require(self.campaign_min_quantity >= 1, "campaign_min_quantity must be >= 1")
        require(self.window_lead_s >= 0, "window_lead_s must be >= 0")
        require(self.window_duration_s > 0, "window_duration_s must be > 0")
        require(self.window_min_participants >= 0, "window_min_participants must be >= 0")
        require(self.window_max_per_buyer >= 1, "window_max_per_buyer must be >= 1")
        require(self.cooldown_s >= 0, "cooldown_s must be >= 0")
        require(self.half_life_s > 0, "half_life_s must be > 0")

    @property
    def tipping_point(self) -> int:
        """``max(1, window_min_participants)``: buyers and units a window needs at least."""
        return max(1, self.window_min_participants)


class IntentView(msgspec.Struct, frozen=True, kw_only=True):
    """One open intent for the product under evaluation."""

    intent_id: str
    buyer_id: str
    quantity: int
    max_price_minor: int

    def __post_init__(self) -> None:
        require(self.quantity >= 1, "quantity must be >= 1")
        require(self.max_price_minor >= 0, "max_price_minor must be >= 0")

    def accepts(self, price_minor: int) -> bool:
        """An intent accepts a price ``p`` when ``p <= max_price_minor``."""
        return price_minor <= self.max_price_minor


class SellerView(msgspec.Struct, frozen=True, kw_only=True):
    """A seller's capacity: ``active_windows`` counts its scheduled and active windows,
    ``pending_offers`` its offers awaiting approval (both hold a window slot)."""

    seller_id: str
    max_active_windows: int = 3
    active_windows: int = 0
    pending_offers: int = 0

    def __post_init__(self) -> None:
        require(self.max_active_windows >= 0, "max_active_windows must be >= 0")
        require(self.active_windows >= 0, "active_windows must be >= 0")
        require(self.pending_offers >= 0, "pending_offers must be >= 0")

    @property
    def slots_used(self) -> int:
        return self.active_windows + self.pending_offers


class ListingView(msgspec.Struct, frozen=True, kw_only=True):
    """A seller's listing of the product; ``stock`` is what lies outside any window."""

    seller_id: str
    product_id: str
    list_price_minor: int
    floor_price_minor: int
    stock: int
    currency: str = "TRY"

    def __post_init__(self) -> None:
        require(self.floor_price_minor >= 0, "floor_price_minor must be >= 0")
        require(
            self.floor_price_minor <= self.list_price_minor,
            "floor_price_minor must be <= list_price_minor",
        )
        require(self.stock >= 0, "stock must be >= 0")


class SellerListing(msgspec.Struct, frozen=True, kw_only=True):
    """A seller together with its listing of the product: one candidate supply."""

    seller: SellerView
    listing: ListingView


class CampaignState(msgspec.Struct, frozen=True, kw_only=True):
    """What the campaign actor remembers about the product between evaluations."""

    last_proposed_at: float | None = None
    """When the last window for the product was proposed (None: never)."""
    open_windows: int = 0
    """The product's windows (and pending offers) still scheduled or active."""

    def __post_init__(self) -> None:
        require(self.open_windows >= 0, "open_windows must be >= 0")


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
