"""Who may do what to a window, per the contract's Security section.

A request carries a :class:`~iceshop.protocol.Principal` when authentication is on (and
``None`` when it is off: then everything is allowed). The edge has already turned bad
credentials into ``unauthorized``; what is left is ``forbidden``: a principal acting
outside its rights. Most rules need only the request (a buyer joins only as itself, a
seller never joins, cancelling is for admins) and are checked before anything else, as
the precedence wants. One needs the window: its reservations are for admins and the
seller who owns it, so that check runs once the window is known.
"""

from __future__ import annotations

from iceshop.protocol import Principal
from iceshop.wire import Command, CommandKind, ErrorCode, Join, Leave, ShopError

__all__ = ["denied", "may_list_reservations"]


def _forbidden(message: str) -> ShopError:
    return ShopError(ErrorCode.FORBIDDEN, message)


def denied(principal: Principal | None, kind: CommandKind, body: Command) -> ShopError | None:
    """``forbidden`` when the principal may not send this command, whatever the window."""
    if principal is None or principal.role == "admin":
        return None
    role = principal.role
    if kind == CommandKind.ADMIN_WINDOW_CANCEL:
        return _forbidden("only an admin may cancel a window")
    if kind == CommandKind.WINDOW_JOIN or kind == CommandKind.WINDOW_LEAVE:
        if role == "gateway":
            return None
        if role == "buyer" and isinstance(body, Join | Leave) and body.buyer_id == principal.sub:
            return None
        return _forbidden("a buyer may act only as itself")
    if kind == CommandKind.WINDOW_RESERVATIONS and role != "seller":
        return _forbidden("reservations are for admins and the owning seller")
    return None


def may_list_reservations(principal: Principal | None, seller_id: str | None) -> bool:
    """Whether the principal may read the reservations of a window of ``seller_id``
    (``None``: a window that does not exist, which only an admin may ask about)."""
    if principal is None or principal.role == "admin":
        return True
    return principal.role == "seller" and seller_id is not None and principal.sub == seller_id
