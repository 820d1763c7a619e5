"""Helpers for the notifier tests: the streams a node would create, requests published
as the product publishes them, and a collector of the notification events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import msgspec

from actors.nats import JetStreamOutbox, Msg, NatsTransport
from iceshop.notify.request import REQUEST_STREAM
from iceshop.product.notifications import notification_payload, notification_subject
from iceshop.product.state import NotificationRequested
from iceshop.wire import EVENT_STREAM

__all__ = ["EventLog", "ensure_streams", "make_request", "phone", "publish_requests"]

EPOCH = 1_800_000_000.0


def phone(i: int) -> str:
    return f"+9055{i:08d}"


def make_request(i: int, *, locale: str = "tr", window_id: str = "W1") -> NotificationRequested:
    return NotificationRequested(
        notification_id=f"n{i:05d}",
        window_id=window_id,
        product_id="kettle",
        seller_id="S1",
        buyer_id=f"B{i}",
        intent_id=f"I{i}",
        phone=phone(i),
        locale=locale,
        unit_price_minor=129_900,
        currency="TRY",
        activates_at=EPOCH,
        expires_at=EPOCH + 900,
        at=EPOCH,
    )


async def ensure_streams(transport: NatsTransport, prefix: str = "iceshop") -> None:
    outbox = JetStreamOutbox(transport)
    await outbox.ensure_stream(REQUEST_STREAM, [f"{prefix}.notifications.>"])
    await outbox.ensure_stream(EVENT_STREAM, [f"{prefix}.events.>"])


async def publish_requests(
    transport: NatsTransport,
    requests: list[NotificationRequested],
    *,
    prefix: str = "iceshop",
    extra: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    msg_id_suffix: str = "",
) -> None:
    """Publish as the product's outbox does (``Nats-Msg-Id`` = the event id); ``extra``
    adds fields to ``data`` and ``drop`` removes some; ``msg_id_suffix`` defeats the
    stream's de-duplication (a duplicate request arriving later than its window)."""
    js = transport.jetstream()
    for request in requests:
        event_id, body = notification_payload(request)
        if extra or drop:
            raw = msgspec.json.decode(body)
            raw["data"].update(extra or {})
            for field in drop:
                del raw["data"][field]
            body = msgspec.json.encode(raw)
        await js.publish(
            notification_subject(request.notification_id, prefix),
            body,
            headers={"Nats-Msg-Id": event_id + msg_id_suffix},
        )


class EventLog:
    """Notification events as a core subscriber sees them."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.subjects: list[str] = []
        self._changed = anyio.Event()

    async def subscribe(self, transport: NatsTransport, prefix: str = "iceshop") -> None:
        await transport.subscribe(f"{prefix}.events.notification.>", self._on)
        await transport.flush()

    async def _on(self, msg: Msg) -> None:
        self.events.append(msgspec.json.decode(msg.data))
        self.subjects.append(msg.subject)
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def wait_until(self, predicate: Callable[[EventLog], bool]) -> None:
        while not predicate(self):
            await self._changed.wait()

    async def wait_for(self, n: int) -> None:
        await self.wait_until(lambda log: len(log.ids()) >= n)

    def ids(self) -> set[str]:
        return {e["data"]["notification_id"] for e in self.events}

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]
