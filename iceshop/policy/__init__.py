"""The campaign policy: when to propose a flash window, with which seller, price and size.

The policy is a set of pure functions over small frozen values. It reads no clock (``now``
is a parameter, in seconds on the caller's clock), does no I/O and keeps no state between
calls: the campaign actor gathers the inputs, calls :func:`evaluate`, and journals and
publishes the :class:`Evaluation` it gets back. Being pure makes every decision
reproducible from its recorded inputs and testable without actors, NATS or timers.

The steps, each a function with its rule in its docstring (``docs/policy.md`` explains them
with a worked example):

1. :func:`score_demand` - open quantity, buyers and the distribution of their price limits.
2. :func:`seller_load` - is the seller's listing eligible: enough stock, a free window slot.
3. :func:`choose_price` - the price in ``[floor, list]`` that keeps every buyer who accepts
   the floor, and among those the highest.
4. :func:`choose_seller` - the eligible seller whose window would sell the most.
5. :func:`size_window` - quantity, tipping point and per-buyer limit that satisfy the
   contract: a sell-out always reaches the tipping point.
6. :func:`evaluate` - the whole decision: ``window_proposed``, ``no_action`` or
   ``deferred``, at most four principal :class:`Reason` s and every number used.

A price outside the seller's ``[floor_price_minor, list_price_minor]`` is impossible by
construction: :class:`PriceChoice` and :class:`WindowProposal` refuse to exist with one.
Money is always an ``int`` in minor units.

Modules: ``model`` (settings and input views), ``assess`` (demand and seller load),
``pricing`` (price and seller choice), ``sizing`` (window size), ``reasons`` (codes and
texts), ``decision`` (:func:`evaluate`).
"""

from __future__ import annotations

from iceshop.policy.assess import (
    DemandAssessment,
    LoadAssessment,
    PriceLevel,
    score_demand,
    seller_load,
)
from iceshop.policy.decision import Evaluation, WindowProposal, evaluate
from iceshop.policy.model import (
    CampaignState,
    InputValue,
    IntentView,
    ListingView,
    LoadStatus,
    Outcome,
    PolicySettings,
    SellerListing,
    SellerView,
)
from iceshop.policy.pricing import (
    PriceChoice,
    SellerCandidate,
    SellerChoice,
    assess_candidate,
    choose_price,
    choose_seller,
)
from iceshop.policy.reasons import MAX_REASONS, REASON_CODES, Reason, ReasonValue
from iceshop.policy.sizing import WindowSize, size_window

__all__ = [
    "MAX_REASONS",
    "REASON_CODES",
    "CampaignState",
    "DemandAssessment",
    "Evaluation",
    "InputValue",
    "IntentView",
    "ListingView",
    "LoadAssessment",
    "LoadStatus",
    "Outcome",
    "PolicySettings",
    "PriceChoice",
    "PriceLevel",
    "Reason",
    "ReasonValue",
    "SellerCandidate",
    "SellerChoice",
    "SellerListing",
    "SellerView",
    "WindowProposal",
    "WindowSize",
    "assess_candidate",
    "choose_price",
    "choose_seller",
    "evaluate",
    "score_demand",
    "seller_load",
    "size_window",
]
