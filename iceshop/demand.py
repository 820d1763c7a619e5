"""The demand score: exponentially decayed demand arrivals, as a tiny immutable value.

A product's demand is described by two different measures, and keeping them apart is the
point of this module:

- **Open demand** (``open_intents``, ``quantity``) is what buyers want *right now*: the sum
  over intents that are currently open. It goes up on submit and down when an intent is
  cancelled, expires or is matched by a reservation. It is exact and needs no decay.
- **The demand score** is *momentum*: how much demand arrived *recently*. Each submitted
  intent adds its quantity once, at its submission time, and every contribution then halves
  every ``half_life_s`` seconds (default six hours)::

      score(now) = sum(quantity_i * 2 ** (-(now - submitted_at_i) / half_life_s))

Cancellations, expiries and matches do **not** subtract from the score. Subtracting would
make the score a second, blurred copy of open demand; it could go negative (taking away a
full weight whose arrival has long since decayed); and undoing an arrival exactly would need
each intent's submission time at removal, i.e. per-intent history inside a number that is
meant to be a constant-size summary. Time already removes old arrivals; open demand already
tracks what is still wanted. Likewise a released reservation that reopens an intent is not
a new arrival, and an idempotent replay of a submit adds nothing.

Because every contribution is anchored at its own arrival time, adding arrivals is
order-independent: an arrival reported late (``at`` earlier than the score's ``as_of``) is
added already decayed, so folding the same arrivals in any order gives the same score (up to
floating-point rounding). A score is never "rewound": asking for a time before ``as_of``
returns it unchanged, since arrivals after that time are already folded in.

Everything here is pure: times are parameters (seconds on the caller's clock, usually the
actor runtime's), nothing reads a clock or does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import msgspec

__all__ = [
    "DEFAULT_HALF_LIFE_S",
    "DemandScore",
    "arrival_weight",
    "decay_factor",
    "fold_arrivals",
]

DEFAULT_HALF_LIFE_S: float = 6 * 60 * 60.0
"""Six hours: an intent submitted this morning still counts for a quarter tonight."""


def decay_factor(elapsed_s: float, half_life_s: float = DEFAULT_HALF_LIFE_S) -> float:
    """The weight left after ``elapsed_s`` seconds: ``2 ** (-elapsed_s / half_life_s)``.

    Exactly ``0.5`` after one half-life and ``1.0`` for no elapsed time. Negative elapsed
    time counts as zero: decay never amplifies.
    """
    _check_half_life(half_life_s)
    if elapsed_s <= 0.0:
        return 1.0
    return float(2.0 ** (-elapsed_s / half_life_s))


def arrival_weight(quantity: int) -> float:
    """The score weight of one submitted intent: its quantity.

    Weighting by quantity (not 1 per intent) keeps the score in the same unit as open
    ``quantity`` and as a window's ``quantity_total``, so the numbers can be compared.
    """
    if quantity < 1:
        raise ValueError(f"quantity must be >= 1, got {quantity}")
    return float(quantity)


class DemandScore(msgspec.Struct, frozen=True, kw_only=True):
    """A decayed demand score: ``score`` is the value at time ``as_of`` (seconds).

    The zero value ``DemandScore()`` is the score of a product nobody has asked for yet.
    """

    score: float = 0.0
    as_of: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.score) and self.score >= 0.0):
            raise ValueError(f"score must be finite and >= 0, got {self.score}")
        if not math.isfinite(self.as_of):
            raise ValueError(f"as_of must be finite, got {self.as_of}")

    def value_at(self, now: float, half_life_s: float = DEFAULT_HALF_LIFE_S) -> float:
        """The score at ``now``: ``score * decay_factor(now - as_of)``.

        Non-increasing in ``now``; equal to ``score`` for any ``now <= as_of``.
        """
        return self.score * decay_factor(now - self.as_of, half_life_s)

    def decayed(self, now: float, half_life_s: float = DEFAULT_HALF_LIFE_S) -> DemandScore:
        """The same score re-anchored at ``now`` (unchanged when ``now <= as_of``)."""
        if now <= self.as_of:
            return self
        return DemandScore(score=self.value_at(now, half_life_s), as_of=now)

    def add(
        self, weight: float, now: float, half_life_s: float = DEFAULT_HALF_LIFE_S
    ) -> DemandScore:
        """The score with one arrival of ``weight`` at time ``now`` folded in.

        The result is anchored at ``max(as_of, now)``. An arrival older than ``as_of`` is
        added already decayed by its age, which makes folding order-independent.
        """
        if not (math.isfinite(weight) and weight >= 0.0):
            raise ValueError(f"weight must be finite and >= 0, got {weight}")
        anchor = max(self.as_of, now)
        base = self.value_at(anchor, half_life_s)
        late = weight * decay_factor(anchor - now, half_life_s)
        return DemandScore(score=base + late, as_of=anchor)


def fold_arrivals(
    arrivals: Iterable[tuple[float, float]],
    *,
    start: DemandScore | None = None,
    half_life_s: float = DEFAULT_HALF_LIFE_S,
) -> DemandScore:
    """Fold ``(weight, at)`` arrivals into a score, e.g. to rebuild one from a journal."""
    score = start if start is not None else DemandScore()
    for weight, at in arrivals:
        score = score.add(weight, at, half_life_s)
    return score


def _check_half_life(half_life_s: float) -> None:
    if not (math.isfinite(half_life_s) and half_life_s > 0.0):
        raise ValueError(f"half_life_s must be finite and > 0, got {half_life_s}")
