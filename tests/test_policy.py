"""The campaign policy: the documented worked example, each rule, and properties.

``test_worked_example_*`` run exactly the example of ``docs/policy.md`` and assert the
numbers it shows, so the document cannot drift from the code.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from iceshop.demand import DemandScore
from iceshop.policy import (
    MAX_REASONS,
    REASON_CODES,
    CampaignState,
    Evaluation,
    IntentView,
    ListingView,
    PolicySettings,
    PriceChoice,
    Reason,
    SellerCandidate,
    SellerListing,
    SellerView,
    WindowProposal,
    WindowSize,
    assess_candidate,
    choose_price,
    choose_seller,
    evaluate,
    score_demand,
    seller_load,
    size_window,
)

# --------------------------------------------------------------------------- the worked example

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
PRODUCT = "espresso-grinder"

EXAMPLE_SETTINGS = PolicySettings(
    campaign_min_quantity=10,
    window_lead_s=600,
    window_duration_s=3600,
    window_min_participants=4,
    window_max_per_buyer=4,
    cooldown_s=3600,
    half_life_s=21600,
)

# (buyer_id, quantity, max_price_minor): the table in docs/policy.md
EXAMPLE_INTENTS = [
    IntentView(intent_id=f"i-{buyer}", buyer_id=buyer, quantity=quantity, max_price_minor=price)
    for buyer, quantity, price in [
        ("B01", 1, 12000),
        ("B02", 2, 11500),
        ("B03", 1, 11000),
        ("B04", 3, 10500),
        ("B05", 1, 10000),
        ("B06", 2, 9800),
        ("B07", 1, 9500),
        ("B08", 1, 9000),
        ("B09", 2, 8800),
        ("B10", 1, 8500),
        ("B11", 1, 8000),
        ("B12", 1, 7000),
    ]
]


def _supply(
    seller_id: str,
    *,
    list_price: int,
    floor: int,
    stock: int,
    active: int = 0,
    pending: int = 0,
    capacity: int = 3,
    product: str = PRODUCT,
    currency: str = "TRY",
) -> SellerListing:
    return SellerListing(
        seller=SellerView(
            seller_id=seller_id,
            max_active_windows=capacity,
            active_windows=active,
            pending_offers=pending,
        ),
        listing=ListingView(
            seller_id=seller_id,
            product_id=product,
            list_price_minor=list_price,
            floor_price_minor=floor,
            stock=stock,
            currency=currency,
        ),
    )


EXAMPLE_SUPPLY = [
    _supply("anatolia", list_price=11000, floor=9400, stock=30, active=0),
    _supply("bosphorus", list_price=10500, floor=8600, stock=12, active=1),
    _supply("cappadocia", list_price=10000, floor=7900, stock=40, active=2, pending=1),
]
EXAMPLE_DEMAND = DemandScore(score=24.0, as_of=NOW - 21600)
EXAMPLE_STATE = CampaignState(last_proposed_at=NOW - 7200, open_windows=0)


def _example(state: CampaignState = EXAMPLE_STATE) -> Evaluation:
    return evaluate(
        PRODUCT,
        NOW,
        EXAMPLE_DEMAND,
        EXAMPLE_SUPPLY,
        EXAMPLE_INTENTS,
        EXAMPLE_SETTINGS,
        state,
    )


def test_worked_example_demand() -> None:
    assessment = score_demand(EXAMPLE_INTENTS, 12.0, EXAMPLE_SETTINGS)
    assert (assessment.open_intents, assessment.open_quantity, assessment.buyers) == (12, 17, 12)
    assert assessment.highest_max_price_minor == 12000
    assert assessment.median_max_price_minor == 9800
    assert assessment.lowest_max_price_minor == 7000
    assert assessment.meets_minimum
    assert EXAMPLE_DEMAND.value_at(NOW, EXAMPLE_SETTINGS.half_life_s) == 12.0


def test_worked_example_sellers() -> None:
    inputs = _example().inputs
    table = {
        seller: tuple(
            inputs[f"seller.{seller}.{key}"]
            for key in (
                "status",
                "load_ratio",
                "unit_price_minor",
                "accepted_quantity",
                "accepted_buyers",
                "captured_quantity",
            )
        )
        for seller in ("anatolia", "bosphorus", "cappadocia")
    }
    assert table == {
        "anatolia": ("eligible", 0.0, 9500, 11, 7, 11),
        "bosphorus": ("eligible", 1 / 3, 8800, 14, 9, 12),
        "cappadocia": ("at_capacity", 1.0, 8000, 16, 11, 16),
    }


def test_worked_example_decision() -> None:
    evaluation = _example()
    assert evaluation.outcome == "window_proposed"
    assert evaluation.proposal == WindowProposal(
        seller_id="bosphorus",
        currency="TRY",
        unit_price_minor=8800,
        floor_price_minor=8600,
        list_price_minor=10500,
        quantity_total=12,
        min_participants=4,
        max_per_buyer=3,
        activates_at=NOW + 600,
        expires_at=NOW + 4200,
    )
    assert evaluation.reasons == (
        Reason(
            code="demand_sufficient",
            text="Open demand is 17 units from 12 buyers, meeting the campaign minimum of 10; "
            "demand score 12.0 (half-life 6 h).",
            value=17,
            threshold=10,
        ),
        Reason(
            code="price_accepted",
            text="At 88.00 TRY (floor 86.00 TRY, list 105.00 TRY) 9 buyers accept 14 units; "
            "the campaign minimum is 10.",
            value=14,
            threshold=10,
        ),
        Reason(
            code="seller_selected",
            text="Seller bosphorus captures 12 units with 1 of 3 window slots in use; "
            "next best anatolia captures 11; skipped at capacity: cappadocia.",
            value=12,
            threshold=11,
        ),
        Reason(
            code="window_sized",
            text="Window of 12 units (accepted demand 14, stock 12), tipping point 4 buyers, "
            "at most 3 per buyer (lowered from 4 so that a sell-out always reaches the "
            "tipping point).",
            value=12,
            threshold=12,
        ),
    )


def test_worked_example_inputs() -> None:
    inputs = _example().inputs
    expected = {
        "now": 1767225600,
        "settings.campaign_min_quantity": 10,
        "settings.window_lead_s": 600,
        "settings.window_duration_s": 3600,
        "settings.window_min_participants": 4,
        "settings.window_max_per_buyer": 4,
        "settings.cooldown_s": 3600,
        "settings.half_life_s": 21600,
        "state.open_windows": 0,
        "state.last_proposed_at": 1767218400,
        "demand.score_stored": 24.0,
        "demand.score_as_of": 1767204000,
        "demand.score": 12.0,
        "demand.open_intents": 12,
        "demand.open_quantity": 17,
        "demand.buyers": 12,
        "demand.max_price_minor.highest": 12000,
        "demand.max_price_minor.median": 9800,
        "demand.max_price_minor.lowest": 7000,
        "sellers": 3,
        "choice.seller_id": "bosphorus",
        "choice.contenders": 2,
        "window.unit_price_minor": 8800,
        "window.quantity_total": 12,
        "window.min_participants": 4,
        "window.max_per_buyer": 3,
        "window.activates_at": 1767226200,
        "window.expires_at": 1767229800,
    }
    assert {k: inputs[k] for k in expected} == expected
    assert len([k for k in inputs if k.startswith("seller.")]) == 3 * 12


def test_worked_example_during_cooldown_is_deferred() -> None:
    evaluation = _example(CampaignState(last_proposed_at=NOW - 1800))
    assert evaluation.outcome == "deferred"
    assert evaluation.proposal is None
    assert [r.code for r in evaluation.reasons] == [
        "cooldown_active",
        "demand_sufficient",
        "price_accepted",
        "seller_selected",
    ]
    cooldown = evaluation.reasons[0]
    assert (cooldown.value, cooldown.threshold) == (1800, 3600)
    assert cooldown.text == (
        "The last window for this product was proposed 30 min ago; the cooldown is 1 h."
    )
    assert evaluation.inputs["choice.seller_id"] == "bosphorus"


# --------------------------------------------------------------------------- choose_price


def _intent(buyer: str, quantity: int, max_price: int) -> IntentView:
    return IntentView(
        intent_id=f"i-{buyer}", buyer_id=buyer, quantity=quantity, max_price_minor=max_price
    )


def _listing(*, floor: int, list_price: int, stock: int = 100, seller: str = "S") -> ListingView:
    return ListingView(
        seller_id=seller,
        product_id=PRODUCT,
        list_price_minor=list_price,
        floor_price_minor=floor,
        stock=stock,
    )


def test_price_is_lowest_limit_that_accepts_the_floor() -> None:
    intents = [_intent("a", 1, 900), _intent("b", 2, 1200), _intent("c", 5, 700)]
    choice = choose_price(_listing(floor=800, list_price=1500), intents)
    assert choice == PriceChoice(
        unit_price_minor=900,
        floor_price_minor=800,
        list_price_minor=1500,
        accepted_quantity=3,
        accepted_buyers=2,
    )


def test_price_is_list_when_everyone_accepts_list() -> None:
    intents = [_intent("a", 1, 2000), _intent("b", 1, 1600)]
    choice = choose_price(_listing(floor=800, list_price=1500), intents)
    assert choice is not None
    assert (choice.unit_price_minor, choice.accepted_quantity) == (1500, 2)


def test_price_at_exactly_the_floor() -> None:
    choice = choose_price(_listing(floor=800, list_price=1500), [_intent("a", 1, 800)])
    assert choice is not None
    assert choice.unit_price_minor == 800


def test_no_price_when_nobody_accepts_the_floor() -> None:
    assert choose_price(_listing(floor=800, list_price=1500), [_intent("a", 9, 799)]) is None
    assert choose_price(_listing(floor=800, list_price=1500), []) is None


def test_price_choice_cannot_exist_out_of_bounds() -> None:
    with pytest.raises(ValueError, match="within"):
        PriceChoice(
            unit_price_minor=799,
            floor_price_minor=800,
            list_price_minor=900,
            accepted_quantity=1,
            accepted_buyers=1,
        )
    with pytest.raises(ValueError, match="within"):
        PriceChoice(
            unit_price_minor=901,
            floor_price_minor=800,
            list_price_minor=900,
            accepted_quantity=1,
            accepted_buyers=1,
        )


def test_listing_floor_above_list_rejected_on_construct_and_decode() -> None:
    with pytest.raises(ValueError, match="floor_price_minor"):
        _listing(floor=901, list_price=900)
    body = (
        b'{"seller_id": "S", "product_id": "P", "list_price_minor": 900,'
        b' "floor_price_minor": 901, "stock": 1}'
    )
    with pytest.raises(msgspec.ValidationError, match="floor_price_minor"):
        msgspec.json.decode(body, type=ListingView)


# --------------------------------------------------------------------------- seller_load


def test_seller_load_statuses() -> None:
    listing = _listing(floor=1, list_price=2, stock=5)
    free = SellerView(seller_id="S", max_active_windows=3, active_windows=1, pending_offers=1)
    full = SellerView(seller_id="S", max_active_windows=3, active_windows=2, pending_offers=1)
    closed = SellerView(seller_id="S", max_active_windows=0)
    assert seller_load(free, listing).status == "eligible"
    assert seller_load(free, listing).load_ratio == pytest.approx(2 / 3)
    assert seller_load(full, listing).status == "at_capacity"
    assert seller_load(closed, listing).status == "at_capacity"
    assert float(seller_load(closed, listing).load_ratio) == 1.0
    assert seller_load(free, listing, min_stock=6).status == "insufficient_stock"
    # stock is checked first: it does not come back by waiting
    assert seller_load(full, listing, min_stock=6).status == "insufficient_stock"


def test_seller_load_rejects_foreign_listing() -> None:
    with pytest.raises(ValueError, match="another seller"):
        seller_load(SellerView(seller_id="X"), _listing(floor=1, list_price=2))


# --------------------------------------------------------------------------- choose_seller


def _candidate(
    seller: str,
    *,
    floor: int,
    stock: int,
    list_price: int = 10_000,
    active: int = 0,
    capacity: int = 3,
    intents: list[IntentView],
) -> SellerCandidate:
    supply = SellerListing(
        seller=SellerView(seller_id=seller, max_active_windows=capacity, active_windows=active),
        listing=_listing(floor=floor, list_price=list_price, stock=stock, seller=seller),
    )
    return assess_candidate(supply, intents)


DEMAND = [_intent("a", 5, 1000), _intent("b", 5, 900), _intent("c", 5, 800)]


def test_seller_with_most_captured_quantity_wins() -> None:
    a = _candidate("A", floor=1000, stock=100, intents=DEMAND)  # accepted 5
    b = _candidate("B", floor=800, stock=8, intents=DEMAND)  # accepted 15, captured 8
    c = _candidate("C", floor=900, stock=100, intents=DEMAND)  # accepted 10
    choice = choose_seller([a, b, c])
    assert choice is not None
    assert [x.seller_id for x in choice.ranked] == ["C", "B", "A"]
    assert choice.price.unit_price_minor == 900


def test_seller_tie_breaks_load_then_price_then_id() -> None:
    same = [_intent("a", 5, 1000), _intent("b", 5, 1000), _intent("c", 5, 1000)]
    busy = _candidate("A", floor=800, list_price=900, stock=15, active=2, intents=same)
    dear = _candidate("B", floor=800, list_price=950, stock=15, intents=same)
    idle = _candidate("C", floor=800, list_price=900, stock=15, intents=same)
    twin = _candidate("D", floor=800, list_price=900, stock=15, intents=same)
    assert {c.captured_quantity for c in (busy, dear, idle, twin)} == {15}
    choice = choose_seller([twin, dear, busy, idle])
    assert choice is not None
    assert [x.seller_id for x in choice.ranked] == ["C", "D", "B", "A"]


def test_ineligible_or_unpriced_sellers_are_not_chosen() -> None:
    full = _candidate("A", floor=800, stock=100, active=3, intents=DEMAND)
    unpriced = _candidate("B", floor=5000, stock=100, intents=DEMAND)
    assert choose_seller([full, unpriced]) is None
    assert choose_seller([]) is None


# --------------------------------------------------------------------------- size_window


def _sizing(min_participants: int, max_per_buyer: int) -> PolicySettings:
    return PolicySettings(
        window_min_participants=min_participants, window_max_per_buyer=max_per_buyer
    )


def test_size_is_demand_capped_by_stock() -> None:
    assert size_window(14, 12, _sizing(4, 4)) == WindowSize(
        quantity_total=12, min_participants=4, max_per_buyer=3
    )
    assert size_window(9, 50, _sizing(3, 2)) == WindowSize(
        quantity_total=9, min_participants=3, max_per_buyer=2
    )


def test_size_with_trivial_tipping_point() -> None:
    assert size_window(7, 5, _sizing(1, 10)) == WindowSize(
        quantity_total=5, min_participants=1, max_per_buyer=5
    )
    assert size_window(1, 5, _sizing(0, 3)) == WindowSize(
        quantity_total=1, min_participants=0, max_per_buyer=1
    )


def test_size_below_tipping_point_is_refused() -> None:
    with pytest.raises(ValueError, match="tipping point"):
        size_window(10, 2, _sizing(3, 1))
    with pytest.raises(ValueError, match="tipping point"):
        size_window(0, 10, _sizing(0, 1))


def test_window_size_cannot_violate_the_contract() -> None:
    with pytest.raises(ValueError, match="max_per_buyer"):
        WindowSize(quantity_total=12, min_participants=4, max_per_buyer=4)
    with pytest.raises(ValueError, match="quantity_total"):
        WindowSize(quantity_total=2, min_participants=3, max_per_buyer=1)


# --------------------------------------------------------------------------- evaluate: outcomes

SIMPLE = PolicySettings(
    campaign_min_quantity=5, window_min_participants=2, window_max_per_buyer=3, cooldown_s=600
)
FIVE_BUYERS = [_intent(f"b{i}", 2, 1000) for i in range(5)]  # 10 units at <= 10.00
OPEN = _supply("S", list_price=1200, floor=900, stock=50)


def _eval(
    supply: list[SellerListing],
    intents: list[IntentView] = FIVE_BUYERS,
    state: CampaignState | None = None,
    settings: PolicySettings = SIMPLE,
) -> Evaluation:
    return evaluate(
        PRODUCT, NOW, DemandScore(), supply, intents, settings, state or CampaignState()
    )


# name -> (evaluation, outcome, reason codes, (value, threshold) of the first reason)
SCENARIOS: dict[str, tuple[Callable[[], Evaluation], str, list[str], tuple[object, object]]] = {
    "proposed": (
        lambda: _eval([OPEN]),
        "window_proposed",
        ["demand_sufficient", "price_accepted", "seller_selected", "window_sized"],
        (10, 5),
    ),
    "demand_below_minimum": (
        lambda: _eval([OPEN], FIVE_BUYERS[:2]),
        "no_action",
        ["demand_below_minimum"],
        (4, 5),
    ),
    "no_listing": (lambda: _eval([]), "no_action", ["no_listing", "demand_sufficient"], (0, 1)),
    "price_gap": (
        lambda: _eval(
            [
                _supply("S", list_price=2000, floor=1100, stock=50),
                _supply("T", list_price=2000, floor=1500, stock=50),
            ]
        ),
        "no_action",
        ["price_gap", "demand_sufficient"],
        (1000, 1100),
    ),
    "accepted_below_minimum": (
        lambda: _eval([OPEN], [*FIVE_BUYERS[:2], *[_intent(f"c{i}", 2, 500) for i in range(3)]]),
        "no_action",
        ["accepted_below_minimum", "demand_sufficient"],
        (4, 5),
    ),
    "too_few_buyers": (
        lambda: _eval(
            [OPEN],
            [_intent("a", 4, 1000), _intent("b", 4, 1000), _intent("c", 4, 100)],
            settings=msgspec.structs.replace(SIMPLE, window_min_participants=3),
        ),
        "no_action",
        ["too_few_buyers", "demand_sufficient"],
        (2, 3),
    ),
    "insufficient_stock": (
        lambda: _eval(
            [
                _supply("S", list_price=1200, floor=900, stock=1),
                _supply("T", list_price=1200, floor=900, stock=0, active=3),
            ]
        ),
        "no_action",
        ["insufficient_stock", "demand_sufficient"],
        (1, 2),
    ),
    "seller_at_capacity": (
        lambda: _eval(
            [
                _supply("S", list_price=1200, floor=900, stock=50, active=3),
                _supply("T", list_price=1200, floor=900, stock=1),
            ]
        ),
        "deferred",
        ["seller_at_capacity", "demand_sufficient"],
        (3, 3),
    ),
    "capacity_and_time": (
        lambda: _eval(
            [_supply("S", list_price=1200, floor=900, stock=50, active=3)],
            state=CampaignState(open_windows=1, last_proposed_at=NOW - 60),
        ),
        "deferred",
        ["window_open", "cooldown_active", "seller_at_capacity", "demand_sufficient"],
        (1, 0),
    ),
    "window_open": (
        lambda: _eval([OPEN], state=CampaignState(open_windows=2)),
        "deferred",
        ["window_open", "demand_sufficient", "price_accepted", "seller_selected"],
        (2, 0),
    ),
    "cooldown_active": (
        lambda: _eval([OPEN], state=CampaignState(last_proposed_at=NOW - 599.5)),
        "deferred",
        ["cooldown_active", "demand_sufficient", "price_accepted", "seller_selected"],
        (599.5, 600),
    ),
    "cooldown_over": (
        lambda: _eval([OPEN], state=CampaignState(last_proposed_at=NOW - 600)),
        "window_proposed",
        ["demand_sufficient", "price_accepted", "seller_selected", "window_sized"],
        (10, 5),
    ),
    "no_action_beats_time": (
        lambda: _eval([], state=CampaignState(open_windows=1, last_proposed_at=NOW)),
        "no_action",
        ["no_listing", "demand_sufficient"],
        (0, 1),
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_outcome_scenario(name: str) -> None:
    run, outcome, codes, first = SCENARIOS[name]
    evaluation = run()
    assert evaluation.outcome == outcome
    assert [r.code for r in evaluation.reasons] == codes
    assert (evaluation.reasons[0].value, evaluation.reasons[0].threshold) == first
    assert (evaluation.proposal is not None) == (outcome == "window_proposed")


def test_every_reason_code_is_reached_and_documented() -> None:
    reached = {code for _, _, codes, _ in SCENARIOS.values() for code in codes}
    assert reached == set(REASON_CODES)
    doc = (Path(__file__).resolve().parent.parent / "docs" / "policy.md").read_text("utf-8")
    for code in REASON_CODES:
        assert f"`{code}`" in doc, code


def test_proposal_details() -> None:
    evaluation = SCENARIOS["proposed"][0]()
    assert evaluation.proposal is not None
    proposal = evaluation.proposal
    assert (proposal.unit_price_minor, proposal.quantity_total, proposal.max_per_buyer) == (
        1000,
        10,
        3,
    )
    assert (proposal.activates_at, proposal.expires_at) == (NOW + 300, NOW + 300 + 3600)
    assert evaluation.reasons[2].threshold is None  # no runner-up


def test_deferred_decision_records_the_would_be_window() -> None:
    evaluation = SCENARIOS["window_open"][0]()
    assert evaluation.proposal is None
    assert evaluation.inputs["window.quantity_total"] == 10
    assert evaluation.inputs["choice.seller_id"] == "S"


def test_price_gap_text_names_both_prices() -> None:
    text = SCENARIOS["price_gap"][0]().reasons[0].text
    assert text == (
        "No buyer accepts any seller's floor price: buyers accept at most 10.00 TRY, "
        "the lowest floor is 11.00 TRY (S)."
    )


# --------------------------------------------------------------------------- evaluate: inputs


def test_inconsistent_supply_rejected() -> None:
    good = _supply("S", list_price=1200, floor=900, stock=50)
    with pytest.raises(ValueError, match="another product"):
        _eval([_supply("T", list_price=1, floor=1, stock=1, product="other")])
    with pytest.raises(ValueError, match="twice"):
        _eval([good, good])
    with pytest.raises(ValueError, match="currency"):
        _eval([good, _supply("T", list_price=1, floor=1, stock=1, currency="EUR")])


def test_evaluation_encodes_as_json() -> None:
    evaluation = _example()
    decoded = msgspec.json.decode(msgspec.json.encode(evaluation), type=Evaluation)
    assert decoded == evaluation
    assert all(isinstance(v, int | float | str) for v in evaluation.inputs.values())


def test_money_text_respects_currency_exponent() -> None:
    supply = [_supply("S", list_price=2000, floor=1100, stock=50, currency="JPY")]
    assert "1,000 JPY" in _eval(supply).reasons[0].text
    supply = [_supply("S", list_price=2000, floor=1100, stock=50, currency="KWD")]
    assert "1.000 KWD" in _eval(supply).reasons[0].text


# --------------------------------------------------------------------------- properties

prices = st.integers(min_value=0, max_value=300)


@st.composite
def intent_lists(draw: st.DrawFn) -> list[IntentView]:
    rows = draw(st.lists(st.tuples(st.integers(1, 5), prices), min_size=0, max_size=25))
    return [_intent(f"b{i}", q, p) for i, (q, p) in enumerate(rows)]


@st.composite
def listings(draw: st.DrawFn, seller: str = "S") -> ListingView:
    a, b = draw(prices), draw(prices)
    return _listing(
        floor=min(a, b), list_price=max(a, b), stock=draw(st.integers(0, 30)), seller=seller
    )


@st.composite
def supplies(draw: st.DrawFn) -> list[SellerListing]:
    count = draw(st.integers(0, 5))
    out = []
    for i in range(count):
        seller = f"s{i}"
        out.append(
            SellerListing(
                seller=SellerView(
                    seller_id=seller,
                    max_active_windows=draw(st.integers(0, 3)),
                    active_windows=draw(st.integers(0, 3)),
                    pending_offers=draw(st.integers(0, 1)),
                ),
                listing=draw(listings(seller)),
            )
        )
    return out


settings_st = st.builds(
    PolicySettings,
    campaign_min_quantity=st.integers(1, 15),
    window_lead_s=st.integers(0, 100).map(float),
    window_duration_s=st.integers(1, 1000).map(float),
    window_min_participants=st.integers(0, 5),
    window_max_per_buyer=st.integers(1, 6),
    cooldown_s=st.integers(0, 1000).map(float),
)
states = st.builds(
    CampaignState,
    last_proposed_at=st.none() | st.integers(0, 2000).map(lambda d: NOW - d),
    open_windows=st.integers(0, 1),
)
demands = st.builds(
    DemandScore,
    score=st.integers(0, 100).map(float),
    as_of=st.integers(0, 100_000).map(lambda d: NOW - d),
)


def _accepted_at(intents: list[IntentView], price: int) -> int:
    return sum(i.quantity for i in intents if price <= i.max_price_minor)


@given(listing=listings(), intents=intent_lists())
def test_price_within_bounds_and_optimal(listing: ListingView, intents: list[IntentView]) -> None:
    choice = choose_price(listing, intents)
    bounds = range(listing.floor_price_minor, listing.list_price_minor + 1)
    best = max(_accepted_at(intents, p) for p in bounds)
    if best == 0:
        assert choice is None
        return
    assert choice is not None
    assert choice.unit_price_minor in bounds
    assert choice.accepted_quantity == _accepted_at(intents, choice.unit_price_minor) == best
    higher = range(choice.unit_price_minor + 1, listing.list_price_minor + 1)
    assert all(_accepted_at(intents, p) < best for p in higher)


@given(accepted=st.integers(0, 60), stock=st.integers(0, 60), settings=settings_st)
def test_window_sizing_invariants(accepted: int, stock: int, settings: PolicySettings) -> None:
    m = settings.window_min_participants
    if min(accepted, stock) < max(1, m):
        with pytest.raises(ValueError):
            size_window(accepted, stock, settings)
        return
    size = size_window(accepted, stock, settings)
    assert size.quantity_total == min(accepted, stock)
    assert size.quantity_total >= max(1, m)
    assert size.min_participants == m
    assert size.max_per_buyer * (m - 1) < size.quantity_total
    assert 1 <= size.max_per_buyer <= min(settings.window_max_per_buyer, size.quantity_total)
    # the per-buyer limit is lowered only as far as needed
    raised = size.max_per_buyer + 1
    assert (
        raised > settings.window_max_per_buyer
        or raised > size.quantity_total
        or raised * (m - 1) >= size.quantity_total
    )


def _principal_outcome(code: str) -> str:
    deferrals = {"seller_at_capacity", "window_open", "cooldown_active"}
    if code in deferrals:
        return "deferred"
    return "window_proposed" if code == "demand_sufficient" else "no_action"


@given(
    supply=supplies(),
    intents=intent_lists(),
    settings=settings_st,
    state=states,
    demand=demands,
    seed=st.integers(),
)
def test_evaluate_properties(
    supply: list[SellerListing],
    intents: list[IntentView],
    settings: PolicySettings,
    state: CampaignState,
    demand: DemandScore,
    seed: int,
) -> None:
    evaluation = evaluate(PRODUCT, NOW, demand, supply, intents, settings, state)

    assert 1 <= len(evaluation.reasons) <= MAX_REASONS
    assert all(r.code in REASON_CODES for r in evaluation.reasons)
    assert _principal_outcome(evaluation.reasons[0].code) == evaluation.outcome
    assert all(isinstance(v, int | float | str) for v in evaluation.inputs.values())

    proposal = evaluation.proposal
    assert (proposal is not None) == (evaluation.outcome == "window_proposed")
    if proposal is not None:
        chosen = next(s for s in supply if s.seller.seller_id == proposal.seller_id)
        listing, seller = chosen.listing, chosen.seller
        assert listing.floor_price_minor <= proposal.unit_price_minor <= listing.list_price_minor
        assert proposal.quantity_total <= listing.stock
        assert proposal.quantity_total <= _accepted_at(intents, proposal.unit_price_minor)
        assert _accepted_at(intents, proposal.unit_price_minor) >= settings.campaign_min_quantity
        assert proposal.quantity_total >= max(1, proposal.min_participants)
        assert proposal.max_per_buyer * (proposal.min_participants - 1) < proposal.quantity_total
        assert seller.active_windows + seller.pending_offers < seller.max_active_windows
        assert state.open_windows == 0

    rng = random.Random(seed)
    shuffled_supply, shuffled_intents = list(supply), list(intents)
    rng.shuffle(shuffled_supply)
    rng.shuffle(shuffled_intents)
    again = evaluate(PRODUCT, NOW, demand, shuffled_supply, shuffled_intents, settings, state)
    assert msgspec.json.encode(again) == msgspec.json.encode(evaluation)


def test_public_surface() -> None:
    import iceshop.policy as policy

    assert sorted(policy.__all__) == sorted(set(policy.__all__))
    for name in policy.__all__:
        assert getattr(policy, name) is not None, name
    assert {"evaluate", "choose_price", "choose_seller", "size_window"} <= set(policy.__all__)
