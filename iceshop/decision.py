"""The decision actor: one campaign decision, stored and served (kind ``decision``).

The campaign decides; this actor keeps the record that ``decisions.<id>.get`` returns,
so reads never touch the campaign singleton. With authentication on, a decision is for
admins and for the seller its offer went to (the owner, which only this actor knows).
It is persistent and small: the decision view, plus the two things that change after
the decision was made: the offer's status (approved, rejected, expired) and the window
that was eventually created.

It also emits ``<prefix>.events.decision.<id>.made`` (the decision without its inputs)
in the same commit that first stores the decision: the event can never announce a
decision that ``get`` does not know yet, and a repeated ``RecordDecision`` (the campaign
re-sends after a restart) neither changes the record nor emits again. The event id is
``decision.<id>.1``, so a publish retried from the outbox is de-duplicated downstream.
The same commit stages the decision's audit record (``decision.made`` by
``system/campaign``, with the reasons and inputs ``get`` returns; see ``iceshop.audit``).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import structlog

from actors import PersistentActor
from iceshop.audit import decision_made, emit_audit
from iceshop.events import emit_event
from iceshop.protocol import (
    OfferStatusChanged,
    Principal,
    RecordDecision,
    Request,
    WindowLinked,
)
from iceshop.settings import Settings
from iceshop.wire import (
    CommandKind,
    DecisionMade,
    DecisionView,
    ErrorCode,
    OfferStatus,
    ShopError,
)

__all__ = ["DecisionActor", "DecisionEvent", "OfferStatusSet", "Recorded", "WindowSet"]

log = structlog.get_logger("iceshop.decision")

#: The statuses an offer can move to from ``pending``; each is final.
_FINAL_STATUSES: Final[dict[str, OfferStatus]] = {
    "approved": "approved",
    "rejected": "rejected",
    "expired": "expired",
}


class Recorded(msgspec.Struct, frozen=True, tag=True):
    view: DecisionView


class OfferStatusSet(msgspec.Struct, frozen=True, tag=True):
    status: OfferStatus


class WindowSet(msgspec.Struct, frozen=True, tag=True):
    window_id: str


DecisionEvent = Recorded | OfferStatusSet | WindowSet

_VIEW_CODEC: Final = (msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(DecisionView))


class DecisionActor(PersistentActor):
    """Stores one decision; see the module docstring."""

    event_type = DecisionEvent
    passivate_after = 300.0

    def __init__(self, settings: Settings) -> None:
        self.prefix = settings.prefix
        self.view: DecisionView | None = None

    def apply(self, event: DecisionEvent) -> None:
        match event:
            case Recorded(view=view):
                self.view = view
            case OfferStatusSet(status=status):
                if self.view is not None and self.view.offer is not None:
                    offer = msgspec.structs.replace(self.view.offer, status=status)
                    self.view = msgspec.structs.replace(self.view, offer=offer)
            case WindowSet(window_id=window_id):
                if self.view is not None:
                    self.view = msgspec.structs.replace(self.view, window_id=window_id)

    def receive(self, message: Any) -> Any:
        match message:
            case Request(kind=CommandKind.DECISION_GET, principal=principal):
                if not self._may_read(principal):
                    return ShopError(
                        ErrorCode.FORBIDDEN, "a decision is for admins and its offer's seller"
                    )
                if self.view is None:
                    return ShopError(ErrorCode.UNKNOWN_DECISION, f"no decision {self.key!r}")
                return self.view
            case RecordDecision(view=view):
                self._record(view)
            case OfferStatusChanged(offer_id=offer_id, status=status):
                self._offer_status(offer_id, status)
            case WindowLinked(window_id=window_id):
                if self.view is None:
                    log.warning("window for an unknown decision", decision_id=self.key)
                elif self.view.window_id != window_id:
                    self.persist(WindowSet(window_id))
            case _:
                raise TypeError(f"decision: unexpected message {message!r}")
        return None

    def _may_read(self, principal: Principal | None) -> bool:
        """Admins read every decision; a seller only one whose offer is its own (so
        not a decision without an offer, nor one that does not exist)."""
        if principal is None or principal.role == "admin":
            return True
        offer = None if self.view is None else self.view.offer
        return principal.role == "seller" and offer is not None and offer.seller_id == principal.sub

    def _record(self, view: Any) -> None:
        if not isinstance(view, DecisionView) or view.decision_id != self.key:
            raise TypeError(f"decision {self.key!r}: RecordDecision needs its DecisionView")
        if self.view is not None:
            if view != self.view:
                log.info("decision recorded already; first record kept", decision_id=self.key)
            return
        # Decode what the journal will decode now, so a bad view fails this turn and
        # never the actor's recovery.
        encoder, decoder = _VIEW_CODEC
        decoder.decode(encoder.encode(view))
        self.persist(Recorded(view))
        made = DecisionMade(
            decision_id=view.decision_id,
            product_id=view.product_id,
            made_at=view.made_at,
            outcome=view.outcome,
            reasons=view.reasons,
            offer=view.offer,
            window_id=view.window_id,
        )
        emit_event(self, self.prefix, "decision", self.key, "made", 1, view.made_at, made)
        emit_audit(self, self.prefix, decision_made(view))

    def _offer_status(self, offer_id: str, status: str) -> None:
        offer = None if self.view is None else self.view.offer
        if offer is None or offer.offer_id != offer_id:
            log.warning("status of an unknown offer", decision_id=self.key, offer_id=offer_id)
            return
        final = _FINAL_STATUSES.get(status)
        if final is None:
            raise ValueError(f"unknown offer status {status!r}")
        if offer.status == "pending":
            self.persist(OfferStatusSet(final))
