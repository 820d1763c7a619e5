"""The campaign actor: hears demand, asks the policy, and sets proposals in motion.

One instance (kind ``campaign``, key ``main``). It is persistent: its journal holds the
decision counters (so ids are never reused), the cooldowns, and the proposals and
windows it has in flight (so seller load survives a restart).

The cycle::

    DemandSignal ........ mark the product dirty (and watch it while demand meets the minimum)
    Evaluate (timer) .... request a ProductSnapshot of every dirty or recurring product
    ProductState ........ evaluate; record the decision if it matters
        window_proposed, seller auto-approves:  journal the proposal, then (after commit)
            ReserveStock -> StockReserved: the window is opened: CreateWindow, RecordDecision
                         -> ShopError:     the decision is recorded as deferred (no stock)
        window_proposed, seller approves first: journal it, CreateOffer, RecordDecision
            OfferDecided approved -> ReserveStock -> CreateWindow, WindowLinked
            OfferDecided rejected/expired -> the seller's slot is freed
    WindowEnded ......... the seller's slot is freed

The tick is an in-memory timer re-armed on every tick and armed in ``on_start``, so it
runs again as soon as the actor is started after a restart (the node starts it at boot
by telling it :class:`~iceshop.protocol.Evaluate`). Stock is only requested *after* the
proposal is committed, so a proposal and its reservation always carry the same ids and
quantity; a crash in between is repaired on start by asking again (the seller is
idempotent by ``window_id``). Likewise every message a committed state implies
(CreateOffer, CreateWindow, RecordDecision, ...) is sent again on start: all of them
are idempotent by id, and ``tell_after_commit`` alone is not delivery.

The ``decision.<id>.made`` event is emitted by the decision actor when it first stores
the decision, so the event never announces a decision that ``decisions.<id>.get`` cannot
return.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Final

import msgspec
import structlog

from actors import ActorRef, ActorsError, DeadlineFired, PersistentActor
from iceshop.policy import Evaluation
from iceshop.protocol import (
    CreateOffer,
    CreateWindow,
    DemandSignal,
    Evaluate,
    OfferDecided,
    OfferStatusChanged,
    ProductSnapshot,
    ProductState,
    RecordDecision,
    ReserveStock,
    StockReserved,
    WindowEnded,
    WindowLinked,
)
from iceshop.settings import Settings
from iceshop.wire import OfferView, ShopError, format_time

from . import ids
from .evaluation import (
    decision_view,
    evaluate_product,
    policy_settings,
    reservation_failed,
    signature,
)
from .state import (
    CampaignBook,
    CampaignEvent,
    CampaignSnapshot,
    Decided,
    OfferApproved,
    Pending,
    ProductBook,
    ProposalDropped,
    Proposed,
    Watched,
    WindowClosed,
    WindowOpened,
)

__all__ = ["CAMPAIGN_KEY", "OFFER_GRACE_S", "REQUEST_TIMEOUT_S", "CampaignActor"]

log = structlog.get_logger("iceshop.campaign")

CAMPAIGN_KEY: Final = "main"
#: How long the campaign waits for a product's snapshot or a seller's reservation.
REQUEST_TIMEOUT_S: Final = 5.0
#: A pending offer expires at its window's activation; if the seller's word has not
#: come this long after, the campaign treats it as expired itself (a lost message must
#: not hold the seller's slot forever).
OFFER_GRACE_S: Final = 60.0
_STALE_S: Final = 2 * REQUEST_TIMEOUT_S
_TIMER: Final = "evaluate"
_OFFER_DEADLINE: Final = "offer:"


# -- messages to itself (replies of its requests, and work to do after a commit) ---------


class _Snapshot(msgspec.Struct, frozen=True):
    product_id: str
    reply: Any  # ProductState | ShopError | ActorsError


class _Reserve(msgspec.Struct, frozen=True):
    """Set aside the stock of the product's pending proposal (sent after its commit)."""

    product_id: str
    window_id: str


class _Reserved(msgspec.Struct, frozen=True):
    product_id: str
    window_id: str
    reply: Any  # StockReserved | ShopError | ActorsError


