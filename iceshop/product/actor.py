"""The product actor (kind ``product``, key ``product_id``): catalog and demand aggregator.

*Catalog.* Each seller's listing arrives as ``ListingChanged`` (after the seller's
commit) and is kept per seller. The product exists as long as it has a listing; its
currency is the listings' currency (the contract has one per product). Before a seller
stores a listing in a currency it has not listed the product in, it asks with
``ClaimCurrency``; the product grants it (a durable claim, see
``iceshop.product.currency``) unless another seller lists the product, or holds a live
claim, in another currency: then ``invalid_request`` naming ``currency``. A listing
that still arrives in a conflicting currency (one stored before sellers asked) is
refused here (logged, not recorded).

*Demand.* Buyers' open intents are kept one per buyer. ``AddIntent`` (a request from a
buyer's submit, or a tell when a buyer re-adds an intent) is answered ``IntentAccepted``
or ``unknown_product`` when nobody lists the product. It is idempotent by
``(buyer_id, intent_id)``: a re-add updates the contact details and adds no weight. A
newer intent of the same buyer replaces the open one (``replaced``); an older one (a
late re-add) changes nothing. ``RemoveIntent`` drops an intent only if it is the open
one. The decayed demand score (``iceshop.demand``, half-life
``Settings.demand_half_life_s``) grows by each new intent's quantity.

Every change of open demand is announced after commit on
``<prefix>.events.demand.<product_id>.updated`` (``DemandUpdated``: score at that
moment, open intents, open quantity), ``seq`` increasing by one per change.

*Expiry.* A buyer tells the product when its intent expires, but that message may be
lost (it is sent after the buyer's commit, fire and forget). So the product drops
expired intents itself: at the start of every turn (before answering or evaluating
anything), and by a durable deadline ``expiry`` armed ``expiry_grace_s`` after the
earliest expiry, which normally finds the buyer's ``RemoveIntent`` already handled and
only matters when it was lost.

*Notifications.* ``WindowActivated`` records a notification request for each buyer
whose open intent accepts the window's price and who opted in to WhatsApp (see
``iceshop.product.notifications`` for the subject and body), once per window.
"""

from __future__ import annotations

from typing import Any, ClassVar

import structlog

from actors import DeadlineFired, PersistentActor
from iceshop.events import emit_event
from iceshop.product.currency import ClaimCurrency, CurrencyGranted
from iceshop.product.notifications import (
    notification_id,
    notification_payload,
    notification_subject,
)
from iceshop.product.state import (
    CurrencyClaim,
    CurrencyClaimed,
    IntentAdded,
    IntentDropped,
    IntentEntry,
    ListingRecorded,
    NotificationRequested,
    ProductBook,
    ProductData,
    ProductEvent,
    WindowNotified,
    intent_key,
)
from iceshop.protocol import (
    AddIntent,
    IntentAccepted,
    IntentSummary,
    ListingChanged,
    ListingSummary,
    ProductSnapshot,
    ProductState,
    RemoveIntent,
    WindowActivated,
)
from iceshop.settings import Settings
from iceshop.wire.errors import ErrorCode, ShopError
from iceshop.wire.views import DemandUpdated

__all__ = ["EXPIRY_DEADLINE", "KIND", "ProductActor"]

log = structlog.get_logger("iceshop.product")

KIND = "product"
EXPIRY_DEADLINE = "expiry"


