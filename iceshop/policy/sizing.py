"""Sizing a window so that the contract's invariants hold by construction.

The contract requires ``quantity_total >= max(1, min_participants)`` and
``max_per_buyer * (min_participants - 1) < quantity_total``: if fewer buyers than the
tipping point could buy the whole window, a sell-out could close as ``failed``.
"""

from __future__ import annotations

import msgspec

from iceshop.policy.model import PolicySettings, require

__all__ = ["WindowSize", "check_sizing", "size_window"]


class WindowSize(msgspec.Struct, frozen=True, kw_only=True):
    """A window's quantity, tipping point and per-buyer limit.

    Cannot be constructed unless ``quantity_total >= max(1, min_participants)`` and
    ``max_per_buyer * (min_participants - 1) < quantity_total``.
    """

    quantity_total: int
    min_participants: int
    max_per_buyer: int

    def __post_init__(self) -> None:
        check_sizing(self.quantity_total, self.min_participants, self.max_per_buyer)


def size_window(accepted_quantity: int, stock: int, settings: PolicySettings) -> WindowSize:
    """Size a window for ``accepted_quantity`` of demand from ``stock``.

    Rule: ``quantity_total = min(accepted_quantity, stock)`` - the demand that accepts the
    price, never more than the seller has. ``min_participants`` is the configured tipping
    point. ``max_per_buyer`` is the configured limit, lowered when needed to
    ``(quantity_total - 1) // (min_participants - 1)`` so that ``min_participants - 1``
    buyers can never take the whole window: a sell-out always reaches the tipping point.

    Precondition (ValueError otherwise): ``min(accepted_quantity, stock) >=
    max(1, window_min_participants)``; :func:`evaluate` guarantees it.
    """
    total = min(accepted_quantity, stock)
    participants = settings.window_min_participants
    if total < settings.tipping_point:
        raise ValueError(
            f"cannot size a window of {total} units for a tipping point of {participants}"
        )
    per_buyer = min(settings.window_max_per_buyer, total)
    if participants >= 2:
        per_buyer = min(per_buyer, (total - 1) // (participants - 1))
    return WindowSize(quantity_total=total, min_participants=participants, max_per_buyer=per_buyer)


def check_sizing(quantity_total: int, min_participants: int, max_per_buyer: int) -> None:
    require(min_participants >= 0, "min_participants must be >= 0")
    require(max_per_buyer >= 1, "max_per_buyer must be >= 1")
    require(
        quantity_total >= max(1, min_participants),
        "quantity_total must be >= max(1, min_participants)",
    )
    require(
        max_per_buyer * (min_participants - 1) < quantity_total,
        "max_per_buyer * (min_participants - 1) must be < quantity_total",
    )