class CampaignActor(PersistentActor):
    """Proposes flash windows from demand; see the module docstring for the cycle."""

    event_type = CampaignEvent
    snapshot_type = CampaignSnapshot
    snapshot_every = 500
    mailbox_capacity = 10_000

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = policy_settings(settings)
        self.book = CampaignBook()
        # In memory only: a restart re-derives them from the book.
        self._dirty: set[str] = set()
        # Requests in flight, by product / window id, with the (monotonic) time they
        # were sent: a reply that never comes back (it could not be delivered) must not
        # block the product for good, so an entry older than _STALE_S no longer counts.
        self._evaluating: dict[str, float] = {}
        self._reserving: dict[str, float] = {}
        self._retry: set[str] = set()  # products whose reservation failed transiently

    # -- persistence -----------------------------------------------------------------

    def apply(self, event: CampaignEvent) -> None:
        self.book.apply(event)

    def snapshot(self) -> CampaignSnapshot:
        return self.book.snapshot()

    def restore(self, snapshot: CampaignSnapshot) -> None:
        self.book.restore(snapshot)

    def on_start(self) -> None:
        self._arm()
        for book in self.book.products.values():
            self._resend(book)

    # -- messages ----------------------------------------------------------------------

    def receive(self, message: Any) -> Any:
        match message:
            case DemandSignal():
                self._on_demand(message)
            case Evaluate():
                self._on_tick()
            case _Snapshot(product_id=pid, reply=reply):
                self._on_snapshot(pid, reply)
            case _Reserve(product_id=pid, window_id=wid):
                self._reserve(pid, wid)
            case _Reserved(product_id=pid, window_id=wid, reply=reply):
                self._on_reserved(pid, wid, reply)
            case OfferDecided():
                self._on_offer_decided(message)
            case WindowEnded(window_id=wid, product_id=pid):
                self._on_window_ended(pid, wid)
            case DeadlineFired(name=name) if name.startswith(_OFFER_DEADLINE):
                self._on_offer_overdue(name[len(_OFFER_DEADLINE) :])
            case _:
                raise TypeError(f"campaign: unexpected message {message!r}")
        return None

    def _on_demand(self, signal: DemandSignal) -> None:
        pid = signal.product_id
        self._dirty.add(pid)
        watching = signal.quantity >= self.policy.campaign_min_quantity
        if watching != self.book.get(pid).watching:
            self.persist(Watched(pid, watching))

    def _on_tick(self) -> None:
        self._arm()
        retry, self._retry = self._retry, set()
        for pid in sorted(retry):
            pending = self.book.get(pid).pending
            if pending is not None:
                self._reserve(pid, pending.window_id)
        due = self._dirty.union(self.book.recurring())
        self._dirty = set()
        for pid in sorted(due):
            if self._in_flight(self._evaluating, pid):
                continue
            self._evaluating[pid] = self.monotonic()
            self.request(
                self._ref("product", pid),
                ProductSnapshot(),
                partial(_Snapshot, pid),
                timeout=REQUEST_TIMEOUT_S,
            )

    def _on_snapshot(self, pid: str, reply: Any) -> None:
        self._evaluating.pop(pid, None)
        if not isinstance(reply, ProductState):
            if isinstance(reply, ShopError) and not reply.retryable:
                log.info("product not evaluated", product_id=pid, error=repr(reply))
            else:
                self._dirty.add(pid)  # transient: try again on the next tick
            return
        book = self.book.get(pid)
        try:
            evaluation = evaluate_product(
                reply, book, self.book.seller_slots, self.policy, self.now()
            )
        except ValueError as exc:
            # The product reported inconsistent data (say, listings in two currencies):
            # that product is skipped until it changes, the others go on.
            log.error("product not evaluated: bad state", product_id=pid, error=str(exc))
            return
        if evaluation.proposal is not None:
            self._propose(book, evaluation, reply)
        else:
            self._record(book, evaluation)

    # -- deciding ----------------------------------------------------------------------

    def _record(self, book: ProductBook, evaluation: Evaluation) -> None:
        """Record a decision that proposes nothing, unless it repeats the last one."""
        sig = signature(evaluation.outcome, evaluation.reasons)
        if sig == book.signature:
            return
        n = book.next_n
        did = ids.decision_id(book.product_id, n)
        view = decision_view(evaluation, did)
        self.persist(Decided(book.product_id, n, sig, evaluation.outcome, view))
        self.tell_after_commit(self._ref("decision", did), RecordDecision(view=view))

    def _propose(self, book: ProductBook, evaluation: Evaluation, state: ProductState) -> None:
        proposal = evaluation.proposal
        assert proposal is not None
        pid, n = book.product_id, book.next_n
        did, wid = ids.decision_id(pid, n), ids.window_id(pid, n)
        window = CreateWindow(
            product_id=pid,
            seller_id=proposal.seller_id,
            decision_id=did,
            unit_price_minor=proposal.unit_price_minor,
            currency=proposal.currency,
            quantity_total=proposal.quantity_total,
            min_participants=proposal.min_participants,
            max_per_buyer=proposal.max_per_buyer,
            activates_at=proposal.activates_at,
            expires_at=proposal.expires_at,
        )
        sig = signature(evaluation.outcome, evaluation.reasons)
        auto = next(
            (x.auto_approve for x in state.listings if x.seller_id == proposal.seller_id), True
        )
        if auto:
            pending = Pending(
                stage="reserving",
                n=n,
                window_id=wid,
                offer_id=None,
                made_at=evaluation.made_at,
                window=window,
                decision=decision_view(evaluation, did, window_id=wid),
            )
            self.persist(Proposed(pid, sig, pending))
            self.tell_after_commit(self.ref, _Reserve(pid, wid))
            return
        oid = ids.offer_id(pid, n)
        offer = OfferView(
            offer_id=oid,
            seller_id=proposal.seller_id,
            unit_price_minor=proposal.unit_price_minor,
            quantity=proposal.quantity_total,
            activates_at=format_time(proposal.activates_at),
            expires_at=format_time(proposal.expires_at),
            status="pending",
        )
        pending = Pending(
            stage="offered",
            n=n,
            window_id=wid,
            offer_id=oid,
            made_at=evaluation.made_at,
            window=window,
            decision=decision_view(evaluation, did, offer=offer),
        )
        self.persist(Proposed(pid, sig, pending))
        self.set_deadline(_OFFER_DEADLINE + oid, proposal.activates_at + OFFER_GRACE_S)
        self.tell_after_commit(self._ref("seller", proposal.seller_id), _offer(pending))
        self.tell_after_commit(self._ref("decision", did), RecordDecision(view=pending.decision))

    # -- setting stock aside ---------------------------------------------------------------

    def _reserve(self, pid: str, wid: str) -> None:
        pending = self.book.get(pid).pending
        if (
            pending is None
            or pending.window_id != wid
            or pending.stage != "reserving"
            or self._in_flight(self._reserving, wid)
        ):
            return
        self._reserving[wid] = self.monotonic()
        self.request(
            self._ref("seller", pending.seller_id),
            ReserveStock(product_id=pid, quantity=pending.window.quantity_total, window_id=wid),
            partial(_Reserved, pid, wid),
            timeout=REQUEST_TIMEOUT_S,
        )

    def _on_reserved(self, pid: str, wid: str, reply: Any) -> None:
        self._reserving.pop(wid, None)
        pending = self.book.get(pid).pending
        if pending is None or pending.window_id != wid or pending.stage != "reserving":
            return  # a duplicate answer: the proposal is settled already
        decision = self._ref("decision", pending.decision.decision_id)
        if isinstance(reply, StockReserved):
            self.persist(WindowOpened(pid, wid))
            self.tell_after_commit(self._ref("window", wid), pending.window)
            if pending.offer_id is None:
                self.tell_after_commit(decision, RecordDecision(view=pending.decision))
            else:
                self.tell_after_commit(decision, WindowLinked(window_id=wid))
            return
        if not isinstance(reply, ShopError) or reply.retryable:
            self._retry.add(pid)  # no answer or a passing failure: ask again next tick
            return
        log.info("stock not set aside", product_id=pid, window_id=wid, error=repr(reply))
        if pending.offer_id is None:
            view = reservation_failed(
                pending.decision, pending.seller_id, pending.window.quantity_total, reply
            )
            self.persist(
                ProposalDropped(
                    pid,
                    wid,
                    "reservation_failed",
                    signature=signature(view.outcome, view.reasons),
                    outcome=view.outcome,
                )
            )
            self.tell_after_commit(decision, RecordDecision(view=view))
        else:
            # Approved, but the stock went meanwhile: the offer stays approved, no window.
            self.persist(ProposalDropped(pid, wid, "reservation_failed"))
        self._dirty.add(pid)

    # -- offers ------------------------------------------------------------------------------

    def _on_offer_decided(self, message: OfferDecided) -> None:
        pid = self.book.offer_product(message.offer_id)
        pending = None if pid is None else self.book.get(pid).pending
        if pid is None or pending is None or pending.offer_id != message.offer_id:
            return  # decided already (a repeat), or not ours
        if message.seller_id != pending.seller_id:
            log.warning("offer decided by another seller", offer_id=message.offer_id)
            return
        self._settle_offer(pid, pending, message.status)

    def _on_offer_overdue(self, oid: str) -> None:
        pid = self.book.offer_product(oid)
        pending = None if pid is None else self.book.get(pid).pending
        if pid is not None and pending is not None and pending.offer_id == oid:
            log.warning("offer expired without the seller's word", offer_id=oid)
            self._settle_offer(pid, pending, "expired")

    def _settle_offer(self, pid: str, pending: Pending, status: str) -> None:
        oid = pending.offer_id
        assert oid is not None
        decision = self._ref("decision", pending.decision.decision_id)
        self.cancel_deadline(_OFFER_DEADLINE + oid)
        if status == "approved":
            self.persist(OfferApproved(pid, oid))
            self.tell_after_commit(decision, OfferStatusChanged(offer_id=oid, status=status))
            self.tell_after_commit(self.ref, _Reserve(pid, pending.window_id))
        elif status in ("rejected", "expired"):
            self.persist(ProposalDropped(pid, pending.window_id, status))
            self.tell_after_commit(decision, OfferStatusChanged(offer_id=oid, status=status))
        else:
            raise ValueError(f"unknown offer status {status!r}")

    # -- windows -----------------------------------------------------------------------------

    def _on_window_ended(self, pid: str, wid: str) -> None:
        if any(w.window_id == wid for w in self.book.get(pid).windows):
            self.persist(WindowClosed(pid, wid))
            self._dirty.add(pid)

    # -- helpers -------------------------------------------------------------------------------

    def _arm(self) -> None:
        self.start_timer(_TIMER, self.settings.campaign_interval_s, Evaluate())

    def _in_flight(self, requests: dict[str, float], key: str) -> bool:
        sent = requests.get(key)
        return sent is not None and self.monotonic() - sent < _STALE_S

    def _ref(self, kind: str, key: str) -> ActorRef:
        return self.system.ref(kind, key)

    def _resend(self, book: ProductBook) -> None:
        """Send again what the committed state implies; every receiver is idempotent."""
        last = book.last_decision
        if last is not None:
            self._tell(self._ref("decision", last.decision_id), RecordDecision(view=last))
        pending = book.pending
        if pending is not None:
            decision = self._ref("decision", pending.decision.decision_id)
            if pending.stage == "offered":
                self._tell(self._ref("seller", pending.seller_id), _offer(pending))
                self._tell(decision, RecordDecision(view=pending.decision))
            else:
                if pending.offer_id is not None:
                    self._tell(decision, RecordDecision(view=pending.decision))
                    self._tell(decision, OfferStatusChanged(pending.offer_id, "approved"))
                self._reserve(book.product_id, pending.window_id)
        for w in book.windows:
            decision = self._ref("decision", w.decision.decision_id)
            self._tell(decision, RecordDecision(view=w.decision))
            if w.offer_id is not None:
                self._tell(decision, OfferStatusChanged(w.offer_id, "approved"))
                self._tell(decision, WindowLinked(w.window_id))
            self._tell(self._ref("window", w.window_id), w.window)

    def _tell(self, target: ActorRef, message: Any) -> None:
        try:
            target.tell(message)
        except ActorsError as exc:
            log.warning("campaign message not delivered", target=repr(target), error=repr(exc))


def _offer(pending: Pending) -> CreateOffer:
    w = pending.window
    assert pending.offer_id is not None
    return CreateOffer(
        offer_id=pending.offer_id,
        decision_id=pending.decision.decision_id,
        product_id=w.product_id,
        window_id=pending.window_id,
        unit_price_minor=w.unit_price_minor,
        currency=w.currency,
        quantity=w.quantity_total,
        min_participants=w.min_participants,
        max_per_buyer=w.max_per_buyer,
        activates_at=w.activates_at,
        expires_at=w.expires_at,
    )
