"""What a notifier reads: the product's notification request, decoded leniently.

The product publishes ``{"event_id", "type": "requested", "at", "seq": 1, "data"}`` on
``<prefix>.notifications.<notification_id>.requested`` (see
:mod:`iceshop.product.notifications`). The notifier decodes the ``data`` into its own
:class:`NotifyRequest` rather than the product's Struct, for two reasons: unknown fields
are ignored (a newer product may add some; a request is never refused for that), and
``whatsapp_opt_in`` is read when present.

Consent: the product asks only for buyers who opted in (it filters on the buyer's
``whatsapp_opt_in`` when it records the request) and says so in the request
(``whatsapp_opt_in: true``). A request that says ``false`` is refused and recorded
``failed`` without a send. A request without the field was recorded by a product that
predates it, which also asked only for opted-in buyers: it is sent (refusing it would
drop every request queued across an upgrade).
"""

from __future__ import annotations

from typing import Final

import msgspec

__all__ = [
    "REQUEST_STREAM",
    "NotifyRequest",
    "RequestEvent",
    "decode_request",
    "request_subject_filter",
]

#: The stream the node stores requests in (``<prefix>.notifications.>``).
REQUEST_STREAM: Final = "ICESHOP_NOTIFICATIONS"


class NotifyRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of a notification request the notifier uses."""

    notification_id: str
    buyer_id: str
    phone: str
    locale: str = "tr"
    window_id: str
    product_id: str
    seller_id: str = ""
    unit_price_minor: int
    currency: str = "TRY"
    activates_at: str = ""
    expires_at: str
    whatsapp_opt_in: bool | None = None
    """``None``: the request does not say (a product before the field): sent, since
    that product recorded requests for opted-in buyers only; ``False`` is refused."""


class RequestEvent(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    type: str
    at: str
    seq: int
    data: NotifyRequest


_decoder: Final = msgspec.json.Decoder(RequestEvent)


def decode_request(payload: bytes) -> RequestEvent:
    """Decode a request body; raises ``msgspec.DecodeError`` (also for a bad shape)."""
    return _decoder.decode(payload)


def request_subject_filter(prefix: str) -> str:
    """The subjects notification requests are published on."""
    return f"{prefix}.notifications.*.requested"
