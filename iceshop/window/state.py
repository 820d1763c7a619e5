"""A window's state as a plain value: the fold of its events, and the rules of a join.

Nothing here does I/O, reads a clock or knows about actors: :class:`WindowData` is
changed only by :meth:`WindowData.apply`, and the rules that decide a join or a leave
are methods that *read* it and return a ``ShopError`` value (or ``None``). The actor
decides, persists the event and lets ``apply`` change the state, so the same fold rebuilds
it on recovery.

The hot path is a join, so everything a join needs is O(1): reservations by ``join_id``
(a dict), the unreleased quantity each buyer holds (a dict), and running totals for
``quantity_reserved`` and ``participants``. Reservations also keep their join order in
a list, so a page of the reservations query is a slice.

Closing or cancelling a window that fails releases every reservation without rewriting
any of them: a reservation's status is derived from its own ``released`` flag and the
window's outcome (:meth:`WindowData.status_of`); only the running totals are reset.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from iceshop.window.events import (
    Activated,
    Cancelled,
    Closed,
    Created,
    Joined,
    Left,
    NoticeAcked,
    Reservation,
    SoldOut,
    WindowEvent,
    WindowSnapshot,
)
from iceshop.wire import ErrorCode, ReservationStatus, ShopError, format_time

__all__ = [
    "NOTICE_ACTIVATED",
    "NOTICE_ENDED",
    "NOTICE_RETURN_STOCK",
    "WindowData",
    "unknown_window",
]

#: Peers the window must tell about a change, until they confirm (see the actor).
NOTICE_ACTIVATED: Final = "activated"
NOTICE_RETURN_STOCK: Final = "return_stock"
NOTICE_ENDED: Final = "ended"

State = Literal["scheduled", "active", "closed", "cancelled"]
Outcome = Literal["succeeded", "failed"]
CloseReason = Literal["expired", "sold_out", "cancelled"]


def unknown_window(window_id: str) -> ShopError:
    return ShopError(ErrorCode.UNKNOWN_WINDOW, f"no window {window_id!r}")


class WindowData:
    """One window: what was proposed (``info``), where it is in its life, its joins."""

    __slots__ = (
        "activates_at_text",
        "cancel_reason",
        "close_reason",
        "event_seq",
        "expires_at_text",
        "held",
        "info",
        "order",
        "outcome",
        "participants",
        "quantity_reserved",
        "reservations",
        "state",
        "unacked",
    )

    def __init__(self, info: Created) -> None:
        self.info = info
        self.activates_at_text = format_time(info.activates_at)
        self.expires_at_text = format_time(info.expires_at)
        self.state: State = "scheduled"
        self.outcome: Outcome | None = None
        self.close_reason: CloseReason | None = None
        self.cancel_reason: str | None = None
        #: seq of the last published event (``created`` is 1).
        self.event_seq = 1
        self.reservations: dict[str, Reservation] = {}
        self.order: list[str] = []
        #: Unreleased quantity per buyer; a buyer who ever joined stays (maybe at 0).
        self.held: dict[str, int] = {}
        self.quantity_reserved = 0
        self.participants = 0
        #: Notices not yet confirmed by their peer.
        self.unacked: set[str] = set()

    # -- the fold ------------------------------------------------------------------------

    def apply(self, event: WindowEvent) -> None:
        """Fold one event (any but ``Created``, which makes the value)."""
        kind = type(event)
        if kind is Joined:
            assert isinstance(event, Joined)
            self._joined(event)
        elif kind is Left:
            assert isinstance(event, Left)
            self._left(event)
        elif kind is Activated:
            self.state = "active"
        elif kind is SoldOut:
            pass
        elif kind is Closed:
            assert isinstance(event, Closed)
            self.state = "closed"
            self.close_reason = event.reason
            self._settle()
        elif kind is Cancelled:
            assert isinstance(event, Cancelled)
            self.state = "cancelled"
            self.close_reason = "cancelled"
            self.cancel_reason = event.reason
            self._settle(failed=True)
        elif kind is NoticeAcked:
            assert isinstance(event, NoticeAcked)
            self.unacked.discard(event.notice)
            return
        else:
            raise TypeError(f"cannot apply {event!r} to an existing window")
        self.event_seq += 1
        if kind is Activated:
            self.unacked.add(NOTICE_ACTIVATED)

    def _joined(self, event: Joined) -> None:
        buyer = event.buyer_id
        quantity = event.quantity
        self.reservations[event.join_id] = Reservation(event.join_id, buyer, quantity, event.at)
        self.order.append(event.join_id)
        held = self.held.get(buyer, 0)
        if held == 0:
            self.participants += 1
        self.held[buyer] = held + quantity
        self.quantity_reserved += quantity

    def _left(self, event: Left) -> None:
        old = self.reservations[event.join_id]
        self.reservations[event.join_id] = msgspec.structs.replace(old, released=True)
        held = self.held[old.buyer_id] - old.quantity
        self.held[old.buyer_id] = held
        if held == 0:
            self.participants -= 1
        self.quantity_reserved -= old.quantity

    def _settle(self, *, failed: bool = False) -> None:
        """The tipping point: enough participants keep their reservations (confirmed),
        otherwise every reservation is released."""
        if failed or self.participants < self.info.min_participants:
            self.outcome = "failed"
            self.quantity_reserved = 0
            self.participants = 0
            self.held = dict.fromkeys(self.held, 0)
        else:
            self.outcome = "succeeded"
        # Telling the product about an activation is pointless once the window is over.
        self.unacked.discard(NOTICE_ACTIVATED)
        self.unacked.add(NOTICE_RETURN_STOCK)
        self.unacked.add(NOTICE_ENDED)

    # -- snapshots -----------------------------------------------------------------------

    def snapshot(self) -> WindowSnapshot:
        return WindowSnapshot(
            info=self.info,
            state=self.state,
            outcome=self.outcome,
            close_reason=self.close_reason,
            cancel_reason=self.cancel_reason,
            event_seq=self.event_seq,
            reservations=list(self.reservations.values()),
            unacked=sorted(self.unacked),
        )

    @classmethod
    def restore(cls, snap: WindowSnapshot) -> WindowData:
        w = cls(snap.info)
        w.state = snap.state
        w.outcome = snap.outcome
        w.close_reason = snap.close_reason
        w.cancel_reason = snap.cancel_reason
        w.event_seq = snap.event_seq
        w.unacked = set(snap.unacked)
        counted = snap.outcome != "failed"
        held = w.held
        for r in snap.reservations:
            w.reservations[r.join_id] = r
            w.order.append(r.join_id)
            before = held.get(r.buyer_id, 0)
            if counted and not r.released:
                if before == 0:
                    w.participants += 1
                held[r.buyer_id] = before + r.quantity
                w.quantity_reserved += r.quantity
            else:
                held[r.buyer_id] = before
        return w

    # -- reading -------------------------------------------------------------------------

    @property
    def available(self) -> int:
        return self.info.quantity_total - self.quantity_reserved

    @property
    def ended(self) -> bool:
        return self.state == "closed" or self.state == "cancelled"

    def status_of(self, r: Reservation) -> ReservationStatus:
        if r.released or self.outcome == "failed":
            return "released"
        if self.outcome == "succeeded":
            return "confirmed"
        return "reserved"

    def unreleased(self) -> list[Reservation]:
        """Reservations a failing close or a cancel would release now."""
        if self.outcome == "failed":
            return []
        return [r for r in self.reservations.values() if not r.released]

    def would_fail(self) -> bool:
        """Whether closing now would fail the window (below the tipping point)."""
        return self.participants < self.info.min_participants

    # -- the rules of a join and a leave -----------------------------------------------------

    def replay(self, join_id: str, buyer_id: str, quantity: int) -> Reservation | ShopError | None:
        """The reservation a repeated join returns, ``idempotency_conflict`` when the id
        was used with other parameters, or ``None`` for a new ``join_id``."""
        r = self.reservations.get(join_id)
        if r is None:
            return None
        if r.buyer_id != buyer_id or r.quantity != quantity:
            return ShopError(
                ErrorCode.IDEMPOTENCY_CONFLICT,
                f"join_id {join_id!r} was already used with other parameters",
                {"join_id": join_id},
            )
        return r

    def admission_error(self, buyer_id: str, quantity: int) -> ShopError | None:
        """Why a new join (of a known buyer) cannot be taken now, in the contract's
        precedence: window state, then the per-buyer limit, then the stock."""
        state = self.state
        if state != "active":
            if state == "scheduled":
                return ShopError(
                    ErrorCode.WINDOW_NOT_ACTIVE,
                    f"the window opens at {self.activates_at_text}",
                    {"activates_at": self.activates_at_text},
                )
            if self.close_reason == "sold_out":
                return ShopError(ErrorCode.SOLD_OUT, "the window sold out")
            return ShopError(ErrorCode.WINDOW_CLOSED, f"the window is {state}")
        limit = self.info.max_per_buyer
        held = self.held.get(buyer_id, 0)
        if held + quantity > limit:
            return ShopError(
                ErrorCode.LIMIT_EXCEEDED,
                f"at most {limit} per buyer; {buyer_id!r} holds {held}",
                {"max_per_buyer": limit, "held": held},
            )
        available = self.info.quantity_total - self.quantity_reserved
        if quantity > available:
            if available == 0:
                return ShopError(ErrorCode.SOLD_OUT, "nothing is left in this window")
            return ShopError(
                ErrorCode.INSUFFICIENT_STOCK,
                f"only {available} left",
                {"available": available},
            )
        return None

    def leave_error(self, join_id: str, buyer_id: str) -> Reservation | ShopError:
        """The reservation a leave releases (or already released), or why not."""
        r = self.reservations.get(join_id)
        if r is None:
            return ShopError(ErrorCode.UNKNOWN_JOIN, f"no join {join_id!r} in this window")
        if r.buyer_id != buyer_id:
            return ShopError(ErrorCode.FORBIDDEN, f"join {join_id!r} is held by another buyer")
        if self.status_of(r) != "released" and self.state != "active":
            return ShopError(ErrorCode.WINDOW_CLOSED, f"the window is {self.state}")
        return r
