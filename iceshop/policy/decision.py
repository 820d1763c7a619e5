"""The whole decision for one product: :func:`evaluate` and what it returns.

Order of the rules and the meaning of the outcomes are in :func:`evaluate`'s docstring and
in ``docs/policy.md``; this module only composes the steps from the sibling modules and
records every number it used in ``inputs``.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from iceshop.demand import DemandScore
from iceshop.policy.assess import DemandAssessment, score_demand
from iceshop.policy.model import (
    CampaignState,
    InputValue,
    IntentView,
    Outcome,
    PolicySettings,
    SellerListing,
    require,
)
from iceshop.policy.pricing import (
    PriceChoice,
    SellerCandidate,
    SellerChoice,
    assess_candidate,
    choose_seller,
    demand_viable,
)
from iceshop.policy.reasons import (
    MAX_REASONS,
    Reason,
    demand_reason,
    ineligible_reason,
    plain_number,
    price_reason,
    seller_reason,
    size_reason,
    supply_blocker,
    time_blockers,
)
from iceshop.policy.sizing import WindowSize, check_sizing, size_window

__all__ = ["Evaluation", "WindowProposal", "evaluate"]


class WindowProposal(msgspec.Struct, frozen=True, kw_only=True):
    """The window (and offer) to propose. Times are seconds on the caller's clock.

    Cannot be constructed with a price outside ``[floor, list]`` or with a size that breaks
    the contract's sizing invariants.
    """

    seller_id: str
    currency: str
    unit_price_minor: int
    floor_price_minor: int
    list_price_minor: int
    quantity_total: int
    min_participants: int
    max_per_buyer: int
    activates_at: float
    expires_at: float

    def __post_init__(self) -> None:
        require(
            self.floor_price_minor <= self.unit_price_minor <= self.list_price_minor,
            "unit_price_minor must lie within [floor_price_minor, list_price_minor]",
        )
        check_sizing(self.quantity_total, self.min_participants, self.max_per_buyer)
        require(self.activates_at < self.expires_at, "activates_at must precede expires_at")


class Evaluation(msgspec.Struct, frozen=True, kw_only=True):
    """The policy's decision for one product at ``made_at``.

    ``reasons`` holds at most four principal reasons, the deciding one first. ``inputs`` is
    a flat map of every number the policy used (treat it as read-only). ``proposal`` is set
    only when ``outcome == "window_proposed"``.
    """

    product_id: str
    made_at: float
    outcome: Outcome
    reasons: tuple[Reason, ...]
    inputs: dict[str, InputValue]
    proposal: WindowProposal | None = None


def evaluate(
    product_id: str,
    now: float,
    demand: DemandScore,
    supply: Sequence[SellerListing],
    intents: Sequence[IntentView],
    settings: PolicySettings,
    state: CampaignState,
) -> Evaluation:
    """Decide whether to propose a window for ``product_id`` at ``now``.

    Rule, first match wins (``docs/policy.md`` has the table):

    1. open quantity below ``campaign_min_quantity`` -> ``no_action``;
    2. no listing -> ``no_action``; no intent accepts any floor -> ``no_action``;
    3. no listing whose price ``campaign_min_quantity`` units and ``min_participants``
       buyers accept -> ``no_action``;
    4. of those, none eligible: some at capacity -> ``deferred``, else ``no_action``;
    5. a window exists but a window for the product is open or the cooldown runs ->
       ``deferred`` (with the would-be proposal's reasons as context);
    6. otherwise ``window_proposed``.

    ``deferred`` means only time is missing (windows close, the cooldown ends);
    ``no_action`` means the inputs themselves must change (more demand, a listing, a lower
    floor, more stock). Input order never changes the result.
    """
    assessment = score_demand(intents, demand.value_at(now, settings.half_life_s), settings)
    candidates = _candidates(product_id, supply, intents, settings)
    verdict = _decide(product_id, now, assessment, candidates, settings, state)
    inputs = _inputs(now, demand, assessment, candidates, settings, state)
    if verdict.choice is not None and verdict.window is not None:
        inputs.update(_choice_inputs(verdict.choice, verdict.window))
    return Evaluation(
        product_id=product_id,
        made_at=now,
        outcome=verdict.outcome,
        reasons=tuple(verdict.reasons[:MAX_REASONS]),
        inputs=inputs,
        proposal=verdict.window if verdict.outcome == "window_proposed" else None,
    )


class _Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome with its reasons; ``choice`` and ``window`` are set whenever a window
    would be proposed (also when time defers it)."""

    outcome: Outcome
    reasons: list[Reason]
    choice: SellerChoice | None = None
    window: WindowProposal | None = None


def _decide(
    product_id: str,
    now: float,
    assessment: DemandAssessment,
    candidates: list[SellerCandidate],
    settings: PolicySettings,
    state: CampaignState,
) -> _Verdict:
    """The rules of :func:`evaluate`, in order."""
    demand_why = demand_reason(assessment, settings)
    if not assessment.meets_minimum:
        return _Verdict(outcome="no_action", reasons=[demand_why])
    blocker = supply_blocker(product_id, assessment, candidates, settings)
    if blocker is not None:
        return _Verdict(outcome="no_action", reasons=[blocker, demand_why])
    waits = time_blockers(now, settings, state)
    viable = [c for c in candidates if demand_viable(c, settings)]
    choice = choose_seller(viable)
    if choice is None:
        outcome, reason = ineligible_reason(viable)
        if outcome == "deferred":
            return _Verdict(outcome="deferred", reasons=[*waits, reason, demand_why])
        return _Verdict(outcome="no_action", reasons=[reason, demand_why])
    chosen, price = choice.chosen, choice.price
    size = size_window(price.accepted_quantity, chosen.listing.stock, settings)
    reasons = [
        demand_why,
        price_reason(chosen, price, settings),
        seller_reason(choice, viable),
        size_reason(chosen, price, size, settings),
    ]
    return _Verdict(
        outcome="deferred" if waits else "window_proposed",
        reasons=[*waits, *reasons],
        choice=choice,
        window=_proposal(now, chosen, price, size, settings),
    )


def _candidates(
    product_id: str,
    supply: Sequence[SellerListing],
    intents: Sequence[IntentView],
    settings: PolicySettings,
) -> list[SellerCandidate]:
    """Assess every listing, sorted by seller_id; reject inconsistent supply."""
    seen: set[str] = set()
    currencies = {s.listing.currency for s in supply}
    require(len(currencies) <= 1, "all listings of one product share one currency")
    for s in supply:
        require(s.listing.product_id == product_id, "listing for another product")
        require(s.seller.seller_id not in seen, "seller listed twice")
        seen.add(s.seller.seller_id)
    ordered = sorted(supply, key=lambda s: s.seller.seller_id)
    return [assess_candidate(s, intents, min_stock=settings.tipping_point) for s in ordered]


def _proposal(
    now: float,
    chosen: SellerCandidate,
    price: PriceChoice,
    size: WindowSize,
    settings: PolicySettings,
) -> WindowProposal:
    activates_at = now + settings.window_lead_s
    return WindowProposal(
        seller_id=chosen.seller_id,
        currency=chosen.listing.currency,
        unit_price_minor=price.unit_price_minor,
        floor_price_minor=price.floor_price_minor,
        list_price_minor=price.list_price_minor,
        quantity_total=size.quantity_total,
        min_participants=size.min_participants,
        max_per_buyer=size.max_per_buyer,
        activates_at=activates_at,
        expires_at=activates_at + settings.window_duration_s,
    )


def _inputs(
    now: float,
    demand: DemandScore,
    assessment: DemandAssessment,
    candidates: list[SellerCandidate],
    settings: PolicySettings,
    state: CampaignState,
) -> dict[str, InputValue]:
    """Every number the policy used, flat, in a fixed order."""
    inputs: dict[str, InputValue] = {"now": plain_number(now)}
    for field in settings.__struct_fields__:
        inputs[f"settings.{field}"] = plain_number(getattr(settings, field))
    inputs["state.open_windows"] = state.open_windows
    if state.last_proposed_at is not None:
        inputs["state.last_proposed_at"] = plain_number(state.last_proposed_at)
    inputs["demand.score_stored"] = demand.score
    inputs["demand.score_as_of"] = plain_number(demand.as_of)
    inputs["demand.score"] = assessment.score
    inputs["demand.open_intents"] = assessment.open_intents
    inputs["demand.open_quantity"] = assessment.open_quantity
    inputs["demand.buyers"] = assessment.buyers
    for name in ("highest", "median", "lowest"):
        value = getattr(assessment, f"{name}_max_price_minor")
        if value is not None:
            inputs[f"demand.max_price_minor.{name}"] = value
    inputs["sellers"] = len(candidates)
    for c in candidates:
        inputs.update(_candidate_inputs(c))
    return inputs


def _candidate_inputs(c: SellerCandidate) -> dict[str, InputValue]:
    key = f"seller.{c.seller_id}."
    out: dict[str, InputValue] = {
        key + "floor_price_minor": c.listing.floor_price_minor,
        key + "list_price_minor": c.listing.list_price_minor,
        key + "stock": c.listing.stock,
        key + "active_windows": c.seller.active_windows,
        key + "pending_offers": c.seller.pending_offers,
        key + "max_active_windows": c.seller.max_active_windows,
        key + "load_ratio": float(c.load.load_ratio),
        key + "status": c.load.status,
    }
    if c.price is not None:
        out[key + "unit_price_minor"] = c.price.unit_price_minor
        out[key + "accepted_quantity"] = c.price.accepted_quantity
        out[key + "accepted_buyers"] = c.price.accepted_buyers
        out[key + "captured_quantity"] = c.captured_quantity
    return out


def _choice_inputs(choice: SellerChoice, proposal: WindowProposal) -> dict[str, InputValue]:
    return {
        "choice.seller_id": choice.chosen.seller_id,
        "choice.contenders": len(choice.ranked),
        "window.unit_price_minor": proposal.unit_price_minor,
        "window.quantity_total": proposal.quantity_total,
        "window.min_participants": proposal.min_participants,
        "window.max_per_buyer": proposal.max_per_buyer,
        "window.activates_at": plain_number(proposal.activates_at),
        "window.expires_at": plain_number(proposal.expires_at),
    }
