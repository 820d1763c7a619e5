"""Request bodies of the contract's commands, one frozen Struct per command.

The Structs carry every rule of the contract that can be checked on a body alone, as
``msgspec.Meta`` constraints so the C decoder enforces them in one pass: identifiers are
1-64 characters of ``A-Z a-z 0-9 _ -``; integers have no fraction or exponent and lie
in 0..2^53-1; quantities are at least 1; strings are at most 200 characters; ``ttl_s`` is a
number of seconds in 60..2,592,000. Unknown fields are rejected, which also rejects a
body that repeats the id its subject carries. Cross-field rules (a floor price above
the list price) live in ``__post_init__`` so they hold however a Struct is built.

Regexes end in ``\\Z``, not ``$``: msgspec matches with ``re.search`` and ``$`` would let
a trailing newline through.

Registrations are upserts: a field given replaces the stored value, a field omitted
keeps it, and defaults apply only when the record is created. Their optional fields are
therefore ``UNSET`` when absent (not pre-filled with the default); the handler applies
the ``DEFAULT_*`` values below on creation. ``given_fields`` lists what a request set.

Decoding (size limit, ``null`` as absent, error messages) is in ``decode.py``; which
subject carries which command is in ``subjects.py``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

__all__ = [
    "COMMAND_TYPES",
    "CURRENCY_PATTERN",
    "DEFAULT_AUTO_APPROVE",
    "DEFAULT_CURRENCY",
    "DEFAULT_LIMIT",
    "DEFAULT_LOCALE",
    "DEFAULT_MAX_ACTIVE_WINDOWS",
    "DEFAULT_QUANTITY",
    "DEFAULT_TTL_S",
    "DEFAULT_WHATSAPP_OPT_IN",
    "ID_PATTERN",
    "MAX_INT",
    "MAX_LIMIT",
    "MAX_STRING",
    "MAX_TTL_S",
    "MIN_TTL_S",
    "PHONE_PATTERN",
    "AdminCancelWindow",
    "ApiKeyRole",
    "ApproveOffer",
    "CancelIntent",
    "ClusterStatus",
    "Command",
    "CommandKind",
    "Count",
    "CreateApiKey",
    "Currency",
    "Cursor",
    "GetDecision",
    "GetWindow",
    "Id",
    "Join",
    "Leave",
    "Limit",
    "ListReservations",
    "ListWindows",
    "Locale",
    "Money",
    "Phone",
    "Quantity",
    "RegisterBuyer",
    "RegisterSeller",
    "RejectOffer",
    "RevokeApiKey",
    "SubmitIntent",
    "Text",
    "TtlSeconds",
    "UpsertListing",
    "WindowState",
    "given_fields",
]

MAX_INT: Final = 2**53 - 1
MAX_STRING: Final = 200
MIN_TTL_S: Final = 60
MAX_TTL_S: Final = 2_592_000
MAX_LIMIT: Final = 500

ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}\Z"
PHONE_PATTERN: Final = r"^\+[1-9][0-9]{1,14}\Z"
CURRENCY_PATTERN: Final = r"^[A-Z]{3}\Z"

Id = Annotated[str, Meta(pattern=ID_PATTERN)]
Text = Annotated[str, Meta(min_length=1, max_length=MAX_STRING)]
Count = Annotated[int, Meta(ge=0, le=MAX_INT)]
Money = Annotated[int, Meta(ge=0, le=MAX_INT)]
Quantity = Annotated[int, Meta(ge=1, le=MAX_INT)]
Phone = Annotated[str, Meta(pattern=PHONE_PATTERN)]
Currency = Annotated[str, Meta(pattern=CURRENCY_PATTERN)]
TtlSeconds = Annotated[float, Meta(ge=MIN_TTL_S, le=MAX_TTL_S)]
Limit = Annotated[int, Meta(ge=1, le=MAX_LIMIT)]
Cursor = Annotated[str, Meta(min_length=1, max_length=MAX_STRING)]
Locale = Literal["tr", "en"]
WindowState = Literal["scheduled", "active", "closed", "cancelled"]
ApiKeyRole = Literal["buyer", "seller", "admin", "gateway"]

DEFAULT_LOCALE: Final[Locale] = "tr"
DEFAULT_WHATSAPP_OPT_IN: Final = False
DEFAULT_MAX_ACTIVE_WINDOWS: Final = 3
DEFAULT_AUTO_APPROVE: Final = True
DEFAULT_CURRENCY: Final = "TRY"
DEFAULT_QUANTITY: Final = 1
DEFAULT_TTL_S: Final = 86400.0
DEFAULT_LIMIT: Final = 100


class CommandKind(StrEnum):
    """Which command a request is; the value names it in logs and metrics."""

    BUYER_REGISTER = "buyer.register"
    SELLER_REGISTER = "seller.register"
    LISTING_UPSERT = "listing.upsert"
    INTENT_SUBMIT = "intent.submit"
    INTENT_CANCEL = "intent.cancel"
    WINDOW_JOIN = "window.join"
    WINDOW_LEAVE = "window.leave"
    WINDOW_GET = "window.get"
    WINDOW_RESERVATIONS = "window.reservations"
    WINDOWS_LIST = "windows.list"
    DECISION_GET = "decision.get"
    OFFER_APPROVE = "offer.approve"
    OFFER_REJECT = "offer.reject"
    ADMIN_WINDOW_CANCEL = "admin.window.cancel"
    CLUSTER_STATUS = "cluster.status"
    # Beyond the contract: API keys for integrations (admin only).
    APIKEY_CREATE = "admin.apikey.create"
    APIKEY_REVOKE = "admin.apikey.revoke"


class Command(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """Base of every request body."""


class RegisterBuyer(Command, frozen=True):
    name: Text
    phone: Phone
    locale: Locale | UnsetType = UNSET
    whatsapp_opt_in: bool | UnsetType = UNSET


class RegisterSeller(Command, frozen=True):
    name: Text
    max_active_windows: Count | UnsetType = UNSET
    auto_approve: bool | UnsetType = UNSET


class UpsertListing(Command, frozen=True):
    product_id: Id
    title: Text
    list_price_minor: Money
    floor_price_minor: Money
    stock: Count
    #: Omitted: the listing keeps its currency (TRY for a new listing); the seller
    #: actor resolves it before anything else sees the upsert.
    currency: Currency | UnsetType = UNSET

    def __post_init__(self) -> None:
        if self.floor_price_minor > self.list_price_minor:
            raise ValueError("floor_price_minor: must not exceed list_price_minor")


class SubmitIntent(Command, frozen=True, kw_only=True):
    intent_id: Id
    product_id: Id
    quantity: Quantity = DEFAULT_QUANTITY
    max_price_minor: Money
    ttl_s: TtlSeconds = DEFAULT_TTL_S


class CancelIntent(Command, frozen=True):
    pass


class Join(Command, frozen=True):
    join_id: Id
    buyer_id: Id
    quantity: Quantity = DEFAULT_QUANTITY


class Leave(Command, frozen=True):
    join_id: Id
    buyer_id: Id


class GetWindow(Command, frozen=True):
    pass


class ListReservations(Command, frozen=True):
    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor | None = None


class ListWindows(Command, frozen=True):
    state: WindowState | None = None
    product_id: Id | None = None
    seller_id: Id | None = None
    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor | None = None


class GetDecision(Command, frozen=True):
    pass


class ApproveOffer(Command, frozen=True):
    pass


class RejectOffer(Command, frozen=True):
    pass


class AdminCancelWindow(Command, frozen=True):
    reason: Text


class ClusterStatus(Command, frozen=True):
    pass


class CreateApiKey(Command, frozen=True):
    """An API key acting as ``role``; ``principal`` is the id it acts as (required for
    a buyer or a seller key, which act only as themselves; the key id otherwise)."""

    role: ApiKeyRole
    principal: Id | None = None
    note: Text | None = None


class RevokeApiKey(Command, frozen=True):
    pass


COMMAND_TYPES: Final[dict[CommandKind, type[Command]]] = {
    CommandKind.BUYER_REGISTER: RegisterBuyer,
    CommandKind.SELLER_REGISTER: RegisterSeller,
    CommandKind.LISTING_UPSERT: UpsertListing,
    CommandKind.INTENT_SUBMIT: SubmitIntent,
    CommandKind.INTENT_CANCEL: CancelIntent,
    CommandKind.WINDOW_JOIN: Join,
    CommandKind.WINDOW_LEAVE: Leave,
    CommandKind.WINDOW_GET: GetWindow,
    CommandKind.WINDOW_RESERVATIONS: ListReservations,
    CommandKind.WINDOWS_LIST: ListWindows,
    CommandKind.DECISION_GET: GetDecision,
    CommandKind.OFFER_APPROVE: ApproveOffer,
    CommandKind.OFFER_REJECT: RejectOffer,
    CommandKind.ADMIN_WINDOW_CANCEL: AdminCancelWindow,
    CommandKind.CLUSTER_STATUS: ClusterStatus,
    CommandKind.APIKEY_CREATE: CreateApiKey,
    CommandKind.APIKEY_REVOKE: RevokeApiKey,
}


def given_fields(command: Command) -> dict[str, Any]:
    """The fields a request set (those not ``UNSET``), for upserts that keep the rest."""
    return {
        name: value
        for name in command.__struct_fields__
        if (value := getattr(command, name)) is not UNSET
    }
