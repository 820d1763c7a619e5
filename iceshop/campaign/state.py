"""What the campaign remembers, as journal events and the state they fold into.

The campaign keeps its OWN record of what it set in motion, per product: the decision
counter (ids are derived from it), when it last proposed (the cooldown), the proposal in
flight (an offer awaiting the seller, or stock being set aside) and the windows it opened
that have not ended. Seller load (windows and pending proposals per seller) is derived
from the same records, so it can never disagree with them. Nothing here asks another
actor: what the seller or the product knows comes fresh with each evaluation.

Events are small and carry their own facts, so ``apply`` is a pure fold. The snapshot is
the list of product records; the per-seller and per-offer indexes are rebuilt from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import msgspec

from iceshop.policy import CampaignState
from iceshop.protocol import CreateWindow
from iceshop.wire import DecisionView

__all__ = [
    "CampaignBook",
    "CampaignEvent",
    "CampaignSnapshot",
    "Decided",
    "OfferApproved",
    "OpenWindow",
    "Pending",
    "ProductBook",
    "ProposalDropped",
    "Proposed",
    "Watched",
    "WindowClosed",
    "WindowOpened",
]

Stage = Literal["offered", "reserving"]


class Pending(msgspec.Struct, frozen=True, kw_only=True):
    """A proposal between the policy's answer and its window.

    ``offered``: waiting for the seller to approve ``offer_id``. ``reserving``: stock is
    being set aside (at once for an auto-approving seller, after approval otherwise).
    ``decision`` is the decision view: recorded already when there is an offer, recorded
    once the stock is set aside when there is none.
    """

    stage: Stage
    n: int
    window_id: str
    offer_id: str | None
    made_at: float
    window: CreateWindow
    decision: DecisionView

    @property
    def seller_id(self) -> str:
        return self.window.seller_id


class OpenWindow(msgspec.Struct, frozen=True, kw_only=True):
    """A window the campaign created that has not ended (kept to re-send after a restart)."""

    window_id: str
    offer_id: str | None
    window: CreateWindow
    decision: DecisionView

    @property
    def seller_id(self) -> str:
        return self.window.seller_id


class ProductBook(msgspec.Struct, frozen=True, kw_only=True):
    """The campaign's record of one product.

    ``next_n`` numbers the next decision. ``signature`` (outcome and reason codes) of the
    last recorded decision lets an unchanged evaluation go unrecorded. ``watching``: the
    last demand signal met ``campaign_min_quantity``, so the product is evaluated on every
    tick (listings and seller load change without a demand signal).
    """

    product_id: str
    next_n: int = 1
    last_proposed_at: float | None = None
    watching: bool = False
    signature: str | None = None
    last_outcome: str | None = None
    pending: Pending | None = None
    windows: tuple[OpenWindow, ...] = ()
    #: The last decision that proposed nothing (re-sent to its decision actor on start).
    last_decision: DecisionView | None = None

    def policy_state(self) -> CampaignState:
        """What the policy needs: a pending proposal counts as an open window."""
        return CampaignState(
            last_proposed_at=self.last_proposed_at,
            open_windows=len(self.windows) + (self.pending is not None),
        )

    @property
    def recurring(self) -> bool:
        """Evaluate on every tick, not only after a demand signal: demand is high enough
        that supply changes matter, or only time was missing last time."""
        return self.watching or self.last_outcome == "deferred"


# -- events -----------------------------------------------------------------------------


class Watched(msgspec.Struct, frozen=True, tag=True):
    """The product's demand crossed ``campaign_min_quantity`` (``on``: upwards)."""

    product_id: str
    on: bool


class Decided(msgspec.Struct, frozen=True, tag=True):
    """Decision ``n`` was recorded and proposes nothing (no_action or deferred)."""

    product_id: str
    n: int
    signature: str
    outcome: str
    #: The decision itself, so a restart can hand it to its decision actor again if the
    #: node died between this commit and that delivery (the record is idempotent).
    view: DecisionView | None = None


class Proposed(msgspec.Struct, frozen=True, tag=True):
    """Decision ``pending.n`` proposes a window; the seller's slot is held from now."""

    product_id: str
    signature: str
    pending: Pending


class OfferApproved(msgspec.Struct, frozen=True, tag=True):
    product_id: str
    offer_id: str


class WindowOpened(msgspec.Struct, frozen=True, tag=True):
    """Stock was set aside and the window told to exist: the cooldown starts."""

    product_id: str
    window_id: str


class ProposalDropped(msgspec.Struct, frozen=True, tag=True):
    """The proposal ends without a window: offer rejected or expired, or no stock.

    ``signature``/``outcome`` are set when the drop was recorded as the decision itself
    (an auto-approved proposal whose stock was gone)."""

    product_id: str
    window_id: str
    status: str
    signature: str | None = None
    outcome: str | None = None


class WindowClosed(msgspec.Struct, frozen=True, tag=True):
    """The window ended (closed or cancelled): its seller's slot is free again."""

    product_id: str
    window_id: str


CampaignEvent = (
    Watched | Decided | Proposed | OfferApproved | WindowOpened | ProposalDropped | WindowClosed
)


