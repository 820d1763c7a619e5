"""The contract's notification events: ``<prefix>.events.notification.<id>.<type>``.

``type`` is the notifier's verdict: ``sent`` (the provider took the message),
``failed`` (a permanent error, or no consent) or ``dead`` (every attempt failed). The
request the product published was ``seq`` 1; the verdict is ``seq`` 2, and its
``event_id`` is ``notification.<id>.2`` like every event of the shop
(``<entity>.<id>.<seq>``). A notification gets exactly one verdict, so re-announcing it
after a crash or a duplicate request publishes the same id again, which the event
stream drops within its duplicate window; after that window a consumer may see it
twice (delivery is at least once, and the id tells copies apart).

**A failure after ``sent``.** The provider may report a message it accepted as
``failed`` later (a delivery-status callback). That changes the record's state, not the
verdict, and is announced by an event of its own: type ``failed``, ``seq`` 3, ``event_id``
``notification.<id>.3``, with the provider's error code and title
(:func:`late_failure_event`). It is published once the status is stored and then marked
in the record, so a duplicate or repeated callback announces it again only until the
mark is written (and with the same id, which the event stream drops).

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

__all__ = [
    "LATE_FAILURE_SEQ",
    "OUTCOME_SEQ",
    "NotificationOutcome",
    "late_failure_event",
    "needs_late_failure_event",
    "outcome_event",
    "verdict",
]

OUTCOME_SEQ: Final = 2
LATE_FAILURE_SEQ: Final = 3


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
    data = _outcome(record, failed=kind != "sent")
    at = record.decided_at or record.status_at or now
    body = Event(event_id=event_id, type=kind, at=format_time(at), seq=OUTCOME_SEQ, data=data)
    return event_subject("notification", nid, kind, prefix), event_id, encode(body)


def _outcome(record: NotificationRecord, *, failed: bool) -> NotificationOutcome:
    """The event's data: the provider's error code and reason only for a failure."""
    return NotificationOutcome(
        notification_id=record.notification_id,
        buyer_id=record.buyer_id,
        window_id=record.window_id,
        product_id=record.product_id,
        channel=record.provider,
        attempts=sum(1 for a in record.attempts if a.outcome != "in_doubt"),
        message_id=record.message_id,
        error_code=record.error_code if failed else None,
        reason=(record.reason or None) if failed else None,
    )


def needs_late_failure_event(record: NotificationRecord) -> bool:
    """The notification was announced ``sent`` and the provider since said ``failed``,
    which is not announced yet."""
    return record.outcome == "sent" and record.state == "failed" and not record.failure_announced


def late_failure_event(
    record: NotificationRecord, prefix: str, now: float
) -> tuple[str, str, bytes]:
    """``(subject, event_id, body)`` announcing that the provider failed a message it had
    accepted (see the module docstring)."""
    nid = record.notification_id
    event_id = f"notification.{nid}.{LATE_FAILURE_SEQ}"
    data = _outcome(record, failed=True)
    at = record.status_at or now
    body = Event(
        event_id=event_id, type="failed", at=format_time(at), seq=LATE_FAILURE_SEQ, data=data
    )
    return event_subject("notification", nid, "failed", prefix), event_id, encode(body)
