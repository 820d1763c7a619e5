"""Notification requests: what the product hands to the messaging layer.

When a window activates, every buyer with an open intent for the product whose
``max_price_minor`` is at least the window's price, and who opted in to WhatsApp, is to
be told about it. The product records one ``NotificationRequested`` event per buyer and
publishes it (after commit, from the outbox, so at least once) on the internal subject::

    <prefix>.notifications.<notification_id>.requested

with the usual event body ``{"event_id", "type": "requested", "at", "seq": 1, "data"}``
whose ``data`` is a :class:`NotificationRequest`. The messaging layer delivers it and
announces the outcome on the contract's ``<prefix>.events.notification.<id>.sent`` /
``failed`` / ``dead`` (``seq`` 2 onwards). The subject sits outside ``events.>`` on
purpose: it is a work item for one consumer, not a fact for every listener.

Consent travels with the request: ``whatsapp_opt_in`` is the buyer's opt-in as the product
held it when it recorded the request (from the buyer's latest intent details). The
product records requests only for buyers who opted in, so it is ``true`` in every request
it publishes; the notifier refuses (records ``failed``, sends nothing) a request where it
is ``false`` or missing, so consent is checked on both sides.

``notification_id`` is derived from the window and the buyer, so a replayed activation
asks for the same notification again and the consumer can drop the copy. It is a hash
rather than ``<window_id>.<buyer_id>``: a dot would split the subject token, and two
64-character ids joined would break the contract's 64-character id rule.
"""

from __future__ import annotations

import hashlib

import msgspec

from iceshop.product.state import NotificationRequested
from iceshop.wire.envelope import encode
from iceshop.wire.times import format_time
from iceshop.wire.views import Event

__all__ = [
    "NotificationRequest",
    "notification_id",
    "notification_payload",
    "notification_subject",
]


def notification_id(window_id: str, buyer_id: str) -> str:
    """A stable id (``n`` + 26 hex digits) for telling ``buyer_id`` about ``window_id``."""
    digest = hashlib.blake2b(f"{window_id}\x00{buyer_id}".encode(), digest_size=13)
    return "n" + digest.hexdigest()


def notification_subject(notification_id: str, prefix: str) -> str:
    return f"{prefix}.notifications.{notification_id}.requested"


class NotificationRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The ``data`` of a notification request, as the messaging layer reads it."""

    notification_id: str
    buyer_id: str
    phone: str
    locale: str
    window_id: str
    product_id: str
    seller_id: str
    intent_id: str
    unit_price_minor: int
    currency: str
    activates_at: str
    expires_at: str
    whatsapp_opt_in: bool = True
    """The buyer's opt-in as the product held it (always true: see the module docstring)."""


def notification_payload(request: NotificationRequested) -> tuple[str, bytes]:
    """The event id and the JSON body published for ``request``."""
    event_id = f"notification.{request.notification_id}.requested"
    data = NotificationRequest(
        notification_id=request.notification_id,
        buyer_id=request.buyer_id,
        phone=request.phone,
        locale=request.locale,
        window_id=request.window_id,
        product_id=request.product_id,
        seller_id=request.seller_id,
        intent_id=request.intent_id,
        unit_price_minor=request.unit_price_minor,
        currency=request.currency,
        activates_at=format_time(request.activates_at),
        expires_at=format_time(request.expires_at),
        whatsapp_opt_in=True,  # requested only for buyers who opted in
    )
    body = Event(event_id=event_id, type="requested", at=format_time(request.at), seq=1, data=data)
    return event_id, encode(body)
