"""The seller actor (kind ``seller``, key ``seller_id``): profile, listings, stock, offers.

*Listings and their currency.* All listings of one product share one currency, and
only the product sees every seller's listing, so an upsert in a currency the seller has
not listed the product in (a new listing, or a change of currency) asks the product
first, as a buyer's submit does: the turn sends ``ClaimCurrency`` with :meth:`request`,
takes over the reply with ``reply_later`` and stores nothing. The listing is stored when
``CurrencyGranted`` comes back and the client hears ``ok`` after that commit; a refusal
(``invalid_request``, ``details.field = "currency"``) or no answer within
``product_timeout_s`` (``unavailable``) is passed on and nothing is stored. The product
records a granted claim durably, so of two sellers listing a new product at the same
moment in two currencies exactly one wins (see ``iceshop.product.currency``). An upsert
in the currency the listing already has asks nothing and is stored at once.

While a claim for a product is out, later upserts of that product wait behind it in
arrival order (at most ``max_waiting`` of them; beyond that ``overloaded``) and are
applied after the answer, so the last upsert a client sent is the one that stays. A
repeat of the last waiting upsert shares its answer. The waiting upserts live in memory
only: after a restart their clients time out and retry, and an answer that finds no
waiting upsert with its body is dropped (storing it could undo a later upsert).

The seller owns its stock. Every change to a listing (an upsert, stock taken for a window
or given back) is told to the product's actor after commit as ``ListingChanged``, with
the seller's capacity and approval mode, so the product's catalog is what the campaign
reads; a re-registration that changes capacity or approval re-sends every listing, and
so does every start of the actor (a tell after commit dies with the process).

Stock for a window (``ReserveStock``, a request from the campaign) is taken all or
nothing and recorded under the ``window_id``: a repeat gets the first reply again (same
``stock_left``), the same id with another product or quantity is a conflict.
``ReturnStock`` gives back at most what that window took, once.

Offers exist for sellers that approve windows themselves. ``CreateOffer`` stores a
pending offer and announces it (``<prefix>.events.offer.<offer_id>.proposed``); the
seller approves or rejects it over the wire, or it expires at its ``activates_at`` (a
durable deadline ``offer:<offer_id>``; an answer that comes after that time finds it
expired). Each outcome is announced (``approved`` / ``rejected`` / ``expired``, ``seq``
2 after ``proposed``'s 1) and told to the campaign as ``OfferDecided`` after commit.
Approve and reject are idempotent by state: a repeat answers the current status.
``CreateOffer`` is idempotent by ``offer_id``; a repeat for an offer already decided
tells the campaign the outcome again (the campaign repeats what it has in flight after a
restart, and a tell after commit can be lost).

*Audit.* Every settled offer (``offer.approved`` / ``offer.rejected`` by the principal
that answered; ``offer.expired`` by ``system/clock``, or by the seller whose answer came
too late) and every registration that changed the profile (``seller.registered`` /
``seller.updated``, by the principal that sent it) is audited in the same commit as the
change (``iceshop.audit``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
import structlog
from msgspec import UnsetType

from actors import ActorsError, DeadlineFired, PersistentActor
from actors.envelope import Reply
from iceshop.audit import (
    SYSTEM_CLOCK,
    AuditActor,
    actor_of,
    emit_audit,
    offer_settled,
    seller_registered,
)
from iceshop.events import emit_event
from iceshop.product.currency import ClaimCurrency, CurrencyGranted
from iceshop.protocol import (
    CreateOffer,
    ListingChanged,
    OfferDecided,
    Principal,
    Request,
    ReserveStock,
    ReturnStock,
    StockReserved,
)
from iceshop.seller.state import (
    Listing,
    ListingUpserted,
    OfferCreated,
    OfferRecord,
    OfferStatusSet,
    SellerEvent,
    SellerProfile,
    SellerRegistered,
    SellerState,
    StockGiven,
    StockTaken,
)
from iceshop.settings import Settings
from iceshop.wire.commands import (
    DEFAULT_AUTO_APPROVE,
    DEFAULT_CURRENCY,
    DEFAULT_MAX_ACTIVE_WINDOWS,
    CommandKind,
    RegisterSeller,
    UpsertListing,
)
from iceshop.wire.errors import ErrorCode, ShopError, to_shop_error
from iceshop.wire.times import format_time
from iceshop.wire.views import (
    OfferStatus,
    OfferStatusReply,
    OfferView,
    RegisterSellerReply,
    UpsertListingReply,
)

__all__ = ["CAMPAIGN_KEY", "KIND", "CurrencyAnswer", "SellerActor"]

log = structlog.get_logger("iceshop.seller")

KIND = "seller"
PRODUCT_KIND = "product"
CAMPAIGN_KIND = "campaign"
CAMPAIGN_KEY = "main"
DEADLINE_PREFIX = "offer:"


class CurrencyAnswer:
    """The product's answer to an upsert's ``ClaimCurrency``, back in the seller's mailbox
    with the upsert it answers."""

    __slots__ = ("body", "reply")

    def __init__(self, body: UpsertListing, reply: Any) -> None:
        self.body = body
        self.reply = reply

    def __repr__(self) -> str:
        return f"CurrencyAnswer({self.body.product_id!r}, {self.reply!r})"


class _Waiting:
    """An upsert waiting for the product (the first of its product's queue) or for the
    one before it, and whoever waits for its reply."""

    __slots__ = ("body", "replies")

    def __init__(self, body: UpsertListing, replies: list[Reply]) -> None:
        self.body = body
        self.replies = replies


class SellerActor(PersistentActor):
    """One seller: listings with price bounds and stock, and offers to decide."""

    __slots__ = ("_waiting", "settings", "state")

    event_type = SellerEvent
    snapshot_type = SellerState
    snapshot_every = 200
    passivate_after = 600.0
    #: How long an upsert waits for the product's answer before ``unavailable``.
    product_timeout_s: ClassVar[float] = 5.0
    #: Upserts of one product that may wait behind its claim.
    max_waiting: ClassVar[int] = 64

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings()
        self.state = SellerState()
        self._waiting: dict[str, list[_Waiting]] = {}

    # -- persistence ----------------------------------------------------------------------

    def apply(self, event: Any) -> None:
        self.state.apply(event)

    def snapshot(self) -> SellerState:
        return self.state

    def restore(self, snapshot: SellerState) -> None:
        self.state = snapshot

    def on_start(self) -> None:
        """Announce every listing again: a ``ListingChanged`` told after a commit dies
        with the process, and a stale catalog could price a window outside the seller's
        bounds. The product ignores a listing it already has."""
        if self.state.profile is None:
            return
        for listing in self.state.listings.values():
            try:
                self.system.ref(PRODUCT_KIND, listing.product_id).tell(self._changed(listing))
            except ActorsError as exc:
                log.warning("listing not announced again", seller=self.key, error=repr(exc))

    # -- dispatch --------------------------------------------------------------------------

    def receive(self, message: Any) -> Any:
        match message:
            case Request(kind=CommandKind.LISTING_UPSERT, body=UpsertListing() as body):
                return self._upsert(body)
            case CurrencyAnswer():
                self._on_answer(message)
                return None
            case Request(kind=CommandKind.OFFER_APPROVE, ids=ids, principal=principal):
                return self._decide(ids.get("offer_id"), "approved", principal)
            case Request(kind=CommandKind.OFFER_REJECT, ids=ids, principal=principal):
                return self._decide(ids.get("offer_id"), "rejected", principal)
            case Request(
                kind=CommandKind.SELLER_REGISTER, body=RegisterSeller() as body, principal=principal
            ):
                return self._register(body, principal)
            case Request(kind=kind):
                return ShopError(ErrorCode.INTERNAL, f"{kind} is not a seller command")
            case ReserveStock():
                return self._reserve(message)
            case ReturnStock():
                self._return(message)
                return None
            case CreateOffer():
                return self._create_offer(message)
            case DeadlineFired(name=name) if name.startswith(DEADLINE_PREFIX):
                self._on_expiry(name[len(DEADLINE_PREFIX) :])
                return None
        raise TypeError(f"seller cannot handle {message!r}")

    # -- registration and listings ------------------------------------------------------------

    def _register(self, body: RegisterSeller, principal: Principal | None) -> RegisterSellerReply:
        old = self.state.profile
        windows = body.max_active_windows if isinstance(body.max_active_windows, int) else None
        approve = body.auto_approve if isinstance(body.auto_approve, bool) else None
        new = SellerProfile(
            name=body.name,
            max_active_windows=(
                windows
                if windows is not None
                else (old.max_active_windows if old is not None else DEFAULT_MAX_ACTIVE_WINDOWS)
            ),
            auto_approve=(
                approve
                if approve is not None
                else (old.auto_approve if old is not None else DEFAULT_AUTO_APPROVE)
            ),
        )
        if new != old:
            self.persist(SellerRegistered(new))
            record = seller_registered(
                self.key,
                created=old is None,
                actor=actor_of(principal),
                at=self.now(),
                seq=self.state.registrations,
                max_active_windows=new.max_active_windows,
                auto_approve=new.auto_approve,
            )
            emit_audit(self, self.settings.prefix, record)
            if old is not None and (old.max_active_windows, old.auto_approve) != (
                new.max_active_windows,
                new.auto_approve,
            ):
                for listing in self.state.listings.values():
                    self._announce_listing(listing)
        return RegisterSellerReply(seller_id=self.key, created=old is None)

    def _upsert(self, body: UpsertListing) -> Any:
        if self.state.profile is None:
            return self._unknown_seller()
        if body.floor_price_minor > body.list_price_minor:  # the wire layer checks it too
            return ShopError.invalid(
                "floor_price_minor: must not exceed list_price_minor", field="floor_price_minor"
            )
        body = self._with_currency(body)
        queue = self._waiting.get(body.product_id)
        if queue is not None:  # a claim for this product is out: wait behind it
            if queue[-1].body == body:
                queue[-1].replies.append(self.reply_later())
            elif len(queue) > self.max_waiting:
                return ShopError(
                    ErrorCode.OVERLOADED,
                    f"too many upserts of {body.product_id!r} waiting; retry later",
                )
            else:
                queue.append(_Waiting(body, [self.reply_later()]))
            return None
        if not self._needs_claim(body):
            return self._store(body)
        self._waiting[body.product_id] = [_Waiting(body, [self.reply_later()])]
        self._ask_product(body)
        return None

    def _with_currency(self, body: UpsertListing) -> UpsertListing:
        """``body`` with its currency resolved: an upsert that omits it keeps the
        listing's (the one a waiting upsert asked for, else the stored one; TRY for a new
        listing), as the contract's upserts keep omitted fields."""
        if not isinstance(body.currency, UnsetType):
            return body
        queue = self._waiting.get(body.product_id)
        if queue:
            currency = _currency(queue[-1].body)
        else:
            stored = self.state.listings.get(body.product_id)
            currency = stored.currency if stored is not None else DEFAULT_CURRENCY
        return msgspec.structs.replace(body, currency=currency)

    def _needs_claim(self, body: UpsertListing) -> bool:
        """Whether the product must grant the upsert's currency (new to this listing)."""
        stored = self.state.listings.get(body.product_id)
        return stored is None or stored.currency != _currency(body)

    def _ask_product(self, body: UpsertListing) -> None:
        self.request(
            self.system.ref(PRODUCT_KIND, body.product_id),
            ClaimCurrency(seller_id=self.key, currency=_currency(body)),
            lambda reply: CurrencyAnswer(body, reply),
            timeout=self.product_timeout_s,
        )

    def _on_answer(self, answer: CurrencyAnswer) -> None:
        product_id = answer.body.product_id
        queue = self._waiting.get(product_id)
        if queue is None or queue[0].body != answer.body:
            log.info("currency answer for no waiting upsert", seller=self.key, product=product_id)
            return
        first = queue.pop(0)
        reply = answer.reply
        result: Any
        if isinstance(reply, CurrencyGranted):
            result = self._store(first.body)
        elif isinstance(reply, ShopError):
            result = reply
        elif isinstance(reply, BaseException):
            result = to_shop_error(reply)
        else:
            log.error("unexpected answer to ClaimCurrency", seller=self.key, reply=repr(reply))
            result = ShopError(ErrorCode.INTERNAL, "internal error")
        for handle in first.replies:
            self.respond(handle, result)
        # The upserts that waited behind it, in order, until one needs a claim of its own.
        while queue:
            if self._needs_claim(queue[0].body):
                self._ask_product(queue[0].body)
                return
            waiting = queue.pop(0)
            stored = self._store(waiting.body)
            for handle in waiting.replies:
                self.respond(handle, stored)
        del self._waiting[product_id]

    def _store(self, body: UpsertListing) -> UpsertListingReply:
        listing = Listing(
            product_id=body.product_id,
            title=body.title,
            list_price_minor=body.list_price_minor,
            floor_price_minor=body.floor_price_minor,
            stock=body.stock,
            currency=_currency(body),
        )
        if self.state.listings.get(body.product_id) != listing:
            self.persist(ListingUpserted(listing))
        self._announce_listing(listing)
        return UpsertListingReply(seller_id=self.key, product_id=body.product_id, stock=body.stock)

    def _announce_listing(self, listing: Listing) -> None:
        self.tell_after_commit(
            self.system.ref(PRODUCT_KIND, listing.product_id), self._changed(listing)
        )

    def _changed(self, listing: Listing) -> ListingChanged:
        profile = self.state.profile
        assert profile is not None
        return ListingChanged(
            seller_id=self.key,
            product_id=listing.product_id,
            title=listing.title,
            list_price_minor=listing.list_price_minor,
            floor_price_minor=listing.floor_price_minor,
            stock=listing.stock,
            currency=listing.currency,
            max_active_windows=profile.max_active_windows,
            auto_approve=profile.auto_approve,
        )

    # -- stock for windows -----------------------------------------------------------------------

    def _reserve(self, message: ReserveStock) -> StockReserved | ShopError:
        hold = self.state.holds.get(message.window_id)
        if hold is not None:
            if (hold.product_id, hold.quantity) != (message.product_id, message.quantity):
                return ShopError(
                    ErrorCode.IDEMPOTENCY_CONFLICT,
                    f"stock for window {message.window_id!r} was reserved with other parameters",
                    {"window_id": message.window_id},
                )
            return StockReserved(
                product_id=hold.product_id,
                quantity=hold.quantity,
                window_id=message.window_id,
                stock_left=hold.stock_left,
            )
        if self.state.profile is None:
            return self._unknown_seller()
        listing = self.state.listings.get(message.product_id)
        if listing is None:
            return ShopError(
                ErrorCode.UNKNOWN_PRODUCT,
                f"seller {self.key!r} has no listing for {message.product_id!r}",
                {"product_id": message.product_id},
            )
        if listing.stock < message.quantity:
            return ShopError(
                ErrorCode.INSUFFICIENT_STOCK,
                f"only {listing.stock} of {message.product_id!r} in stock",
                {"available": listing.stock},
            )
        self.persist(
            StockTaken(message.window_id, message.product_id, message.quantity, self.now())
        )
        self._announce_listing(self.state.listings[message.product_id])
        return StockReserved(
            product_id=message.product_id,
            quantity=message.quantity,
            window_id=message.window_id,
            stock_left=self.state.holds[message.window_id].stock_left,
        )

    def _return(self, message: ReturnStock) -> None:
        hold = self.state.holds.get(message.window_id)
        if hold is None or hold.product_id != message.product_id:
            log.warning(
                "stock returned for a window that took none",
                seller=self.key,
                window_id=message.window_id,
                product_id=message.product_id,
            )
            return
        if hold.closed:
            return  # already given back
        quantity = min(message.quantity, hold.quantity)
        self.persist(StockGiven(message.window_id, message.product_id, quantity, self.now()))
        self._announce_listing(self.state.listings[message.product_id])

    # -- offers -----------------------------------------------------------------------------------

    def _create_offer(self, message: CreateOffer) -> OfferStatusReply:
        offer = self.state.offers.get(message.offer_id)
        if offer is None:
            offer = OfferRecord(
                offer_id=message.offer_id,
                decision_id=message.decision_id,
                product_id=message.product_id,
                window_id=message.window_id,
                unit_price_minor=message.unit_price_minor,
                currency=message.currency,
                quantity=message.quantity,
                min_participants=message.min_participants,
                max_per_buyer=message.max_per_buyer,
                activates_at=message.activates_at,
                expires_at=message.expires_at,
            )
            self.persist(OfferCreated(offer, self.now()))
            self.set_deadline(DEADLINE_PREFIX + offer.offer_id, offer.activates_at)
            self._emit_offer(offer, "proposed", 1)
        elif offer.status != "pending":
            self._tell_campaign(offer)  # the campaign asks again: its news may have been lost
        return OfferStatusReply(offer_id=offer.offer_id, status=offer.status)

    def _decide(
        self, offer_id: str | None, status: OfferStatus, principal: Principal | None
    ) -> OfferStatusReply | ShopError:
        if self.state.profile is None:
            return self._unknown_seller()
        offer = None if offer_id is None else self.state.offers.get(offer_id)
        if offer is None:
            return ShopError(
                ErrorCode.UNKNOWN_OFFER,
                f"seller {self.key!r} has no offer {offer_id!r}",
                {"offer_id": offer_id},
            )
        if offer.status == "pending":
            answered: OfferStatus | None = None
            if offer.activates_at <= self.now():
                answered, status = status, "expired"  # its deadline is due: too late
            offer = self._settle(offer, status, actor_of(principal), answered)
        return OfferStatusReply(offer_id=offer.offer_id, status=offer.status)

    def _on_expiry(self, offer_id: str) -> None:
        offer = self.state.offers.get(offer_id)
        if offer is not None and offer.status == "pending":
            self._settle(offer, "expired", SYSTEM_CLOCK)

    def _settle(
        self,
        offer: OfferRecord,
        status: OfferStatus,
        actor: AuditActor,
        answered: OfferStatus | None = None,
    ) -> OfferRecord:
        """Move a pending offer to its final status: store, announce, audit (``actor``
        did it; ``answered`` is an answer that came too late), tell the campaign."""
        now = self.now()
        self.persist(OfferStatusSet(offer.offer_id, status, now))
        self.cancel_deadline(DEADLINE_PREFIX + offer.offer_id)
        offer = self.state.offers[offer.offer_id]
        self._emit_offer(offer, status, 2)
        record = offer_settled(
            offer_id=offer.offer_id,
            status=status,
            actor=actor,
            at=now,
            seller_id=self.key,
            decision_id=offer.decision_id,
            product_id=offer.product_id,
            window_id=offer.window_id,
            currency=offer.currency,
            unit_price_minor=offer.unit_price_minor,
            quantity=offer.quantity,
            min_participants=offer.min_participants,
            max_per_buyer=offer.max_per_buyer,
            activates_at=offer.activates_at,
            answered=answered,
        )
        emit_audit(self, self.settings.prefix, record)
        self._tell_campaign(offer)
        return offer

    def _tell_campaign(self, offer: OfferRecord) -> None:
        self.tell_after_commit(
            self.system.ref(CAMPAIGN_KIND, CAMPAIGN_KEY),
            OfferDecided(
                offer_id=offer.offer_id,
                decision_id=offer.decision_id,
                seller_id=self.key,
                status=offer.status,
            ),
        )

    def _emit_offer(self, offer: OfferRecord, event_type: str, seq: int) -> None:
        view = OfferView(
            offer_id=offer.offer_id,
            seller_id=self.key,
            unit_price_minor=offer.unit_price_minor,
            quantity=offer.quantity,
            activates_at=format_time(offer.activates_at),
            expires_at=format_time(offer.expires_at),
            status=offer.status,
        )
        emit_event(
            self, self.settings.prefix, "offer", offer.offer_id, event_type, seq, self.now(), view
        )

    def _unknown_seller(self) -> ShopError:
        return ShopError(
            ErrorCode.UNKNOWN_SELLER,
            f"seller {self.key!r} is not registered",
            {"seller_id": self.key},
        )


def _currency(body: UpsertListing) -> str:
    """The currency of an upsert already resolved by ``SellerActor._with_currency``."""
    if isinstance(body.currency, UnsetType):
        raise TypeError("an upsert's currency must be resolved first")
    return body.currency
