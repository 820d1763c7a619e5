"""Messages between the shop's actors (internal; the wire contract is ``iceshop.wire``).

Actor kinds and their keys::

    buyer    buyer_id     registration, the buyer's intents (one open per product)
    seller   seller_id    registration, listings (price bounds, stock), offers
    product  product_id   demand aggregator + catalog: listings of every seller,
                          open intents, decayed demand score, notification requests
    window   window_id    one flash window: timers, joins, stock, outcome
    decision decision_id  one campaign decision (read by ``decisions.<id>.get``)
    campaign "main"       the singleton that listens to demand and proposes windows

A command from the wire reaches its actor as :class:`Request` (the decoded body plus the
ids its subject carried). Actors answer with a view from ``iceshop.wire.views`` or a
:class:`~iceshop.wire.errors.ShopError` *value* (never raised: a raised exception is a
bug and goes to supervision). Everything else below is actor-to-actor; times are wall
seconds since the epoch (floats); money in minor units.

Flows (who tells whom; "after commit" = ``tell_after_commit``)::

    seller  --request ClaimCurrency (reply: CurrencyGranted | ShopError)> product
            (only for a new listing or a currency change; iceshop/product/currency.py)
    seller  --ListingChanged (after commit)-------------------------> product
    buyer   --request AddIntent (reply: IntentAccepted | ShopError)--> product
    buyer   --RemoveIntent (after commit: cancel, expiry, match)-----> product
    product --DemandChanged event on NATS-----------------------------> campaign
    campaign--request ProductSnapshot (reply: ProductState)----------> product
    campaign--request ReserveStock (reply: StockReserved | ShopError)> seller
    campaign--RecordDecision (after commit)--------------------------> decision
    campaign--CreateOffer (after commit)------------------------------> seller
    seller  --OfferDecided (after commit)-----------------------------> campaign
    campaign--CreateWindow (after commit)-----------------------------> window
    window  --request CheckBuyer (reply: BuyerKnown | ShopError)------> buyer
    window  --IntentMatched / ReservationReleased (after commit)-----> buyer
    window  --WindowActivated (after commit)--------------------------> product
    window  --ReturnStock (after commit, at close/cancel)------------> seller
    window  --WindowEnded (after commit)------------------------------> campaign
    decision<-OfferStatusChanged / WindowLinked -----------------------
"""

from __future__ import annotations

import msgspec

from iceshop.wire.commands import Command, CommandKind
from iceshop.wire.views import DecisionView

__all__ = [
    "AddIntent",
    "BuyerKnown",
    "CheckBuyer",
    "CreateOffer",
    "CreateWindow",
    "DemandSignal",
    "Evaluate",
    "IntentAccepted",
    "IntentMatched",
    "IntentSummary",
    "ListingChanged",
    "ListingSummary",
    "OfferDecided",
    "OfferStatusChanged",
    "Principal",
    "ProductSnapshot",
    "ProductState",
    "RecordDecision",
    "RemoveIntent",
    "Request",
    "ReservationReleased",
    "ReserveStock",
    "ReturnStock",
    "StockReserved",
    "WindowActivated",
    "WindowEnded",
    "WindowLinked",
]


class Principal(msgspec.Struct, frozen=True):
    """Who sent a command (None on a request when authentication is off)."""

    sub: str
    role: str  # buyer | seller | admin | gateway


class Request(msgspec.Struct, frozen=True):
    """A wire command routed to its actor. ``ids`` holds the subject's ids other than
    the actor's own key (e.g. ``intent_id`` for ``buyers.<b>.intents.<i>.cancel``)."""

    kind: CommandKind
    body: Command
    ids: dict[str, str] = {}
    principal: Principal | None = None


# -- seller -> product ---------------------------------------------------------------


class ListingChanged(msgspec.Struct, frozen=True):
    seller_id: str
    product_id: str
    title: str
    list_price_minor: int
    floor_price_minor: int
    stock: int
    currency: str
    max_active_windows: int
    auto_approve: bool


# -- buyer <-> product ----------------------------------------------------------------


