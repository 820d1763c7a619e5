"""The shop's error codes, as the wire contract names them.

Every failure a client can see is one ``ErrorCode``. Domain code raises ``ShopError``
with a code, a human message and optional ``details``; the NATS edge turns it into the
``{"ok": false, "error": {...}}`` reply with ``ErrorReply``. Whether a client may retry
is a property of the code alone (``overloaded``, ``unavailable``, ``internal``), so it is
never decided case by case.

Errors of the actor runtime (``actors.errors``) never reach the wire as such:
``to_shop_error`` maps them onto the contract's codes (a full mailbox is
``overloaded``, a failed commit or an unreachable store is ``unavailable``, anything
unexpected is ``internal`` with a message that reveals nothing about the node).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from actors.errors import (
    ActorFailed,
    ActorsError,
    ActorStopped,
    AskTimeout,
    CommitFailed,
    DeadlineExceeded,
    JournalUnavailable,
    Overloaded,
    TransportError,
)

__all__ = ["RETRYABLE", "ErrorCode", "ErrorReply", "ShopError", "to_shop_error"]


class ErrorCode(StrEnum):
    """The contract's error codes; the value is the wire spelling."""

    INVALID_REQUEST = "invalid_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    UNKNOWN_BUYER = "unknown_buyer"
    UNKNOWN_SELLER = "unknown_seller"
    UNKNOWN_PRODUCT = "unknown_product"
    UNKNOWN_INTENT = "unknown_intent"
    UNKNOWN_WINDOW = "unknown_window"
    UNKNOWN_JOIN = "unknown_join"
    UNKNOWN_DECISION = "unknown_decision"
    UNKNOWN_OFFER = "unknown_offer"
    WINDOW_NOT_ACTIVE = "window_not_active"
    WINDOW_CLOSED = "window_closed"
    SOLD_OUT = "sold_out"
    INSUFFICIENT_STOCK = "insufficient_stock"
    LIMIT_EXCEEDED = "limit_exceeded"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    OVERLOADED = "overloaded"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"

    @property
    def retryable(self) -> bool:
        """Whether repeating the same request (same ids) may succeed."""
        return self in RETRYABLE


RETRYABLE: frozenset[ErrorCode] = frozenset(
    {ErrorCode.OVERLOADED, ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL}
)


class ErrorReply(msgspec.Struct, frozen=True, kw_only=True):
    """The ``error`` object of a failed reply; ``details`` is left out when unset."""

    code: ErrorCode
    message: str
    retryable: bool
    details: dict[str, Any] | UnsetType = UNSET


class ShopError(Exception):
    """A failure with a contract error code, raised anywhere in the shop domain."""

    __slots__ = ("code", "details", "message")

    def __init__(
        self, code: ErrorCode, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.details: dict[str, Any] | None = dict(details) if details else None

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE

    def to_reply(self) -> ErrorReply:
        return ErrorReply(
            code=self.code,
            message=self.message,
            retryable=self.code in RETRYABLE,
            details=UNSET if self.details is None else self.details,
        )

    @classmethod
    def from_reply(cls, reply: ErrorReply) -> ShopError:
        details = None if isinstance(reply.details, UnsetType) else reply.details
        return cls(reply.code, reply.message, details)

    @classmethod
    def invalid(cls, message: str, field: str | None = None) -> ShopError:
        """An ``invalid_request``; ``field`` (when known) goes into ``details.field``."""
        return cls(ErrorCode.INVALID_REQUEST, message, None if field is None else {"field": field})

    def __repr__(self) -> str:
        return f"ShopError({self.code.value!r}, {self.message!r}, {self.details!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.message, self.details))


def to_shop_error(exc: BaseException) -> ShopError:
    """Map any exception onto the contract's codes; a ``ShopError`` passes unchanged."""
    if isinstance(exc, ShopError):
        return exc
    if isinstance(exc, Overloaded):
        return ShopError(ErrorCode.OVERLOADED, "the node is overloaded; retry later")
    if isinstance(exc, DeadlineExceeded):
        return ShopError(ErrorCode.UNAVAILABLE, "the request's deadline passed before its turn")
    if isinstance(exc, AskTimeout | TimeoutError):
        return ShopError(ErrorCode.UNAVAILABLE, "the request timed out")
    if isinstance(exc, CommitFailed | JournalUnavailable):
        return ShopError(ErrorCode.UNAVAILABLE, "the change could not be stored; retry")
    if isinstance(exc, ActorStopped | TransportError):
        return ShopError(ErrorCode.UNAVAILABLE, "the handler is not available; retry")
    if isinstance(exc, ActorFailed):
        return ShopError(ErrorCode.INTERNAL, "internal error")
    if isinstance(exc, ActorsError) and exc.retryable:
        return ShopError(ErrorCode.UNAVAILABLE, "temporarily unavailable; retry")
    return ShopError(ErrorCode.INTERNAL, "internal error")
