"""The buyers this node knows to be registered, so a window need not ask.

A join needs its buyer to exist (``unknown_buyer`` comes before every window error in the
contract's precedence), and asking the buyer actor costs a round trip through two actors
per first join: under a flash crowd of new buyers, that is a large share of a join. But
a registration is never undone, so "this buyer is registered" never becomes false: a node
can remember it and answer from memory.

Only committed registrations are added (the buyer actor adds itself after the commit
that stored it, or at start when its journal says it is registered), so the directory
never runs ahead of the journal. Absence means nothing — the buyer may be registered on
another node, or before this node started — and the window asks as before. The set is
bounded: when full it stops growing and the windows ask for the others.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_MAX_BUYERS", "KnownBuyers"]

DEFAULT_MAX_BUYERS: Final = 1_000_000
"""About 70 MiB of short ids at most."""


class KnownBuyers:
    """A bounded set of registered buyer ids; one per node, shared by its actors."""

    __slots__ = ("_ids", "max_size")

    def __init__(self, max_size: int = DEFAULT_MAX_BUYERS) -> None:
        self._ids: set[str] = set()
        self.max_size = max_size

    def add(self, buyer_id: str) -> None:
        """Remember that ``buyer_id``'s registration is stored (only call it then)."""
        if len(self._ids) < self.max_size:
            self._ids.add(buyer_id)

    def __contains__(self, buyer_id: object) -> bool:
        return buyer_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)
