"""The shop's own counters: what happened to joins on this node.

The runtime counts messages; only the domain knows that a join was accepted or refused
as ``sold_out``. One :class:`ShopCounters` belongs to a node and is handed to the actors
that count (as their settings are); a count is one dict increment, made once the answer
goes out (after the turn's commit). Exporters (``iceshop.observability.metrics``) read
the dict when scraped. Notifications are counted by the notifier that sends them
(``iceshop.notify.NotifierStats``), in a node or in an ``iceshop notifier`` process.

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

    __slots__ = ("joins",)

    def __init__(self) -> None:
        #: Joins answered by window actors, by outcome (:func:`join_outcome`).
        self.joins: dict[str, int] = {}

    def count_join(self, result: object) -> None:
        """Count one answered join by its answer (a ``JoinReply`` or a ``ShopError``)."""
        outcome = join_outcome(result)
        joins = self.joins
        joins[outcome] = joins.get(outcome, 0) + 1
