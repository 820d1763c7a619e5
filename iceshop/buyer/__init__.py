"""The buyer actor (kind ``buyer``): registration and purchase intents.

``actor`` holds the turn logic (commands, the product round trip, expiry, reservations);
``state`` the durable record and its events. Register it with the node's settings::

    system.register(KIND, lambda: BuyerActor(settings), cls=BuyerActor)
"""

from __future__ import annotations

from iceshop.buyer.actor import KIND, BuyerActor, ProductAnswer
from iceshop.buyer.state import BuyerEvent, BuyerProfile, BuyerState, IntentRecord

__all__ = [
    "KIND",
    "BuyerActor",
    "BuyerEvent",
    "BuyerProfile",
    "BuyerState",
    "IntentRecord",
    "ProductAnswer",
]
