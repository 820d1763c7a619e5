"""Messages a window sends to itself (answers of its own requests, guard timers).

They never leave the node and are never journaled, so they may carry any Python value
(``result`` is whatever the peer answered, or an ``ActorsError`` such as ``AskTimeout``).
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["BuyerChecked", "NoticeReply"]


class BuyerChecked(msgspec.Struct, frozen=True):
    """The buyer actor's answer to ``CheckBuyer``: ``BuyerKnown``, a ``ShopError``
    (``unknown_buyer``) or an ``ActorsError`` when it could not answer."""

    buyer_id: str
    result: Any


class NoticeReply(msgspec.Struct, frozen=True):
    """A peer's answer to one of the window's notices (``activated``, ``return_stock``,
    ``ended``); anything but an ``ActorsError`` confirms it."""

    notice: str
    result: Any
