"""A buyer's durable state: its profile and its intents, folded from tagged events.

Each event names one transition (registered, intent opened, status set, a reservation
linked or unlinked) instead of carrying a whole new record, so the journal reads as the
buyer's history and ``apply`` stays a handful of assignments. Event tags are spelled out
(``buyer.*``) so renaming a class never breaks a stored journal.

An intent moves ``open`` -> ``matched`` (a reservation holds it) -> ``open`` again (every
reservation released before it expired) and ends ``cancelled`` or ``expired``. ``joins``
lists the reservations (``window_id/join_id``) that hold a matched intent: a buyer may
join one window twice, and the intent reopens only when the last one is released.

``latest`` maps each product to the intent most recently opened for it. That is the
intent a reservation for the product matches, and the one a new intent replaces; so a
buyer never has two open intents for one product.
"""

from __future__ import annotations

from typing import Any

import msgspec

from iceshop.wire.views import IntentStatus

__all__ = [
    "BuyerEvent",
    "BuyerProfile",
    "BuyerState",
    "IntentJoinAdded",
    "IntentJoinRemoved",
    "IntentOpened",
    "IntentRecord",
    "IntentStatusSet",
    "Registered",
    "join_key",
]

LIVE: frozenset[str] = frozenset({"open", "matched"})
"""Statuses an intent can still leave (cancel, expiry and reservations act on them)."""


def join_key(window_id: str, join_id: str) -> str:
    """How a reservation is named in ``IntentRecord.joins`` (ids never contain ``/``)."""
    return f"{window_id}/{join_id}"


class BuyerProfile(msgspec.Struct, frozen=True):
    name: str
    phone: str
    locale: str
    whatsapp_opt_in: bool


class IntentRecord(msgspec.Struct, frozen=True):
    intent_id: str
    product_id: str
    quantity: int
    max_price_minor: int
    ttl_s: float
    submitted_at: float
    expires_at: float
    status: IntentStatus = "open"
    joins: tuple[str, ...] = ()


# -- events ------------------------------------------------------------------------------


class Registered(msgspec.Struct, frozen=True, tag="buyer.registered"):
    """The profile after a registration (defaults and kept fields already resolved)."""

    profile: BuyerProfile


class IntentOpened(msgspec.Struct, frozen=True, tag="buyer.intent_opened"):
    intent: IntentRecord


class IntentStatusSet(msgspec.Struct, frozen=True, tag="buyer.intent_status"):
    intent_id: str
    status: IntentStatus
    at: float


class IntentJoinAdded(msgspec.Struct, frozen=True, tag="buyer.intent_matched"):
    """A reservation now holds the intent (its status becomes ``matched``)."""

    intent_id: str
    join: str
    at: float


class IntentJoinRemoved(msgspec.Struct, frozen=True, tag="buyer.intent_released"):
    """A reservation that held the intent was released (status unchanged)."""

    intent_id: str
    join: str
    at: float


BuyerEvent = Registered | IntentOpened | IntentStatusSet | IntentJoinAdded | IntentJoinRemoved


class BuyerState(msgspec.Struct):
    """Everything a buyer remembers; also its snapshot value."""

    profile: BuyerProfile | None = None
    intents: dict[str, IntentRecord] = {}
    latest: dict[str, str] = {}

    def apply(self, event: Any) -> None:
        """Fold one event in (deterministic; times come from the event)."""
        match event:
            case Registered(profile=profile):
                self.profile = profile
            case IntentOpened(intent=intent):
                self.intents[intent.intent_id] = intent
                self.latest[intent.product_id] = intent.intent_id
            case IntentStatusSet(intent_id=intent_id, status=status):
                self._replace(intent_id, status=status)
            case IntentJoinAdded(intent_id=intent_id, join=join):
                joins = self.intents[intent_id].joins
                self._replace(intent_id, status="matched", joins=(*joins, join))
            case IntentJoinRemoved(intent_id=intent_id, join=join):
                joins = self.intents[intent_id].joins
                self._replace(intent_id, joins=tuple(j for j in joins if j != join))
            case _:
                raise TypeError(f"not a buyer event: {event!r}")

    def _replace(self, intent_id: str, **changes: Any) -> None:
        self.intents[intent_id] = msgspec.structs.replace(self.intents[intent_id], **changes)

    def current(self, product_id: str) -> IntentRecord | None:
        """The intent most recently opened for ``product_id`` (any status)."""
        intent_id = self.latest.get(product_id)
        return None if intent_id is None else self.intents[intent_id]

    def open_intent(self, product_id: str) -> IntentRecord | None:
        """The buyer's open intent for ``product_id``, if any (at most one)."""
        intent = self.current(product_id)
        return intent if intent is not None and intent.status == "open" else None
