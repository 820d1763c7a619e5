"""What a window shows the world: its view, its reservations, its event bodies.

Pure functions from :class:`~iceshop.window.state.WindowData` to the contract's Structs.
Event bodies of ``joined`` and ``left`` carry the window view plus the reservation they
are about (an additive field, ``reservation``); every other window event carries the
window view alone, so ``closed`` shows ``outcome`` and ``close_reason``.

The reservations query pages over join order, which never changes (reservations are
never removed, a released one keeps its place). The cursor is the position of the next
reservation, written as a decimal string; clients treat it as opaque.
"""

from __future__ import annotations

from typing import Any, Final

from iceshop.window.events import Reservation
from iceshop.window.state import WindowData
from iceshop.wire import (
    MAX_LIMIT,
    Event,
    JoinReply,
    ReservationsReply,
    ReservationView,
    ShopError,
    WindowView,
    format_time,
)

__all__ = [
    "ReservationEventData",
    "event_body",
    "join_reply",
    "reservation_view",
    "reservations_page",
    "window_view",
]

_MAX_CURSOR_DIGITS: Final = 18


class ReservationEventData(WindowView, frozen=True):
    """Data of ``joined`` / ``left``: the window after the change, and the reservation."""

    reservation: ReservationView


def _view_fields(w: WindowData) -> dict[str, Any]:
    info = w.info
    return dict(
        window_id=info.window_id,
        product_id=info.product_id,
        seller_id=info.seller_id,
        state=w.state,
        outcome=w.outcome,
        close_reason=w.close_reason,
        unit_price_minor=info.unit_price_minor,
        currency=info.currency,
        quantity_total=info.quantity_total,
        quantity_reserved=w.quantity_reserved,
        participants=w.participants,
        min_participants=info.min_participants,
        max_per_buyer=info.max_per_buyer,
        activates_at=w.activates_at_text,
        expires_at=w.expires_at_text,
        decision_id=info.decision_id,
    )


def window_view(w: WindowData) -> WindowView:
    return WindowView(**_view_fields(w))


def reservation_view(
    w: WindowData, r: Reservation, reserved_at: str | None = None
) -> ReservationView:
    """``reserved_at`` may be passed already formatted (a join's event has it)."""
    return ReservationView(
        join_id=r.join_id,
        buyer_id=r.buyer_id,
        quantity=r.quantity,
        status=w.status_of(r),
        reserved_at=format_time(r.reserved_at) if reserved_at is None else reserved_at,
    )


def join_reply(w: WindowData, r: Reservation) -> JoinReply:
    """The answer to a join (first or repeated): the status is always the current one."""
    info = w.info
    return JoinReply(
        join_id=r.join_id,
        window_id=info.window_id,
        status=w.status_of(r),
        quantity=r.quantity,
        unit_price_minor=info.unit_price_minor,
        currency=info.currency,
    )


def event_body(
    w: WindowData, event_type: str, at: str, reservation: Reservation | None = None
) -> Event[WindowView]:
    """The contract event for the window's latest change (``seq`` = ``w.event_seq``);
    ``at`` is the time of the change, formatted."""
    seq = w.event_seq
    data: WindowView
    if reservation is None:
        data = WindowView(**_view_fields(w))
    else:
        reserved_at = at if event_type == "joined" else None
        data = ReservationEventData(
            **_view_fields(w), reservation=reservation_view(w, reservation, reserved_at)
        )
    return Event(
        event_id=f"window.{w.info.window_id}.{seq}",
        type=event_type,
        at=at,
        seq=seq,
        data=data,
    )


def reservations_page(
    w: WindowData, limit: int, cursor: str | None
) -> ReservationsReply | ShopError:
    """One page of reservations in join order; ``invalid_request`` for a bad cursor."""
    start = 0
    if cursor is not None:
        if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > _MAX_CURSOR_DIGITS:
            return ShopError.invalid("cursor: not a cursor of this query", field="cursor")
        start = int(cursor)
        if start > len(w.order):
            return ShopError.invalid("cursor: not a cursor of this query", field="cursor")
    limit = max(1, min(limit, MAX_LIMIT))
    ids = w.order[start : start + limit]
    reservations = w.reservations
    end = start + len(ids)
    return ReservationsReply(
        reservations=[reservation_view(w, reservations[j]) for j in ids],
        next_cursor=str(end) if end < len(w.order) else None,
    )
