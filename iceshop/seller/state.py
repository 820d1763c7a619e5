"""A seller's durable state: profile, listings, stock held by windows, offers.

Folded from tagged events (tags spelled out as ``seller.*`` so a class rename never
breaks a stored journal). Stock moves only through events that name the window they
concern (``StockTaken`` / ``StockGiven``), which is what makes reserving and returning
idempotent by ``window_id``: the record of a window's hold says what was taken and
whether it came back.
"""

from __future__ import annotations

from typing import Any

import msgspec

from iceshop.wire.views import OfferStatus

__all__ = [
    "Listing",
    "ListingUpserted",
    "OfferCreated",
    "OfferRecord",
    "OfferStatusSet",
    "SellerEvent",
    "SellerProfile",
    "SellerRegistered",
    "SellerState",
    "StockGiven",
    "StockHold",
    "StockTaken",
]


class SellerProfile(msgspec.Struct, frozen=True):
    name: str
    max_active_windows: int
    auto_approve: bool


class Listing(msgspec.Struct, frozen=True):
    product_id: str
    title: str
    list_price_minor: int
    floor_price_minor: int
    stock: int
    currency: str


class StockHold(msgspec.Struct, frozen=True):
    """Stock taken out of a listing for one window (and the reply that was given)."""

    product_id: str
    quantity: int
    stock_left: int
    returned: int = 0
    closed: bool = False


class OfferRecord(msgspec.Struct, frozen=True):
    offer_id: str
    decision_id: str
    product_id: str
    window_id: str
    unit_price_minor: int
    currency: str
    quantity: int
    min_participants: int
    max_per_buyer: int
    activates_at: float
    expires_at: float
    status: OfferStatus = "pending"


# -- events ------------------------------------------------------------------------------


class SellerRegistered(msgspec.Struct, frozen=True, tag="seller.registered"):
    profile: SellerProfile


class ListingUpserted(msgspec.Struct, frozen=True, tag="seller.listing_upserted"):
    listing: Listing


class StockTaken(msgspec.Struct, frozen=True, tag="seller.stock_taken"):
    window_id: str
    product_id: str
    quantity: int
    at: float


class StockGiven(msgspec.Struct, frozen=True, tag="seller.stock_returned"):
    window_id: str
    product_id: str
    quantity: int
    at: float


class OfferCreated(msgspec.Struct, frozen=True, tag="seller.offer_created"):
    offer: OfferRecord
    at: float


class OfferStatusSet(msgspec.Struct, frozen=True, tag="seller.offer_status"):
    offer_id: str
    status: OfferStatus
    at: float


SellerEvent = (
    SellerRegistered | ListingUpserted | StockTaken | StockGiven | OfferCreated | OfferStatusSet
)


class SellerState(msgspec.Struct):
    """Everything a seller remembers; also its snapshot value."""

    profile: SellerProfile | None = None
    listings: dict[str, Listing] = {}
    holds: dict[str, StockHold] = {}
    offers: dict[str, OfferRecord] = {}
    #: Registrations that changed the profile, counted (numbers their audit records).
    registrations: int = 0

    def apply(self, event: Any) -> None:
        """Fold one event in (deterministic; never fails on an event it produced)."""
        match event:
            case SellerRegistered(profile=profile):
                self.profile = profile
                self.registrations += 1
            case ListingUpserted(listing=listing):
                self.listings[listing.product_id] = listing
            case StockTaken(window_id=window_id, product_id=product_id, quantity=quantity):
                listing = self.listings[product_id]
                left = listing.stock - quantity
                self.listings[product_id] = msgspec.structs.replace(listing, stock=left)
                self.holds[window_id] = StockHold(product_id, quantity, left)
            case StockGiven(window_id=window_id, product_id=product_id, quantity=quantity):
                listing = self.listings[product_id]
                self.listings[product_id] = msgspec.structs.replace(
                    listing, stock=listing.stock + quantity
                )
                hold = self.holds[window_id]
                self.holds[window_id] = msgspec.structs.replace(
                    hold, returned=quantity, closed=True
                )
            case OfferCreated(offer=offer):
                self.offers[offer.offer_id] = offer
            case OfferStatusSet(offer_id=offer_id, status=status):
                self.offers[offer_id] = msgspec.structs.replace(
                    self.offers[offer_id], status=status
                )
            case _:
                raise TypeError(f"not a seller event: {event!r}")
