"""The campaign: the singleton actor that turns demand into flash-window proposals.

``actor`` is the actor (``CampaignActor``, kind ``campaign``, key ``main``); ``state``
its journal events and the records they fold into; ``evaluation`` the mapping to and
from the pure policy in :mod:`iceshop.policy`; ``ids`` the deterministic ids of the
decisions, windows and offers it creates. Register it with its settings::

    system.register("campaign", lambda: CampaignActor(settings), cls=CampaignActor)
"""

from __future__ import annotations

from iceshop.campaign.actor import CAMPAIGN_KEY, OFFER_GRACE_S, REQUEST_TIMEOUT_S, CampaignActor
from iceshop.campaign.ids import decision_id, offer_id, window_id

__all__ = [
    "CAMPAIGN_KEY",
    "OFFER_GRACE_S",
    "REQUEST_TIMEOUT_S",
    "CampaignActor",
    "decision_id",
    "offer_id",
    "window_id",
]