class AddIntent(msgspec.Struct, frozen=True):
    buyer_id: str
    intent_id: str
    quantity: int
    max_price_minor: int
    submitted_at: float
    expires_at: float
    whatsapp_opt_in: bool
    locale: str
    phone: str


class IntentAccepted(msgspec.Struct, frozen=True):
    """The product knows the intent (it exists and has a listing)."""

    product_id: str
    intent_id: str
    currency: str


class RemoveIntent(msgspec.Struct, frozen=True):
    buyer_id: str
    intent_id: str
    reason: str  # cancelled | expired | matched | replaced


# -- campaign <-> product ---------------------------------------------------------------


class DemandSignal(msgspec.Struct, frozen=True):
    """A demand update as the campaign hears it (from the product's NATS event)."""

    product_id: str
    score: float
    open_intents: int
    quantity: int


class Evaluate(msgspec.Struct, frozen=True):
    """The campaign's own periodic tick."""


class ProductSnapshot(msgspec.Struct, frozen=True):
    pass


class IntentSummary(msgspec.Struct, frozen=True):
    buyer_id: str
    intent_id: str
    quantity: int
    max_price_minor: int
    expires_at: float


class ListingSummary(msgspec.Struct, frozen=True):
    seller_id: str
    title: str
    list_price_minor: int
    floor_price_minor: int
    stock: int
    currency: str
    max_active_windows: int
    auto_approve: bool


class ProductState(msgspec.Struct, frozen=True):
    product_id: str
    score: float
    score_as_of: float
    intents: list[IntentSummary]
    listings: list[ListingSummary]


# -- campaign <-> seller ------------------------------------------------------------------


class ReserveStock(msgspec.Struct, frozen=True):
    """Take ``quantity`` out of the seller's stock for ``window_id`` (idempotent by it)."""

    product_id: str
    quantity: int
    window_id: str


class StockReserved(msgspec.Struct, frozen=True):
    product_id: str
    quantity: int
    window_id: str
    stock_left: int


class ReturnStock(msgspec.Struct, frozen=True):
    """Give unreserved quantity back to the listing (idempotent by ``window_id``)."""

    product_id: str
    quantity: int
    window_id: str


class CreateOffer(msgspec.Struct, frozen=True):
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


class OfferDecided(msgspec.Struct, frozen=True):
    """The seller approved or rejected an offer, or it expired (status)."""

    offer_id: str
    decision_id: str
    seller_id: str
    status: str  # approved | rejected | expired


class OfferStatusChanged(msgspec.Struct, frozen=True):
    offer_id: str
    status: str


# -- campaign -> decision ------------------------------------------------------------------


class RecordDecision(msgspec.Struct, frozen=True):
    """Store a decision: the full view, with its inputs (typed, so it survives the trip
    to another node)."""

    view: DecisionView


class WindowLinked(msgspec.Struct, frozen=True):
    window_id: str


# -- campaign -> window ----------------------------------------------------------------------


class CreateWindow(msgspec.Struct, frozen=True):
    product_id: str
    seller_id: str
    decision_id: str | None
    unit_price_minor: int
    currency: str
    quantity_total: int
    min_participants: int
    max_per_buyer: int
    activates_at: float
    expires_at: float


# -- window <-> buyer / product / seller / campaign ---------------------------------------------


class CheckBuyer(msgspec.Struct, frozen=True):
    pass


class BuyerKnown(msgspec.Struct, frozen=True):
    buyer_id: str


class IntentMatched(msgspec.Struct, frozen=True):
    product_id: str
    window_id: str
    join_id: str


class ReservationReleased(msgspec.Struct, frozen=True):
    product_id: str
    window_id: str
    join_id: str


class WindowActivated(msgspec.Struct, frozen=True):
    window_id: str
    seller_id: str
    unit_price_minor: int
    currency: str
    activates_at: float
    expires_at: float


class WindowEnded(msgspec.Struct, frozen=True):
    window_id: str
    seller_id: str
    product_id: str
    state: str  # closed | cancelled
    outcome: str  # succeeded | failed
