"""Abuse limits checked at routing: how fast one buyer may join windows and submit intents.

Each buyer has a token bucket per command family (joins, intent submits): ``burst``
tokens, refilled at ``rate_per_s``; a request takes one token, and without one it is
refused at once as ``overloaded`` (retryable) with ``details.retry_after_s``, the time
until a token is back. The buyer is the one the command is for (the subject's
``buyer_id`` for a submit, the body's for a join), whoever sends it, so a gateway
relaying one abusive buyer does not slow the others down.

Buckets are kept for at most ``max_keys`` buyers (least recently seen dropped first: a
dropped buyer comes back with a full bucket, which errs on the buyer's side), so memory
is bounded whatever ids a flood invents. Time is the runtime's monotonic clock, so the
limits are testable on a virtual clock. The limits are per node: behind N nodes sharing
the load a buyer gets up to N times the rate.

The other limits live elsewhere: the body size (64 KiB, ``iceshop.wire.decode``) and the
open intents per buyer (``max_open_intents_per_buyer``, in the buyer actor, which knows
them: ``limit_exceeded``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Final

from actors import Clock
from iceshop.settings import Settings
from iceshop.wire import Command, CommandKind, ErrorCode, Join, ShopError

__all__ = ["DEFAULT_MAX_KEYS", "BuyerLimits", "TokenBuckets"]

DEFAULT_MAX_KEYS: Final = 100_000


class TokenBuckets:
    """One token bucket per key, for at most ``max_keys`` keys (LRU). ``rate_per_s`` 0
    means no limit."""

    __slots__ = ("_buckets", "burst", "clock", "max_keys", "rate_per_s")

    def __init__(
        self, rate_per_s: float, burst: int, clock: Clock, *, max_keys: int = DEFAULT_MAX_KEYS
    ) -> None:
        if rate_per_s < 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate_per_s >= 0, burst >= 1 and max_keys >= 1 are needed")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.clock = clock
        self.max_keys = max_keys
        # key -> [tokens, monotonic time they were counted at]
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 if there was one, else the seconds until there
        is (nothing is taken then)."""
        rate = self.rate_per_s
        if rate == 0:
            return 0.0
        now = self.clock.monotonic()
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = [float(self.burst), now]
            buckets[key] = bucket
            if len(buckets) > self.max_keys:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(key)
            bucket[0] = min(float(self.burst), bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0.0
        return (1.0 - bucket[0]) / rate

    def __len__(self) -> int:
        return len(self._buckets)


class BuyerLimits:
    """The per-buyer rates of a node's settings, as one check for routing."""

    __slots__ = ("intents", "joins")

    def __init__(
        self, settings: Settings, clock: Clock, *, max_keys: int = DEFAULT_MAX_KEYS
    ) -> None:
        self.joins = TokenBuckets(
            settings.buyer_join_rate_per_s, settings.buyer_join_burst, clock, max_keys=max_keys
        )
        self.intents = TokenBuckets(
            settings.buyer_intent_rate_per_s,
            settings.buyer_intent_burst,
            clock,
            max_keys=max_keys,
        )

    def check(self, kind: CommandKind, ids: Mapping[str, str], body: Command) -> ShopError | None:
        """``overloaded`` if the buyer of this command is over its rate, else ``None``."""
        if kind == CommandKind.WINDOW_JOIN and isinstance(body, Join):
            return _refusal(self.joins.take(body.buyer_id), "joins", body.buyer_id)
        if kind == CommandKind.INTENT_SUBMIT:
            buyer_id = ids.get("buyer_id")
            if buyer_id is not None:
                return _refusal(self.intents.take(buyer_id), "intent submits", buyer_id)
        return None


def _refusal(wait: float, what: str, buyer_id: str) -> ShopError | None:
    if wait <= 0.0:
        return None
    retry_after = round(max(wait, 0.001), 3)
    return ShopError(
        ErrorCode.OVERLOADED,
        f"too many {what} for buyer {buyer_id}; retry in {retry_after:g} s",
        {"retry_after_s": retry_after},
    )
