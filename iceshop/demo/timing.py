"""Time in the demo: the timings it gives the node, and the clock it waits on.

The scenario never reads the machine's clock directly. It asks a :class:`DemoClock` for
the node's time and to let time pass, so the same scenario runs on the real clock (the
demo, where letting time pass means sleeping) and on a virtual one (tests, where it means
moving the node's clock and firing its timers), and every wait is bounded by a deadline
on that clock.
"""

from __future__ import annotations

import time
from typing import Literal, Protocol

import anyio
import msgspec

from iceshop.settings import Settings

__all__ = ["DemoClock", "Expectations", "RealDemoClock", "Timings"]


class DemoClock(Protocol):
    def now(self) -> float:
        """The node's wall time, epoch seconds (what its replies and events show)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass on the node's clock."""
        ...


class RealDemoClock:
    """The machine's clock, which the node also runs on."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))


class Timings(msgspec.Struct, frozen=True, kw_only=True):
    """Short timings, so the whole life of a window fits in a demo."""

    campaign_interval_s: float = 1.0
    #: From proposal to activation: long enough to see the window scheduled.
    window_lead_s: float = 5.0
    #: Long enough for the joins and a visible countdown; the crowd's window sells out
    #: early, the others run to their expiry.
    window_duration_s: float = 30.0
    #: Longer than the demo: one proposal per product, no duplicates.
    campaign_cooldown_s: float = 3600.0
    campaign_min_quantity: int = 5
    window_min_participants: int = 3
    window_max_per_buyer: int = 2
    #: The flash crowd arrives over this many seconds (0: all at once).
    crowd_spread_s: float = 1.0
    #: How often waits look again.
    poll_s: float = 0.05

    def settings(
        self,
        *,
        nats_url: str,
        data_dir: str,
        auth: Literal["on", "off"],
        auth_keys_dir: str = "",
        node_id: str = "demo-1",
    ) -> Settings:
        return Settings(
            nats_url=nats_url,
            data_dir=data_dir,
            node_id=node_id,
            auth=auth,
            auth_keys_dir=auth_keys_dir,
            campaign_interval_s=self.campaign_interval_s,
            campaign_cooldown_s=self.campaign_cooldown_s,
            campaign_min_quantity=self.campaign_min_quantity,
            window_lead_s=self.window_lead_s,
            window_duration_s=self.window_duration_s,
            window_min_participants=self.window_min_participants,
            window_max_per_buyer=self.window_max_per_buyer,
        )


class Expectations(msgspec.Struct, frozen=True, kw_only=True):
    """How much slack the checks allow. Tests tighten them to prove a step can fail."""

    #: A window must be active at most this long after its ``activates_at``.
    activation_tolerance_s: float = 2.0
    #: ... and closed at most this long after its ``expires_at``.
    expiry_tolerance_s: float = 2.0
    #: Reserved quantity above ``quantity_total`` that is tolerated (never, in a shop).
    oversell_allowed: int = 0
    #: Time for replies to show up in events and the read model.
    settle_s: float = 5.0
