"""The demand score: decay arithmetic, late arrivals, and its properties over time."""

from __future__ import annotations

import math
import random

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from iceshop.demand import (
    DEFAULT_HALF_LIFE_S,
    DemandScore,
    arrival_weight,
    decay_factor,
    fold_arrivals,
)

HOUR = 3600.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z

times = st.floats(min_value=0.0, max_value=2e9, allow_nan=False, allow_infinity=False)
half_lives = st.floats(min_value=1.0, max_value=1e7, allow_nan=False, allow_infinity=False)
scores = st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False)
weights = st.integers(min_value=1, max_value=10_000).map(float)


def test_default_half_life_is_six_hours() -> None:
    assert DEFAULT_HALF_LIFE_S == 6 * HOUR


def test_decay_factor_values() -> None:
    assert decay_factor(0.0) == 1.0
    assert decay_factor(6 * HOUR) == 0.5
    assert decay_factor(12 * HOUR) == 0.25
    assert decay_factor(HOUR, half_life_s=HOUR) == 0.5
    assert decay_factor(-5 * HOUR) == 1.0  # never amplifies


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_half_life_must_be_positive_and_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="half_life_s"):
        decay_factor(1.0, bad)


def test_arrival_weight_is_quantity() -> None:
    assert arrival_weight(1) == 1.0
    assert arrival_weight(7) == 7.0
    with pytest.raises(ValueError, match="quantity"):
        arrival_weight(0)


def test_zero_score_then_one_arrival() -> None:
    score = DemandScore().add(8.0, T0)
    assert score == DemandScore(score=8.0, as_of=T0)
    assert score.value_at(T0 + 6 * HOUR) == 4.0
    assert score.decayed(T0 + 12 * HOUR) == DemandScore(score=2.0, as_of=T0 + 12 * HOUR)


def test_arrivals_accumulate_with_decay() -> None:
    score = DemandScore().add(4.0, T0).add(6.0, T0 + 6 * HOUR)
    assert score == DemandScore(score=2.0 + 6.0, as_of=T0 + 6 * HOUR)


def test_late_arrival_is_added_already_decayed() -> None:
    score = DemandScore(score=4.0, as_of=T0 + 6 * HOUR).add(8.0, T0)
    assert score == DemandScore(score=4.0 + 4.0, as_of=T0 + 6 * HOUR)


def test_score_is_never_rewound() -> None:
    score = DemandScore(score=10.0, as_of=T0)
    assert score.decayed(T0 - HOUR) is score
    assert score.value_at(T0 - HOUR) == 10.0


def test_custom_half_life() -> None:
    score = DemandScore(score=12.0, as_of=T0)
    assert score.value_at(T0 + HOUR, half_life_s=HOUR) == 6.0
    assert score.add(1.0, T0 + 2 * HOUR, half_life_s=HOUR).score == 3.0 + 1.0


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan])
def test_invalid_weight_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        DemandScore().add(bad, T0)


def test_invalid_score_rejected_on_construct_and_decode() -> None:
    with pytest.raises(ValueError, match="score"):
        DemandScore(score=-1.0, as_of=T0)
    with pytest.raises(msgspec.ValidationError, match="score"):
        msgspec.json.decode(b'{"score": -2.0, "as_of": 0}', type=DemandScore)


def test_json_round_trip() -> None:
    score = DemandScore(score=3.5, as_of=T0)
    assert msgspec.json.decode(msgspec.json.encode(score), type=DemandScore) == score


def test_fold_arrivals_from_a_start() -> None:
    start = DemandScore(score=2.0, as_of=T0)
    folded = fold_arrivals([(1.0, T0 + 6 * HOUR), (3.0, T0 + 6 * HOUR)], start=start)
    assert folded == DemandScore(score=1.0 + 1.0 + 3.0, as_of=T0 + 6 * HOUR)


@given(score=scores, as_of=times, half_life=half_lives)
def test_halves_after_one_half_life(score: float, as_of: float, half_life: float) -> None:
    value = DemandScore(score=score, as_of=as_of).value_at(as_of + half_life, half_life)
    assert math.isclose(value, score / 2, rel_tol=1e-6, abs_tol=1e-9)


@given(score=scores, half_life=half_lives, k=st.integers(min_value=0, max_value=20))
def test_exact_halving_on_whole_half_lives(score: float, half_life: float, k: int) -> None:
    elapsed = k * half_life
    assert decay_factor(elapsed, half_life) == pytest.approx(0.5**k, rel=1e-12)
    assert DemandScore(score=score, as_of=0.0).value_at(elapsed, half_life) == pytest.approx(
        score * 0.5**k, rel=1e-12, abs=1e-300
    )


@given(score=scores, as_of=times, a=times, b=times, half_life=half_lives)
def test_monotone_non_increasing_in_time(
    score: float, as_of: float, a: float, b: float, half_life: float
) -> None:
    early, late = sorted((a, b))
    s = DemandScore(score=score, as_of=as_of)
    assert s.value_at(early, half_life) >= s.value_at(late, half_life)
    assert s.value_at(late, half_life) <= score


@given(
    arrivals=st.lists(st.tuples(weights, times), min_size=1, max_size=20),
    seed=st.integers(),
    half_life=half_lives,
)
def test_fold_is_order_independent(
    arrivals: list[tuple[float, float]], seed: int, half_life: float
) -> None:
    shuffled = list(arrivals)
    random.Random(seed).shuffle(shuffled)
    a = fold_arrivals(arrivals, half_life_s=half_life)
    b = fold_arrivals(shuffled, half_life_s=half_life)
    assert a.as_of == b.as_of == max(t for _, t in arrivals)
    assert math.isclose(a.score, b.score, rel_tol=1e-9, abs_tol=1e-9)


@given(score=scores, as_of=times, d1=times, d2=times, half_life=half_lives)
def test_decaying_in_steps_equals_decaying_once(
    score: float, as_of: float, d1: float, d2: float, half_life: float
) -> None:
    s = DemandScore(score=score, as_of=as_of)
    stepped = s.decayed(as_of + d1, half_life).decayed(as_of + d1 + d2, half_life)
    direct = s.value_at(as_of + d1 + d2, half_life)
    assert math.isclose(stepped.score, direct, rel_tol=1e-9, abs_tol=1e-12)


@given(score=scores, as_of=times, weight=weights, at=times, half_life=half_lives)
def test_an_arrival_never_lowers_the_score(
    score: float, as_of: float, weight: float, at: float, half_life: float
) -> None:
    s = DemandScore(score=score, as_of=as_of)
    added = s.add(weight, at, half_life)
    assert added.as_of == max(as_of, at)
    assert added.score >= s.value_at(added.as_of, half_life)
    assert added.score <= s.value_at(added.as_of, half_life) + weight
