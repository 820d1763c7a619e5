"""A product's durable state: the catalog (one listing per seller) and the demand book.

``ProductData`` is the plain record (and the snapshot value); ``ProductBook`` wraps it
with what is derived in memory only: the open quantity and two heaps of expiry times, so
finding expired intents costs ``O(log n)`` per intent instead of a scan per message on a
hot product.

Open intents are kept one per buyer (a newer intent of a buyer replaces the older one).
``seen`` remembers every intent the product has taken, open or not, until it expires: a
re-add of a seen intent (a released reservation reopening it, a contact update, a
retried submit) is the same intent, not a new arrival, so it adds nothing to the demand
score (see ``iceshop.demand``). Entries are forgotten once their intent has expired, a
re-add after that being pointless; the pruning runs in ``apply`` at each event's own
time, so a replay forgets exactly what the live actor forgot.

``claims`` holds the currencies granted to sellers whose listing has not arrived yet
(see ``iceshop.product.currency``): a claim is dropped when that seller's listing in the
claimed currency is recorded, and claims that have lapsed are dropped at each later
claim or listing, at that event's own time (so a replay drops the same ones).

``demand_seq`` counts the changes of open demand (each ``IntentAdded`` and
``IntentDropped``): it is the ``seq`` of the ``demand.<product_id>.updated`` event the
change is announced with, so a replay computes the same numbers and event ids.
"""

from __future__ import annotations

import heapq
from typing import Any

import msgspec

from iceshop.demand import DemandScore, arrival_weight
from iceshop.protocol import ListingSummary

__all__ = [
    "CurrencyClaim",
    "CurrencyClaimed",
    "IntentAdded",
    "IntentDropped",
    "IntentEntry",
    "ListingRecorded",
    "NotificationRequested",
    "ProductBook",
    "ProductData",
    "ProductEvent",
    "WindowNotified",
    "intent_key",
]


def intent_key(buyer_id: str, intent_id: str) -> str:
    """One intent's name in ``seen`` (ids never contain ``/``)."""
    return f"{buyer_id}/{intent_id}"


class IntentEntry(msgspec.Struct, frozen=True):
    """An open intent, with the buyer's contact details for notifications."""

    buyer_id: str
    intent_id: str
    quantity: int
    max_price_minor: int
    submitted_at: float
    expires_at: float
    whatsapp_opt_in: bool
    locale: str
    phone: str


class CurrencyClaim(msgspec.Struct, frozen=True):
    """A currency granted to a seller whose listing has not arrived; void from ``until``."""

    currency: str
    until: float


# -- events ------------------------------------------------------------------------------


class CurrencyClaimed(msgspec.Struct, frozen=True, tag="product.currency_claimed"):
    seller_id: str
    claim: CurrencyClaim
    at: float


class ListingRecorded(msgspec.Struct, frozen=True, tag="product.listing"):
    listing: ListingSummary
    at: float


class IntentAdded(msgspec.Struct, frozen=True, tag="product.intent_added"):
    """An intent is open here (new, re-added or updated); ``arrival`` adds its weight."""

    intent: IntentEntry
    arrival: bool
    at: float


class IntentDropped(msgspec.Struct, frozen=True, tag="product.intent_dropped"):
    buyer_id: str
    intent_id: str
    reason: str  # cancelled | expired | matched | replaced
    at: float


class NotificationRequested(msgspec.Struct, frozen=True, tag="product.notification_requested"):
    """A buyer is to be told about an active window (delivered by the messaging layer)."""

    notification_id: str
    window_id: str
    product_id: str
    seller_id: str
    buyer_id: str
    intent_id: str
    phone: str
    locale: str
    unit_price_minor: int
    currency: str
    activates_at: float
    expires_at: float
    at: float


class WindowNotified(msgspec.Struct, frozen=True, tag="product.window_notified"):
    """Notifications for this window were requested (``requested`` of them)."""

    window_id: str
    expires_at: float
    requested: int
    at: float


ProductEvent = (
    ListingRecorded
    | IntentAdded
    | IntentDropped
    | NotificationRequested
    | WindowNotified
    | CurrencyClaimed
)


class ProductData(msgspec.Struct):
    """Everything a product remembers; also its snapshot value."""

    listings: dict[str, ListingSummary] = {}
    intents: dict[str, IntentEntry] = {}
    seen: dict[str, float] = {}
    score: DemandScore = msgspec.field(default_factory=DemandScore)
    demand_seq: int = 0
    notified: dict[str, float] = {}
    claims: dict[str, CurrencyClaim] = {}


