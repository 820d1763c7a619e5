"""Notifications: telling buyers about their windows, each exactly once where possible.

::

    product ──outbox──► ICESHOP_NOTIFICATIONS (<prefix>.notifications.<id>.requested)
                              │ durable pull consumer "iceshop-notifier", bound by the
                              ▼ notifier holding the sending number's send lease
                          Notifier ── lease, claim ──► ICESHOP_NOTIFY key-value bucket
                              │ templates (tr, en) ─► rate limit ─► Provider.send
                              │                                     (log | whatsapp | webhook)
                              ▼
    ICESHOP_EVENTS ◄── <prefix>.events.notification.<id>.sent | failed | dead

Provider status callbacks (delivered, read, failed) are merged into the same records
through :meth:`NotificationStore.apply_status`. See ``docs/notifications.md``.
"""

from __future__ import annotations

from iceshop.notify.events import NotificationOutcome, outcome_event
from iceshop.notify.lease import SendLease
from iceshop.notify.log_provider import LOG_FILE, LoggedMessage, LogProvider
from iceshop.notify.provider import (
    Outbound,
    PermanentSendError,
    Provider,
    RetryableSendError,
    SendError,
    Sent,
)
from iceshop.notify.ratelimit import RateLimiter
from iceshop.notify.request import REQUEST_STREAM, NotifyRequest, decode_request
from iceshop.notify.retry import Backoff
from iceshop.notify.service import build_notifier, open_provider, start_notifier
from iceshop.notify.store import (
    BUCKET,
    Attempt,
    Busy,
    Claimed,
    NotificationRecord,
    NotificationStore,
    Settled,
    StatusUpdate,
)
from iceshop.notify.templates import DEFAULT_TEMPLATE, format_price, render
from iceshop.notify.webhook_provider import WebhookProvider
from iceshop.notify.whatsapp import WhatsAppProvider, classify
from iceshop.notify.worker import DEFAULT_DURABLE, Notifier, NotifierStats

__all__ = [
    "BUCKET",
    "DEFAULT_DURABLE",
    "DEFAULT_TEMPLATE",
    "LOG_FILE",
    "REQUEST_STREAM",
    "Attempt",
    "Backoff",
    "Busy",
    "Claimed",
    "LogProvider",
    "LoggedMessage",
    "NotificationOutcome",
    "NotificationRecord",
    "NotificationStore",
    "Notifier",
    "NotifierStats",
    "NotifyRequest",
    "Outbound",
    "PermanentSendError",
    "Provider",
    "RateLimiter",
    "RetryableSendError",
    "SendError",
    "SendLease",
    "Sent",
    "Settled",
    "StatusUpdate",
    "WebhookProvider",
    "WhatsAppProvider",
    "build_notifier",
    "classify",
    "decode_request",
    "format_price",
    "open_provider",
    "outcome_event",
    "render",
    "start_notifier",
]