class CampaignSnapshot(msgspec.Struct, frozen=True):
    products: list[ProductBook]


# -- the fold ------------------------------------------------------------------------------


class CampaignBook:
    """Every product's record plus two derived indexes: per seller, the windows and the
    pending proposals it holds; per pending offer, its product."""

    __slots__ = ("_offers", "_seller_pending", "_seller_windows", "products")

    def __init__(self) -> None:
        self.products: dict[str, ProductBook] = {}
        self._seller_windows: dict[str, set[str]] = {}
        self._seller_pending: dict[str, set[str]] = {}
        self._offers: dict[str, str] = {}

    def get(self, product_id: str) -> ProductBook:
        """The product's record (a fresh one, not stored, when it has none yet)."""
        book = self.products.get(product_id)
        return book if book is not None else ProductBook(product_id=product_id)

    def seller_slots(self, seller_id: str) -> tuple[int, int]:
        """``(windows, pending proposals)`` the campaign holds for ``seller_id``."""
        return (
            len(self._seller_windows.get(seller_id, ())),
            len(self._seller_pending.get(seller_id, ())),
        )

    def offer_product(self, offer_id: str) -> str | None:
        """The product whose pending proposal is ``offer_id``."""
        return self._offers.get(offer_id)

    def recurring(self) -> Iterator[str]:
        return (pid for pid, book in self.products.items() if book.recurring)

    # -- apply ---------------------------------------------------------------------------

    def apply(self, event: CampaignEvent) -> None:
        book = self.get(event.product_id)
        match event:
            case Watched(on=on):
                book = msgspec.structs.replace(book, watching=on)
            case Decided(n=n, signature=signature, outcome=outcome, view=view):
                book = msgspec.structs.replace(
                    book,
                    next_n=max(book.next_n, n + 1),
                    signature=signature,
                    last_outcome=outcome,
                    last_decision=view,
                )
            case Proposed(signature=signature, pending=pending):
                book = msgspec.structs.replace(
                    book,
                    next_n=max(book.next_n, pending.n + 1),
                    signature=signature,
                    last_outcome="window_proposed",
                    pending=pending,
                    # An offer starts the cooldown when made: a seller who rejects is not
                    # asked again at once.
                    last_proposed_at=pending.made_at
                    if pending.offer_id is not None
                    else book.last_proposed_at,
                )
                self._hold(pending)
            case OfferApproved(offer_id=offer_id):
                current = book.pending
                if current is not None and current.offer_id == offer_id:
                    self._offers.pop(offer_id, None)
                    current = msgspec.structs.replace(current, stage="reserving")
                    book = msgspec.structs.replace(book, pending=current)
            case WindowOpened(window_id=wid):
                current = book.pending
                if current is not None and current.window_id == wid:
                    self._release(current)
                    opened = OpenWindow(
                        window_id=wid,
                        offer_id=current.offer_id,
                        window=current.window,
                        decision=current.decision,
                    )
                    book = msgspec.structs.replace(
                        book,
                        pending=None,
                        windows=(*book.windows, opened),
                        last_proposed_at=current.made_at,
                    )
                    self._seller_windows.setdefault(opened.seller_id, set()).add(wid)
            case ProposalDropped(window_id=wid, signature=signature, outcome=outcome):
                current = book.pending
                if current is not None and current.window_id == wid:
                    self._release(current)
                    book = msgspec.structs.replace(book, pending=None)
                if signature is not None:
                    book = msgspec.structs.replace(book, signature=signature, last_outcome=outcome)
            case WindowClosed(window_id=wid):
                kept = tuple(w for w in book.windows if w.window_id != wid)
                for w in book.windows:
                    if w.window_id == wid:
                        _discard(self._seller_windows, w.seller_id, wid)
                book = msgspec.structs.replace(book, windows=kept)
        self.products[book.product_id] = book

    def _hold(self, pending: Pending) -> None:
        self._seller_pending.setdefault(pending.seller_id, set()).add(pending.window_id)
        if pending.offer_id is not None and pending.stage == "offered":
            self._offers[pending.offer_id] = pending.window.product_id

    def _release(self, pending: Pending) -> None:
        _discard(self._seller_pending, pending.seller_id, pending.window_id)
        if pending.offer_id is not None:
            self._offers.pop(pending.offer_id, None)

    # -- snapshot ----------------------------------------------------------------------

    def snapshot(self) -> CampaignSnapshot:
        return CampaignSnapshot(products=list(self.products.values()))

    def restore(self, snapshot: CampaignSnapshot) -> None:
        self.products.clear()
        self._seller_windows.clear()
        self._seller_pending.clear()
        self._offers.clear()
        for book in snapshot.products:
            self.products[book.product_id] = book
            if book.pending is not None:
                self._hold(book.pending)
            for w in book.windows:
                self._seller_windows.setdefault(w.seller_id, set()).add(w.window_id)


def _discard(index: dict[str, set[str]], key: str, value: str) -> None:
    values = index.get(key)
    if values is not None:
        values.discard(value)
        if not values:
            del index[key]
