"""Reply data and event bodies, field for field as the contract names them.

These are the shapes clients read: a field here is a promise. Adding a field is
allowed; renaming or removing one is not. Times are strings already formatted by
``format_time`` (the wire shows milliseconds in UTC); nullable fields are encoded as
``null``, never left out.

Which Struct answers which command::

    buyer.register       RegisterBuyerReply        seller.register   RegisterSellerReply
    listing.upsert       UpsertListingReply        intent.submit     SubmitIntentReply
    intent.cancel        CancelIntentReply         window.join       JoinReply
    window.leave         LeaveReply                window.get        WindowView
    window.reservations  ReservationsReply         windows.list      WindowsReply
    decision.get         DecisionView              offer.approve/reject  OfferStatusReply
    admin.window.cancel  WindowView                cluster.status    ClusterStatusReply
    admin.apikey.create  ApiKeyView (with the secret, once)  admin.apikey.revoke  ApiKeyView

Events are ``Event[T]``: window events carry a ``WindowView`` (so ``closed`` includes
``outcome`` and ``close_reason``), demand events ``DemandUpdated``, decision events
``DecisionMade`` (a decision without ``inputs``), offer events an ``OfferView``.
"""

from __future__ import annotations

from typing import Final, Generic, Literal, TypeVar

import msgspec

from iceshop.wire.commands import WindowState

__all__ = [
    "MAX_REASONS",
    "ApiKeyStatus",
    "ApiKeyView",
    "CancelIntentReply",
    "CloseReason",
    "ClusterStatusReply",
    "DecisionMade",
    "DecisionOutcome",
    "DecisionView",
    "DemandUpdated",
    "Event",
    "IntentStatus",
    "JoinReply",
    "LeaveReply",
    "NodeStatus",
    "OfferStatus",
    "OfferStatusReply",
    "OfferView",
    "Reason",
    "RegisterBuyerReply",
    "RegisterSellerReply",
    "ReservationStatus",
    "ReservationView",
    "ReservationsReply",
    "ShardStatus",
    "SubmitIntentReply",
    "UpsertListingReply",
    "WindowOutcome",
    "WindowView",
    "WindowsReply",
]

MAX_REASONS: Final = 4

IntentStatus = Literal["open", "matched", "cancelled", "expired"]
ReservationStatus = Literal["reserved", "released", "confirmed"]
WindowOutcome = Literal["succeeded", "failed"]
CloseReason = Literal["expired", "sold_out", "cancelled"]
DecisionOutcome = Literal["window_proposed", "no_action", "deferred"]
OfferStatus = Literal["pending", "approved", "rejected", "expired"]
ApiKeyStatus = Literal["active", "revoked"]
Number = int | float

T = TypeVar("T")


class _View(msgspec.Struct, frozen=True, kw_only=True):
    """Base of reply and event bodies."""


class RegisterBuyerReply(_View, frozen=True):
    buyer_id: str
    created: bool


class RegisterSellerReply(_View, frozen=True):
    seller_id: str
    created: bool


class UpsertListingReply(_View, frozen=True):
    seller_id: str
    product_id: str
    stock: int


class SubmitIntentReply(_View, frozen=True):
    intent_id: str
    status: IntentStatus
    expires_at: str


class CancelIntentReply(_View, frozen=True):
    intent_id: str
    status: IntentStatus


class JoinReply(_View, frozen=True):
    join_id: str
    window_id: str
    status: ReservationStatus
    quantity: int
    unit_price_minor: int
    currency: str


class LeaveReply(_View, frozen=True):
    join_id: str
    status: ReservationStatus


class WindowView(_View, frozen=True):
    window_id: str
    product_id: str
    seller_id: str
    state: WindowState
    outcome: WindowOutcome | None
    close_reason: CloseReason | None
    unit_price_minor: int
    currency: str
    quantity_total: int
    quantity_reserved: int
    participants: int
    min_participants: int
    max_per_buyer: int
    activates_at: str
    expires_at: str
    decision_id: str | None


class ReservationView(_View, frozen=True):
    join_id: str
    buyer_id: str
    quantity: int
    status: ReservationStatus
    reserved_at: str


class ReservationsReply(_View, frozen=True):
    reservations: list[ReservationView]
    next_cursor: str | None


class WindowsReply(_View, frozen=True):
    windows: list[WindowView]
    next_cursor: str | None


class Reason(_View, frozen=True):
    """One principal reason of a decision: what was measured against what."""

    code: str
    text: str
    value: Number | None
    threshold: Number | None


class OfferView(_View, frozen=True):
    offer_id: str
    seller_id: str
    unit_price_minor: int
    quantity: int
    activates_at: str
    expires_at: str
    status: OfferStatus


class DecisionMade(_View, frozen=True):
    """A decision as its ``made`` event carries it: everything but ``inputs``."""

    decision_id: str
    product_id: str
    made_at: str
    outcome: DecisionOutcome
    reasons: list[Reason]
    offer: OfferView | None
    window_id: str | None

    def __post_init__(self) -> None:
        if len(self.reasons) > MAX_REASONS:
            raise ValueError(f"reasons: at most {MAX_REASONS}, got {len(self.reasons)}")


class DecisionView(DecisionMade, frozen=True):
    """A decision as ``decisions.<id>.get`` returns it, with every input the policy used."""

    inputs: dict[str, Number]


class OfferStatusReply(_View, frozen=True):
    offer_id: str
    status: OfferStatus


class NodeStatus(_View, frozen=True):
    node_id: str
    started_at: str
    shards: list[int]


class ShardStatus(_View, frozen=True):
    shard: int
    owner: str | None
    lease_age_s: float | None


class ClusterStatusReply(_View, frozen=True):
    nodes: list[NodeStatus]
    shards: list[ShardStatus]


class ApiKeyView(_View, frozen=True):
    """An API key as an admin sees it (beyond the contract). ``api_key`` is the whole
    bearer value ``isk_<key_id>_<secret>``: only in the reply that created the key."""

    key_id: str
    role: str
    principal: str
    note: str | None
    status: ApiKeyStatus
    created_at: str
    revoked_at: str | None
    api_key: str | None = None


class DemandUpdated(_View, frozen=True):
    product_id: str
    score: float
    open_intents: int
    quantity: int


class Event(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """The body of every event; ``type`` equals the last token of its subject."""

    event_id: str
    type: str
    at: str
    seq: int
    data: T
