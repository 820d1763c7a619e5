"""Who sends a command: a principal id and one of the contract's four roles.

The value itself is :class:`iceshop.protocol.Principal` (``sub``, ``role``), because it
travels to the actors inside a :class:`~iceshop.protocol.Request`; this module is where
one is made from what a credential claims. Both kinds of credential (a JWT, an API key)
end here, so the rules on a principal are written once: the role is one of ``buyer``,
``seller``, ``admin``, ``gateway``, and the id is subject-safe (the contract's id rule),
because a buyer's or a seller's id is compared with subject tokens.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal

from iceshop.protocol import Principal

__all__ = ["ADMIN", "BUYER", "GATEWAY", "ROLES", "SELLER", "Principal", "Role", "principal_of"]

Role = Literal["buyer", "seller", "admin", "gateway"]

BUYER: Final = "buyer"
SELLER: Final = "seller"
ADMIN: Final = "admin"
GATEWAY: Final = "gateway"
ROLES: Final[frozenset[str]] = frozenset({BUYER, SELLER, ADMIN, GATEWAY})

_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


def principal_of(sub: Any, role: Any) -> Principal | None:
    """The principal ``sub`` acting as ``role``, or ``None`` if either is not valid."""
    if not isinstance(sub, str) or not isinstance(role, str):
        return None
    if role not in ROLES or _ID.fullmatch(sub) is None:
        return None
    return Principal(sub, role)
