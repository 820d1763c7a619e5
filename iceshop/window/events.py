"""What a window's journal holds: its events, its reservations and its snapshot.

Every event but one is also a contract event: the struct's tag *is* the contract's event
type (``created``, ``activated``, ``joined``, ``left``, ``sold_out``, ``closed``,
``cancelled``), so one journal event publishes exactly one ``iceshop.events.window.*``
message and the per-window ``seq`` is a plain counter folded from the journal. The
exception is :class:`NoticeAcked`, the window's own bookkeeping of which peers have
heard about its activation and its end.

Events carry the time they happened (``at``) so that folding them is deterministic:
the outcome of a close, for instance, is computed from the state, never from a clock.
They are ``array_like`` (a tagged array on disk), so new fields go at the end, with a
default.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "Activated",
    "Cancelled",
    "Closed",
    "Created",
    "Joined",
    "Left",
    "NoticeAcked",
    "Reservation",
    "SoldOut",
    "WindowEvent",
    "WindowSnapshot",
]


class _Event(msgspec.Struct, frozen=True, array_like=True, tag_field="type"):
    """Base of the journal events (tagged; the tag names the contract event)."""


class Created(_Event, frozen=True, tag="created"):
    """The window as the campaign proposed it; never changes afterwards."""

    window_id: str
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
    at: float


class Activated(_Event, frozen=True, tag="activated"):
    at: float


class Joined(_Event, frozen=True, tag="joined"):
    join_id: str
    buyer_id: str
    quantity: int
    at: float


class Left(_Event, frozen=True, tag="left"):
    join_id: str
    at: float


class SoldOut(_Event, frozen=True, tag="sold_out"):
    at: float


class Closed(_Event, frozen=True, tag="closed"):
    """Closed at expiry or sell-out; the outcome follows from the state at that point."""

    reason: Literal["expired", "sold_out"]
    at: float


class Cancelled(_Event, frozen=True, tag="cancelled"):
    reason: str
    at: float


class NoticeAcked(_Event, frozen=True, tag="notice_acked"):
    """A peer confirmed a notice (``activated``, ``return_stock``, ``ended``)."""

    notice: str


WindowEvent = Created | Activated | Joined | Left | SoldOut | Closed | Cancelled | NoticeAcked

#: The events that are also published (all but NoticeAcked).
PUBLISHED: frozenset[type[_Event]] = frozenset(
    {Created, Activated, Joined, Left, SoldOut, Closed, Cancelled}
)


class Reservation(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One join. ``released`` is set by a leave; a failed close or a cancel releases
    every reservation without touching this flag (see ``WindowData.status_of``)."""

    join_id: str
    buyer_id: str
    quantity: int
    reserved_at: float
    released: bool = False


class WindowSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The whole state of a window, so a hot window recovers without its full journal.
    Derived counters (held quantity per buyer, participants) are rebuilt on restore."""

    info: Created
    state: Literal["scheduled", "active", "closed", "cancelled"]
    outcome: Literal["succeeded", "failed"] | None
    close_reason: Literal["expired", "sold_out", "cancelled"] | None
    cancel_reason: str | None
    event_seq: int
    reservations: list[Reservation]
    unacked: list[str]
