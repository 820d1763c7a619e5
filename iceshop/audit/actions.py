"""The records of each audited action, built from what the acting actor knows.

One builder per action, taking plain values (never an actor's state classes, so the
audit depends on no actor). Each ``audit_id`` is ``<entity>.<id>.<verb>`` for a change
that happens once to an entity (a decision is made once, an offer settles once, a window
is cancelled once, a key is created and revoked once) and adds a count the entity keeps
for one that can repeat (a seller's n-th registration): deterministic, so the same
change re-published is the same record.
"""

from __future__ import annotations

from iceshop.audit.record import (
    SYSTEM_CAMPAIGN,
    AuditActor,
    AuditRecord,
    given_reason,
)
from iceshop.wire import ApiKeyView, DecisionView, Reason, WindowView, format_time
from iceshop.wire.views import Number

__all__ = [
    "apikey_changed",
    "decision_made",
    "offer_settled",
    "seller_registered",
    "window_cancelled",
]


def decision_made(view: DecisionView) -> AuditRecord:
    """The campaign's decision: its principal reasons as ``decisions.<id>.get`` returns
    them, every policy input, and the offer's terms when it made one."""
    refs = {"decision_id": view.decision_id, "product_id": view.product_id}
    inputs: dict[str, Number] = dict(view.inputs)
    if view.window_id is not None:
        refs["window_id"] = view.window_id
    if view.offer is not None:
        refs["offer_id"] = view.offer.offer_id
        refs["seller_id"] = view.offer.seller_id
        inputs["offer.unit_price_minor"] = view.offer.unit_price_minor
        inputs["offer.quantity"] = view.offer.quantity
    return AuditRecord(
        audit_id=f"decision.{view.decision_id}.made",
        at=view.made_at,
        actor=SYSTEM_CAMPAIGN,
        action="decision.made",
        entity="decision",
        entity_id=view.decision_id,
        why=list(view.reasons),
        outcome=view.outcome,
        refs=refs,
        inputs=inputs,
    )


def offer_settled(
    *,
    offer_id: str,
    status: str,
    actor: AuditActor,
    at: float,
    seller_id: str,
    decision_id: str,
    product_id: str,
    window_id: str,
    currency: str,
    unit_price_minor: int,
    quantity: int,
    min_participants: int,
    max_per_buyer: int,
    activates_at: float,
    answered: str | None = None,
) -> AuditRecord:
    """An offer approved, rejected or expired. ``answered`` is the seller's answer
    (``approved`` / ``rejected``) that came too late and so expired it."""
    why: list[Reason] = []
    if status == "expired":
        deadline = format_time(activates_at)
        if answered is None:
            text = f"The seller did not answer before the window's activation at {deadline}."
        else:
            verb = "approval" if answered == "approved" else "rejection"
            text = f"The seller's {verb} came after the window's activation at {deadline}."
        why.append(Reason(code="offer_expired", text=text, value=at, threshold=activates_at))
    return AuditRecord(
        audit_id=f"offer.{offer_id}.{status}",
        at=format_time(at),
        actor=actor,
        action=f"offer.{status}",
        entity="offer",
        entity_id=offer_id,
        why=why,
        outcome=status,
        refs={
            "offer_id": offer_id,
            "seller_id": seller_id,
            "decision_id": decision_id,
            "product_id": product_id,
            "window_id": window_id,
            "currency": currency,
        },
        inputs={
            "unit_price_minor": unit_price_minor,
            "quantity": quantity,
            "min_participants": min_participants,
            "max_per_buyer": max_per_buyer,
        },
    )


def window_cancelled(
    before: WindowView,
    *,
    reason: str,
    actor: AuditActor,
    at: float,
    released_reservations: int,
    released_quantity: int,
) -> AuditRecord:
    """An admin's cancel, with the reason given and the window as it stood before."""
    refs = {
        "window_id": before.window_id,
        "product_id": before.product_id,
        "seller_id": before.seller_id,
        "currency": before.currency,
        "state_before": before.state,
    }
    if before.decision_id is not None:
        refs["decision_id"] = before.decision_id
    return AuditRecord(
        audit_id=f"window.{before.window_id}.cancelled",
        at=format_time(at),
        actor=actor,
        action="window.cancelled",
        entity="window",
        entity_id=before.window_id,
        why=[given_reason(reason)],
        outcome="cancelled",
        refs=refs,
        inputs={
            "unit_price_minor": before.unit_price_minor,
            "quantity_total": before.quantity_total,
            "quantity_reserved": before.quantity_reserved,
            "participants": before.participants,
            "min_participants": before.min_participants,
            "released_reservations": released_reservations,
            "released_quantity": released_quantity,
        },
    )


def apikey_changed(view: ApiKeyView, *, verb: str, actor: AuditActor, at: float) -> AuditRecord:
    """An API key ``created`` or ``revoked`` (never its secret)."""
    why = [Reason(code="note", text=view.note, value=None, threshold=None)] if view.note else []
    return AuditRecord(
        audit_id=f"apikey.{view.key_id}.{verb}",
        at=format_time(at),
        actor=actor,
        action=f"apikey.{verb}",
        entity="apikey",
        entity_id=view.key_id,
        why=why if verb == "created" else [],
        outcome=view.status,
        refs={"key_id": view.key_id, "role": view.role, "principal": view.principal},
    )


def seller_registered(
    seller_id: str,
    *,
    created: bool,
    actor: AuditActor,
    at: float,
    seq: int,
    max_active_windows: int,
    auto_approve: bool,
) -> AuditRecord:
    """A seller registered, or its profile changed (capacity and approval mode shape which
    windows the campaign proposes to it); ``seq``: the seller's n-th registration."""
    verb = "registered" if created else "updated"
    return AuditRecord(
        audit_id=f"seller.{seller_id}.{verb}.{seq}",
        at=format_time(at),
        actor=actor,
        action=f"seller.{verb}",
        entity="seller",
        entity_id=seller_id,
        refs={"seller_id": seller_id},
        inputs={"max_active_windows": max_active_windows, "auto_approve": int(auto_approve)},
    )
