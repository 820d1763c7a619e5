"""The seller actor (kind ``seller``): listings, stock held by windows, offers.

``actor`` holds the turn logic; ``state`` the durable record and its events. Register it
with the node's settings::

    system.register(KIND, lambda: SellerActor(settings), cls=SellerActor)
"""

from __future__ import annotations

from iceshop.seller.actor import CAMPAIGN_KEY, KIND, SellerActor
from iceshop.seller.state import Listing, OfferRecord, SellerEvent, SellerProfile, SellerState

__all__ = [
    "CAMPAIGN_KEY",
    "KIND",
    "Listing",
    "OfferRecord",
    "SellerActor",
    "SellerEvent",
    "SellerProfile",
    "SellerState",
]
