"""The shop's own counters: what happened to joins and notifications on this node.

The runtime counts messages; only the domain knows that a join was accepted or refused
as ``sold_out``. One :class:`ShopCounters` belongs to a node and is handed to the actors
that count (as their settings are); a count is one dict increment in the actor's turn.
Exporters (``iceshop.observability.metrics``) read the dicts when scraped.

The counts live in memory: they restart at zero with the process, as Prometheus counters
are expected to.
"""

from __future__ import annotations

from typing import Final

from iceshop.wire import JoinReply, ShopError

__all__ = ["ACCEPTED", "ShopCounters", "join_outcome"]

#: The outcome of a join that holds a reservation (a repeated join_id included).
ACCEPTED: Final = "accepted"


def join_outcome(result: object) -> str:
    """``accepted``, or the contract error code a join was answered with."""
    if type(result) is JoinReply:
        return ACCEPTED
    if isinstance(result, ShopError):
        return result.code.value
    return "internal"


class ShopCounters:
    """Counts by outcome; see the module docstring."""

    __slots__ = ("joins", "notifications")

    def __init__(self) -> None:
        #: Joins answered by window actors, by outcome (:func:`join_outcome`).
        self.joins: dict[str, int] = {}
        #: Notifications by outcome (``sent``, ``failed``, ``dead``, ...).
        self.notifications: dict[str, int] = {}

    def count_join(self, result: object) -> None:
        """Count one answered join by its answer (a ``JoinReply`` or a ``ShopError``)."""
        outcome = join_outcome(result)
        joins = self.joins
        joins[outcome] = joins.get(outcome, 0) + 1

    def count_notification(self, outcome: str) -> None:
        """Count one notification outcome. Keep ``outcome`` to a few fixed words: each
        distinct value becomes a series of its own."""
        notifications = self.notifications
        notifications[outcome] = notifications.get(outcome, 0) + 1
