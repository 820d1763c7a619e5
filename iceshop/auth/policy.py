"""Who may send which command: the contract's Security rules as pure functions.

``authorize(principal, kind, ids, body)`` decides everything that the request alone
decides, so routing refuses it before any actor sees it:

==========================  =========================================================
command                     allowed (an admin is always allowed)
==========================  =========================================================
buyer register, intent      the buyer of the subject's ``buyer_id``; a gateway
submit, intent cancel
window join, window leave   the buyer of the body's ``buyer_id``; a gateway
listing upsert, offer       the seller of the subject's ``seller_id``
approve / reject
window get, windows list    every role
window reservations,        sellers, and then only the owning seller: the actor
decision get                knows the owner (``OWNER_CHECKED_BY_ACTOR``)
seller register, admin      admins only
subjects, cluster status,
API keys
==========================  =========================================================

No principal (authentication off) allows everything. A refusal is ``forbidden``, which
comes after ``unauthorized`` and ``invalid_request`` in the contract's precedence:
routing checks credentials first, then the subject and body, then this.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from iceshop.auth.principal import ADMIN, BUYER, GATEWAY, SELLER
from iceshop.protocol import Principal
from iceshop.wire import Command, CommandKind, ErrorCode, Join, Leave, ShopError

__all__ = ["ADMIN_ONLY", "OWNER_CHECKED_BY_ACTOR", "authorize"]

K = CommandKind

#: Commands for admins only.
ADMIN_ONLY: Final[frozenset[CommandKind]] = frozenset(
    {K.SELLER_REGISTER, K.ADMIN_WINDOW_CANCEL, K.CLUSTER_STATUS, K.APIKEY_CREATE, K.APIKEY_REVOKE}
)
#: Commands a seller may send only for what it owns, which only the actor knows.
OWNER_CHECKED_BY_ACTOR: Final[frozenset[CommandKind]] = frozenset(
    {K.WINDOW_RESERVATIONS, K.DECISION_GET}
)
_BUYER_IN_SUBJECT: Final = frozenset({K.BUYER_REGISTER, K.INTENT_SUBMIT, K.INTENT_CANCEL})
_BUYER_IN_BODY: Final = frozenset({K.WINDOW_JOIN, K.WINDOW_LEAVE})
_SELLER_IN_SUBJECT: Final = frozenset({K.LISTING_UPSERT, K.OFFER_APPROVE, K.OFFER_REJECT})
_ANYONE: Final = frozenset({K.WINDOW_GET, K.WINDOWS_LIST})


def _forbidden(message: str) -> ShopError:
    return ShopError(ErrorCode.FORBIDDEN, message)


def _as_buyer(principal: Principal, buyer_id: str | None) -> ShopError | None:
    role = principal.role
    if role == GATEWAY or (role == BUYER and principal.sub == buyer_id):
        return None
    if role == BUYER:
        return _forbidden("a buyer may act only as itself")
    return _forbidden(f"a {role} may not act for a buyer")


def authorize(
    principal: Principal | None,
    kind: CommandKind,
    ids: Mapping[str, str],
    body: Command,
) -> ShopError | None:
    """``forbidden`` if ``principal`` may not send this command, else ``None``."""
    if principal is None or principal.role == ADMIN:
        return None
    role = principal.role
    if kind in _BUYER_IN_SUBJECT:
        return _as_buyer(principal, ids.get("buyer_id"))
    if kind in _BUYER_IN_BODY:
        buyer_id = body.buyer_id if isinstance(body, Join | Leave) else None
        return _as_buyer(principal, buyer_id)
    if kind in _SELLER_IN_SUBJECT:
        if role == SELLER and principal.sub == ids.get("seller_id"):
            return None
        if role == SELLER:
            return _forbidden("a seller may act only on its own listings and offers")
        return _forbidden(f"only the seller itself may do this, not a {role}")
    if kind in _ANYONE:
        return None
    if kind in OWNER_CHECKED_BY_ACTOR:
        if role == SELLER:
            return None  # the actor checks that this seller owns it
        return _forbidden(f"{kind.value} is for admins and the owning seller")
    if kind in ADMIN_ONLY:
        return _forbidden(f"{kind.value} is for admins only")
    return _forbidden(f"{kind.value}: no rule allows a {role}")
