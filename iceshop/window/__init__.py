"""The flash window: one actor per window that owns its timers, joins, stock and outcome.

Modules: ``events`` (what the journal holds), ``state`` (the fold of the events and the
rules of a join, pure), ``views`` (replies and event bodies), ``access`` (who may do
what), ``notices`` (what the window owes its peers), ``waiting`` (joins waiting for a
buyer check), ``messages`` (what the window sends itself) and ``actor`` (the actor that
ties them together: persistence, timers, buyer checks, notices). See ``actor`` for the
design.
"""

from __future__ import annotations

from iceshop.window.actor import ACTIVATE, EXPIRE, NOTIFY, WindowActor
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
from iceshop.window.messages import BuyerChecked, NoticeReply
from iceshop.window.state import WindowData
from iceshop.window.views import ReservationEventData

__all__ = [
    "ACTIVATE",
    "EXPIRE",
    "NOTIFY",
    "Activated",
    "BuyerChecked",
    "Cancelled",
    "Closed",
    "Created",
    "Joined",
    "Left",
    "NoticeAcked",
    "NoticeReply",
    "Reservation",
    "ReservationEventData",
    "SoldOut",
    "WindowActor",
    "WindowData",
    "WindowEvent",
    "WindowSnapshot",
]
