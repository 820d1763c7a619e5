"""The contract's notification events: ``<prefix>.events.notification.<id>.<type>``.

``type`` is the notifier's verdict: ``sent`` (the provider took the message),
``failed`` (a permanent error, or no consent) or ``dead`` (every attempt failed). The
request the product published was ``seq`` 1; the verdict is ``seq`` 2, and its
``event_id`` is ``notification.<id>.2`` like every event of the shop
(``<entity>.<id>.<seq>``). A notification gets exactly one verdict, so re-announcing it
after a crash or a duplicate request publishes the same id again, which the event
stream drops within its duplicate window; after that window a consumer may see it
twice (delivery is at least once, and the id tells copies apart).

``data``::

    notification_id, buyer_id, window_id, product_id, channel (the provider),
    attempts (send attempts made), message_id (the provider's, or null),
    error_code (null unless failed or dead), reason (null or a human text)
"""

from __future__ import annotations

from typing import Final

import msgspec

from iceshop.notify.store import NotificationRecord
from iceshop.wire import Event, encode, event_subject, format_time

__all__ = ["OUTCOME_SEQ", "NotificationOutcome", "outcome_event", "verdict"]

OUTCOME_SEQ: Final = 2


class NotificationOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """The ``data`` of a ``sent`` / ``failed`` / ``dead`` event."""

    notification_id: str
    buyer_id: str
    window_id: str
    product_id: str
    channel: str
    attempts: int
    message_id: str | None = None
    error_code: int | None = None
    reason: str | None = None


def verdict(record: NotificationRecord) -> str:
    """The event type for a settled record: its outcome, or what the provider's
    status says when our own verdict was never written (a crash after the send)."""
    if record.outcome is not None:
        return record.outcome
    if record.state in ("failed", "dead"):
        return record.state
    return "sent"


def outcome_event(record: NotificationRecord, prefix: str, now: float) -> tuple[str, str, bytes]:
    """``(subject, event_id, body)`` announcing ``record``'s verdict."""
    nid = record.notification_id
    kind = verdict(record)
    event_id = f"notification.{nid}.{OUTCOME_SEQ}"
    attempts = sum(1 for a in record.attempts if a.outcome != "in_doubt")
    failed = kind != "sent"
    data = NotificationOutcome(
        notification_id=nid,
        buyer_id=record.buyer_id,
        window_id=record.window_id,
        product_id=record.product_id,
        channel=record.provider,
        attempts=attempts,
        message_id=record.message_id,
        error_code=record.error_code if failed else None,
        reason=(record.reason or None) if failed else None,
    )
    at = record.decided_at or record.status_at or now
    body = Event(event_id=event_id, type=kind, at=format_time(at), seq=OUTCOME_SEQ, data=data)
    return event_subject("notification", nid, kind, prefix), event_id, encode(body)