class ProductActor(PersistentActor):
    """One product: its listings, its open intents and their decayed demand score."""

    __slots__ = ("_armed", "book", "settings")

    event_type = ProductEvent
    snapshot_type = ProductData
    snapshot_every = 500
    passivate_after = 600.0
    #: Seconds after the earliest expiry at which the product drops it itself.
    expiry_grace_s: ClassVar[float] = 5.0
    #: How long a granted currency claim holds without its seller's listing. Far beyond
    #: the seller's wait for the grant (``SellerActor.product_timeout_s``) plus its commit.
    claim_ttl_s: ClassVar[float] = 60.0

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings()
        self.book = ProductBook(self.settings.demand_half_life_s)
        self._armed: float | None = None

    # -- persistence ----------------------------------------------------------------------

    def apply(self, event: Any) -> None:
        self.book.apply(event)

    def snapshot(self) -> ProductData:
        return self.book.data

    def restore(self, snapshot: ProductData) -> None:
        self.book = ProductBook(self.settings.demand_half_life_s, snapshot)

    def on_start(self) -> None:
        # The stored deadline was set from the same state (never later than this).
        self._armed = self._expiry_due()

    # -- dispatch --------------------------------------------------------------------------

    def receive(self, message: Any) -> Any:
        if isinstance(message, DeadlineFired):
            if message.name != EXPIRY_DEADLINE:
                return None
            self._armed = None  # consumed: arm again below if intents remain
        now = self.now()
        self._drop_expired(now)
        result = self._handle(message, now)
        self._rearm()
        return result

    def _handle(self, message: Any, now: float) -> Any:
        match message:
            case AddIntent():
                return self._add(message, now)
            case RemoveIntent():
                self._remove(message, now)
                return None
            case ListingChanged():
                self._listing(message, now)
                return None
            case ClaimCurrency():
                return self._claim(message, now)
            case ProductSnapshot():
                return self._state(now)
            case WindowActivated():
                self._window_activated(message, now)
                return None
            case DeadlineFired():
                return None
        raise TypeError(f"product cannot handle {message!r}")

    # -- catalog ---------------------------------------------------------------------------

    def _listing(self, message: ListingChanged, now: float) -> None:
        listing = ListingSummary(
            seller_id=message.seller_id,
            title=message.title,
            list_price_minor=message.list_price_minor,
            floor_price_minor=message.floor_price_minor,
            stock=message.stock,
            currency=message.currency,
            max_active_windows=message.max_active_windows,
            auto_approve=message.auto_approve,
        )
        data = self.book.data
        if data.listings.get(message.seller_id) == listing:
            return
        refusal = self._currency_refusal(message.seller_id, message.currency, now)
        if refusal is not None:
            # All listings of one product share one currency: a second currency would
            # make every price comparison meaningless (and the policy refuses it). The
            # seller's claim normally refused it before its commit; this is a listing
            # stored before sellers asked, or whose claim lapsed before it arrived.
            log.error(
                "listing refused: another currency than the product's other listings",
                product=self.key,
                seller=message.seller_id,
                currency=message.currency,
                reason=refusal.message,
            )
            return
        self.persist(ListingRecorded(listing, now))

    def _claim(self, message: ClaimCurrency, now: float) -> CurrencyGranted | ShopError:
        """Grant a seller a currency for its listing, recorded until the listing comes."""
        seller_id, currency = message.seller_id, message.currency
        refusal = self._currency_refusal(seller_id, currency, now)
        if refusal is not None:
            return refusal
        book = self.book
        claim = book.live_claim(seller_id, now)
        own = book.data.listings.get(seller_id)
        held = (
            claim.currency == currency
            if claim is not None
            else own is not None and own.currency == currency
        )
        # A claim about to lapse is renewed so that it outlives the seller's commit.
        if not held or (claim is not None and claim.until - now < self.claim_ttl_s / 2):
            until = now + self.claim_ttl_s
            self.persist(CurrencyClaimed(seller_id, CurrencyClaim(currency, until), now))
        return CurrencyGranted(product_id=self.key, seller_id=seller_id, currency=currency)

    def _currency_refusal(self, seller_id: str, currency: str, now: float) -> ShopError | None:
        others = self.book.currencies_of_others(seller_id, now)
        others.discard(currency)
        if not others:
            return None
        return ShopError.invalid(
            f"currency: product {self.key!r} is listed in {', '.join(sorted(others))}"
            " by other sellers",
            field="currency",
        )

    # -- demand ----------------------------------------------------------------------------

    def _add(self, message: AddIntent, now: float) -> IntentAccepted | ShopError:
        book = self.book
        if not book.exists:
            return ShopError(
                ErrorCode.UNKNOWN_PRODUCT,
                f"product {self.key!r} is not listed by any seller",
                {"product_id": self.key},
            )
        accepted = IntentAccepted(
            product_id=self.key, intent_id=message.intent_id, currency=book.currency
        )
        if message.expires_at <= now:
            return accepted  # a late re-add of an intent that has expired meanwhile
        entry = IntentEntry(
            buyer_id=message.buyer_id,
            intent_id=message.intent_id,
            quantity=message.quantity,
            max_price_minor=message.max_price_minor,
            submitted_at=message.submitted_at,
            expires_at=message.expires_at,
            whatsapp_opt_in=message.whatsapp_opt_in,
            locale=message.locale,
            phone=message.phone,
        )
        current = book.data.intents.get(message.buyer_id)
        if current is not None:
            if current.intent_id == message.intent_id:
                if current != entry:
                    self._change(IntentAdded(entry, False, now), now)
                return accepted
            if current.submitted_at > message.submitted_at:
                return accepted  # a newer intent of this buyer is open: this one is stale
            self._change(IntentDropped(current.buyer_id, current.intent_id, "replaced", now), now)
        arrival = intent_key(message.buyer_id, message.intent_id) not in book.data.seen
        self._change(IntentAdded(entry, arrival, now), now)
        return accepted

    def _remove(self, message: RemoveIntent, now: float) -> None:
        current = self.book.data.intents.get(message.buyer_id)
        if current is not None and current.intent_id == message.intent_id:
            self._change(
                IntentDropped(message.buyer_id, message.intent_id, message.reason, now), now
            )

    def _drop_expired(self, now: float) -> None:
        for entry in self.book.expired(now):
            self._change(IntentDropped(entry.buyer_id, entry.intent_id, "expired", now), now)

    def _change(self, event: IntentAdded | IntentDropped, now: float) -> None:
        """Persist a change of open demand and announce it (after commit)."""
        self.persist(event)
        book = self.book
        data = DemandUpdated(
            product_id=self.key,
            score=book.score_at(now),
            open_intents=len(book.data.intents),
            quantity=book.quantity,
        )
        emit_event(
            self,
            self.settings.prefix,
            "demand",
            self.key,
            "updated",
            book.data.demand_seq,
            now,
            data,
        )

    def _state(self, now: float) -> ProductState:
        data = self.book.data
        intents = sorted(data.intents.values(), key=lambda i: (i.submitted_at, i.buyer_id))
        return ProductState(
            product_id=self.key,
            score=self.book.score_at(now),
            score_as_of=now,
            intents=[
                IntentSummary(
                    buyer_id=i.buyer_id,
                    intent_id=i.intent_id,
                    quantity=i.quantity,
                    max_price_minor=i.max_price_minor,
                    expires_at=i.expires_at,
                )
                for i in intents
            ],
            listings=[data.listings[s] for s in sorted(data.listings)],
        )

    # -- expiry deadline ------------------------------------------------------------------------

    def _expiry_due(self) -> float | None:
        earliest = self.book.earliest_expiry
        return None if earliest is None else earliest + self.expiry_grace_s

    def _rearm(self) -> None:
        due = self._expiry_due()
        if due == self._armed:
            return
        if due is None:
            self.cancel_deadline(EXPIRY_DEADLINE)
        else:
            self.set_deadline(EXPIRY_DEADLINE, due)
        self._armed = due

    # -- notifications --------------------------------------------------------------------------

    def _window_activated(self, message: WindowActivated, now: float) -> None:
        data = self.book.data
        if message.window_id in data.notified or message.expires_at <= now:
            return
        wanted = sorted(
            (
                i
                for i in data.intents.values()
                if i.whatsapp_opt_in and i.max_price_minor >= message.unit_price_minor
            ),
            key=lambda i: i.buyer_id,
        )
        for intent in wanted:
            request = NotificationRequested(
                notification_id=notification_id(message.window_id, intent.buyer_id),
                window_id=message.window_id,
                product_id=self.key,
                seller_id=message.seller_id,
                buyer_id=intent.buyer_id,
                intent_id=intent.intent_id,
                phone=intent.phone,
                locale=intent.locale,
                unit_price_minor=message.unit_price_minor,
                currency=message.currency,
                activates_at=message.activates_at,
                expires_at=message.expires_at,
                at=now,
            )
            self.persist(request)
            event_id, body = notification_payload(request)
            self.emit(
                notification_subject(request.notification_id, self.settings.prefix),
                body,
                id=event_id,
            )
        self.persist(WindowNotified(message.window_id, message.expires_at, len(wanted), now))
