"""The product actor (kind ``product``): catalog of listings and demand aggregator.

``actor`` holds the turn logic; ``state`` the durable record, its events and in-memory
indexes; ``currency`` the claim a seller makes before it stores a listing (one currency
per product); ``notifications`` the notification requests it hands to the messaging
layer.
Register it with the node's settings::

    system.register(KIND, lambda: ProductActor(settings), cls=ProductActor)
"""

from __future__ import annotations

from iceshop.product.actor import EXPIRY_DEADLINE, KIND, ProductActor
from iceshop.product.currency import ClaimCurrency, CurrencyGranted
from iceshop.product.notifications import (
    NotificationRequest,
    notification_id,
    notification_subject,
)
from iceshop.product.state import IntentEntry, NotificationRequested, ProductData, ProductEvent

__all__ = [
    "EXPIRY_DEADLINE",
    "KIND",
    "ClaimCurrency",
    "CurrencyGranted",
    "IntentEntry",
    "NotificationRequest",
    "NotificationRequested",
    "ProductActor",
    "ProductData",
    "ProductEvent",
    "notification_id",
    "notification_subject",
]
