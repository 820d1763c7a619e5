"""The notices a window owes its peers, and when to send an unconfirmed one again.

``activated`` tells the product (which records notification requests for the buyers
whose intents match), ``return_stock`` gives the seller back what was not sold (all of
it when the window failed), ``ended`` tells the campaign the seller's slot is free.
Which notices are pending is part of the window's state (``WindowData.unacked``); this
module only says what each one is and where it goes.
"""

from __future__ import annotations

from typing import Any, Final

from iceshop.protocol import ReturnStock, WindowActivated, WindowEnded
from iceshop.window.state import (
    NOTICE_ACTIVATED,
    NOTICE_ENDED,
    NOTICE_RETURN_STOCK,
    WindowData,
)

__all__ = ["NOTICE_RETRY_S", "NOTICE_TIMEOUT_S", "notice", "retry_delay"]

#: How long a peer has to confirm a notice.
NOTICE_TIMEOUT_S: Final = 5.0
#: First delay before unconfirmed notices go out again (doubling, up to the cap).
NOTICE_RETRY_S: Final = 10.0
_RETRY_MAX_S: Final = 300.0


def notice(w: WindowData, name: str) -> tuple[str, str, Any]:
    """``(actor kind, key, message)`` of notice ``name``."""
    info = w.info
    if name == NOTICE_ACTIVATED:
        return (
            "product",
            info.product_id,
            WindowActivated(
                window_id=info.window_id,
                seller_id=info.seller_id,
                unit_price_minor=info.unit_price_minor,
                currency=info.currency,
                activates_at=info.activates_at,
                expires_at=info.expires_at,
            ),
        )
    if name == NOTICE_RETURN_STOCK:
        return ("seller", info.seller_id, ReturnStock(info.product_id, w.available, info.window_id))
    if name == NOTICE_ENDED and w.outcome is not None:
        return (
            "campaign",
            "main",
            WindowEnded(info.window_id, info.seller_id, info.product_id, w.state, w.outcome),
        )
    raise ValueError(f"no notice {name!r} for a window in state {w.state!r}")


def retry_delay(attempts: int) -> float:
    """Seconds before sending again after ``attempts`` (>= 1) unconfirmed sends."""
    return min(NOTICE_RETRY_S * 2.0 ** min(max(attempts - 1, 0), 16), _RETRY_MAX_S)
