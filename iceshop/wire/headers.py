"""Request headers the contract knows, matched case-insensitively.

``Authorization`` (``Bearer <JWT>``), ``traceparent`` and ``Iceshop-Deadline`` are all
optional. ``parse_headers`` never raises: it only picks the three values out of the
NATS header map, whatever their spelling. Checking them is left to the caller, in the
contract's precedence: credentials first (``unauthorized``), then a malformed deadline
(``invalid_request``, from ``RequestHeaders.deadline_at``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec

from iceshop.wire.errors import ShopError
from iceshop.wire.times import parse_time

__all__ = [
    "AUTHORIZATION",
    "DEADLINE",
    "NO_HEADERS",
    "TRACEPARENT",
    "RequestHeaders",
    "parse_headers",
]

AUTHORIZATION: Final = "Authorization"
TRACEPARENT: Final = "traceparent"
DEADLINE: Final = "Iceshop-Deadline"

_AUTHORIZATION = AUTHORIZATION.lower()
_TRACEPARENT = TRACEPARENT.lower()
_DEADLINE = DEADLINE.lower()


class RequestHeaders(msgspec.Struct, frozen=True):
    """The raw values of the headers the contract names (``None`` when absent)."""

    authorization: str | None = None
    traceparent: str | None = None
    deadline: str | None = None

    def bearer_token(self) -> str | None:
        """The token of ``Authorization: Bearer <token>`` (scheme case-insensitive)."""
        if self.authorization is None:
            return None
        scheme, _, token = self.authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        return token

    def deadline_at(self) -> float | None:
        """The deadline in epoch seconds; ``invalid_request`` if it is malformed."""
        if self.deadline is None:
            return None
        try:
            return parse_time(self.deadline.strip())
        except ValueError as exc:
            raise ShopError.invalid(
                f"{DEADLINE}: expected a time like 2025-01-31T12:00:00.000Z", field=DEADLINE
            ) from exc


NO_HEADERS: Final = RequestHeaders()


def parse_headers(headers: Mapping[str, str] | None) -> RequestHeaders:
    """Pick the contract's headers out of a NATS header map, ignoring name case."""
    if not headers:
        return NO_HEADERS
    authorization = traceparent = deadline = None
    for name, value in headers.items():
        key = name.lower()
        if key == _AUTHORIZATION:
            authorization = value
        elif key == _DEADLINE:
            deadline = value
        elif key == _TRACEPARENT:
            traceparent = value
    return RequestHeaders(authorization, traceparent, deadline)
