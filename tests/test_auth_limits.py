"""Per-buyer rate limits on joins and intent submits, on a virtual clock."""

from __future__ import annotations

import pytest

from actors import VirtualClock
from iceshop.auth import BuyerLimits, TokenBuckets
from iceshop.settings import Settings
from iceshop.wire import CommandKind, ErrorCode, GetWindow, Join, SubmitIntent


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


def test_a_bucket_allows_its_burst_then_refills_at_its_rate(clock: VirtualClock) -> None:
    buckets = TokenBuckets(2.0, 3, clock)
    assert [buckets.take("b1") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("b1") == pytest.approx(0.5)  # one token comes back in 1/2 s
    assert buckets.take("b2") == 0.0  # other keys are untouched
    clock.set(0.25)
    assert buckets.take("b1") == pytest.approx(0.25)  # half a token so far
    clock.set(0.5)
    assert buckets.take("b1") == 0.0
    assert buckets.take("b1") > 0
    clock.set(100.0)  # a long pause refills to the burst, not beyond
    assert [buckets.take("b1") for _ in range(4)][:3] == [0.0, 0.0, 0.0]
    assert buckets.take("b1") > 0


def test_rate_zero_means_no_limit(clock: VirtualClock) -> None:
    buckets = TokenBuckets(0.0, 1, clock)
    assert all(buckets.take("b1") == 0.0 for _ in range(1000))
    assert len(buckets) == 0


def test_memory_is_bounded_least_recently_seen_first(clock: VirtualClock) -> None:
    buckets = TokenBuckets(1.0, 1, clock, max_keys=3)
    for key in ("a", "b", "c"):
        assert buckets.take(key) == 0.0
    assert buckets.take("a") > 0  # "a" is now the most recent
    assert buckets.take("d") == 0.0  # evicts "b"
    assert len(buckets) == 3
    assert buckets.take("a") > 0  # still limited: kept
    assert buckets.take("b") == 0.0  # forgotten, so a full bucket again
    assert len(buckets) == 3


def test_bad_parameters_are_refused(clock: VirtualClock) -> None:
    for rate, burst in ((-1.0, 1), (1.0, 0)):
        with pytest.raises(ValueError, match="burst"):
            TokenBuckets(rate, burst, clock)


def test_buyer_limits_give_overloaded_with_retry_after(clock: VirtualClock) -> None:
    settings = Settings(
        buyer_join_rate_per_s=1.0,
        buyer_join_burst=2,
        buyer_intent_rate_per_s=0.5,
        buyer_intent_burst=1,
    )
    limits = BuyerLimits(settings, clock)
    join = Join(join_id="j", buyer_id="B1")
    ids = {"window_id": "W1"}
    assert limits.check(CommandKind.WINDOW_JOIN, ids, join) is None
    assert limits.check(CommandKind.WINDOW_JOIN, {"window_id": "W2"}, join) is None
    refused = limits.check(CommandKind.WINDOW_JOIN, ids, join)
    assert refused is not None
    assert refused.code is ErrorCode.OVERLOADED and refused.retryable
    assert refused.details == {"retry_after_s": 1.0}
    assert "B1" in refused.message
    # another buyer, even through the same gateway, has its own bucket
    assert limits.check(CommandKind.WINDOW_JOIN, ids, Join(join_id="j", buyer_id="B2")) is None
    # intents are counted apart from joins, by the subject's buyer
    submit = SubmitIntent(intent_id="i", product_id="p", max_price_minor=1)
    assert limits.check(CommandKind.INTENT_SUBMIT, {"buyer_id": "B1"}, submit) is None
    again = limits.check(CommandKind.INTENT_SUBMIT, {"buyer_id": "B1"}, submit)
    assert again is not None and again.details == {"retry_after_s": 2.0}
    # other commands are not limited here
    for _ in range(50):
        assert limits.check(CommandKind.WINDOW_GET, ids, GetWindow()) is None
    clock.set(1.0)
    assert limits.check(CommandKind.WINDOW_JOIN, ids, join) is None
