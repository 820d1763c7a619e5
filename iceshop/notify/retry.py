"""When to try a failed notification again: exponential backoff with full jitter.

Pure arithmetic, no clock and no sleeping: the notifier hands the delay to JetStream
(a NAK with that delay), so a retry survives the notifier's own restart.

Full jitter (a uniform draw between 0 and the exponential step) spreads the retries of
a rate-limit storm over the whole interval instead of bunching them at its end, which
is what re-triggers the limit. A provider's own ``Retry-After`` is a floor: we never
come back earlier than it asked.

``max_attempts`` counts attempts, not retries: with 8, the eighth failure is the last
one and the notification becomes a dead letter.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """``delay(n)`` after the ``n``-th failed attempt (1-based): a uniform draw from
    ``[0, min(cap, base * 2**(n-1))]``, at least ``retry_after`` when given.
    ``rand`` returns a float in ``[0, 1)``; inject a fixed one in tests."""

    base: float = 1.0
    cap: float = 300.0
    max_attempts: int = 8
    rand: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        if not (self.base > 0 and math.isfinite(self.base)):
            raise ValueError("base must be a positive number of seconds")
        if not (self.cap >= self.base and math.isfinite(self.cap)):
            raise ValueError("cap must be at least base")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def ceiling(self, attempt: int) -> float:
        """The largest delay after the ``attempt``-th failure."""
        if attempt < 1:
            raise ValueError("attempts count from 1")
        # 2**64 seconds is past any cap; stop doubling before floats overflow.
        return min(self.cap, self.base * 2.0 ** min(attempt - 1, 64))

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        jittered = self.rand() * self.ceiling(attempt)
        if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
            return max(jittered, retry_after)
        return jittered

    def exhausted(self, attempts: int) -> bool:
        """Whether ``attempts`` failed attempts are all there will be."""
        return attempts >= self.max_attempts