class ProductBook:
    """``ProductData`` plus its in-memory indexes; ``apply`` folds events into both."""

    __slots__ = ("_forget", "_open", "data", "half_life_s", "quantity")

    def __init__(self, half_life_s: float, data: ProductData | None = None) -> None:
        self.half_life_s = half_life_s
        self.data = data if data is not None else ProductData()
        self.quantity = sum(i.quantity for i in self.data.intents.values())
        self._open = [(i.expires_at, i.buyer_id, i.intent_id) for i in self.data.intents.values()]
        heapq.heapify(self._open)
        self._forget = [(expires_at, key) for key, expires_at in self.data.seen.items()]
        heapq.heapify(self._forget)

    # -- reading ------------------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        """A product exists as long as some seller lists it."""
        return bool(self.data.listings)

    @property
    def currency(self) -> str:
        for listing in self.data.listings.values():
            return listing.currency
        return ""

    def currencies_of_others(self, seller_id: str, now: float) -> set[str]:
        """The currencies other sellers list the product in or hold a live claim for."""
        data = self.data
        found = {x.currency for s, x in data.listings.items() if s != seller_id}
        found.update(c.currency for s, c in data.claims.items() if s != seller_id and c.until > now)
        return found

    def live_claim(self, seller_id: str, now: float) -> CurrencyClaim | None:
        claim = self.data.claims.get(seller_id)
        return claim if claim is not None and claim.until > now else None

    def score_at(self, now: float) -> float:
        return self.data.score.value_at(now, self.half_life_s)

    def expired(self, now: float) -> list[IntentEntry]:
        """Open intents whose ``expires_at`` is at or before ``now`` (the caller drops
        them); stale index entries met on the way are discarded."""
        found: dict[str, IntentEntry] = {}
        heap = self._open
        intents = self.data.intents
        while heap and heap[0][0] <= now:
            _, buyer_id, intent_id = heapq.heappop(heap)
            entry = intents.get(buyer_id)
            # An intent re-added after a match is indexed twice: report it once.
            if entry is not None and entry.intent_id == intent_id:
                found[buyer_id] = entry
        return list(found.values())

    @property
    def earliest_expiry(self) -> float | None:
        """No open intent expires before this (None: no open intent)."""
        return self._open[0][0] if self._open else None

    # -- folding --------------------------------------------------------------------------------

    def apply(self, event: Any) -> None:
        data = self.data
        match event:
            case ListingRecorded(listing=listing, at=at):
                data.listings[listing.seller_id] = listing
                claim = data.claims.get(listing.seller_id)
                if claim is not None and claim.currency == listing.currency:
                    del data.claims[listing.seller_id]  # confirmed: the listing holds it now
                self._lapse(at)
            case CurrencyClaimed(seller_id=seller_id, claim=claim, at=at):
                data.claims[seller_id] = claim
                self._lapse(at)
            case IntentAdded(intent=intent, arrival=arrival, at=at):
                old = data.intents.get(intent.buyer_id)
                if old is not None:
                    self.quantity -= old.quantity
                data.intents[intent.buyer_id] = intent
                self.quantity += intent.quantity
                if old is None or old.intent_id != intent.intent_id:
                    heapq.heappush(
                        self._open, (intent.expires_at, intent.buyer_id, intent.intent_id)
                    )
                key = intent_key(intent.buyer_id, intent.intent_id)
                if key not in data.seen:
                    data.seen[key] = intent.expires_at
                    heapq.heappush(self._forget, (intent.expires_at, key))
                if arrival:
                    data.score = data.score.add(
                        arrival_weight(intent.quantity), intent.submitted_at, self.half_life_s
                    )
                data.demand_seq += 1
                self._prune(at)
            case IntentDropped(buyer_id=buyer_id, intent_id=intent_id, at=at):
                entry = data.intents.get(buyer_id)
                if entry is not None and entry.intent_id == intent_id:
                    del data.intents[buyer_id]
                    self.quantity -= entry.quantity
                data.demand_seq += 1
                self._prune(at)
            case NotificationRequested():
                pass  # the journal entry and its outbox message are the record
            case WindowNotified(window_id=window_id, expires_at=expires_at, at=at):
                for done in [w for w, t in data.notified.items() if t <= at]:
                    del data.notified[done]
                data.notified[window_id] = expires_at
            case _:
                raise TypeError(f"not a product event: {event!r}")

    def _lapse(self, now: float) -> None:
        """Drop the claims that lapsed unconfirmed."""
        claims = self.data.claims
        for seller_id in [s for s, c in claims.items() if c.until <= now]:
            del claims[seller_id]

    def _prune(self, now: float) -> None:
        """Forget seen intents that have expired (they can never be re-added usefully)."""
        heap = self._forget
        seen = self.data.seen
        while heap and heap[0][0] <= now:
            expires_at, key = heapq.heappop(heap)
            if seen.get(key) == expires_at:
                del seen[key]
