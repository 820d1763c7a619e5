"""Pacing sends: a rate per sending number and a minimum spacing per recipient.

WhatsApp Business limits how fast one phone number may send (80 messages a second by
default) and how often one recipient may be messaged (a "pair rate" of roughly one
message every few seconds); going over gets error 130429 or 131056 back, so the
notifier paces itself instead of learning the limits from errors.

**Rate.** A send to a number is given a *slot* on that number's schedule: slots are
``1 / rate`` seconds apart (a token bucket of depth ``burst``, computed as a virtual
scheduling time rather than a refilling counter). A slot is booked the moment it is
asked for and never given to anyone else, so however many tasks wait, the sends leave
at most ``rate * t + burst`` in any ``t`` seconds. With ``burst = 1`` (the default) any
window of one second holds at most ``rate`` sends: the slots, and the sends themselves,
since a task that wakes after its slot (the loop was busy) also waits when ``rate``
sends have actually left within the last second.

**Spacing.** A recipient's next send may not be booked before ``spacing`` seconds after
its previous slot. A task that would break it sleeps first and books its number's slot
only then, so a recipient who must wait never holds up the others.

**Memory.** Only recipients whose spacing has not passed are remembered; slots are
booked in time order, so the map is kept in that order and pruned from its old end on
every booking: memory stays at most ``rate * (spacing + backlog)`` entries.

**Across processes.** The schedule lives in one process, and one process at a time
sends from a number: the holder of the number's send lease (:mod:`iceshop.notify.lease`).
Every other notifier (in other nodes, other ``iceshop notifier`` processes) stands by, so
``rate_per_s`` is the number's limit however many run, and the per-recipient spacing is
exact too, except across a takeover (the new holder does not know the old one's
recipients). A new holder calls :meth:`RateLimiter.hold_off` so its first send keeps one
interval from the previous holder's last.

Time comes from the runtime's :class:`~actors.clock.Clock` (its monotonic reading), so
tests run it on a :class:`~actors.clock.VirtualClock`: move the clock, then call
:meth:`RateLimiter.wake` to let sleepers re-check it.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque

import anyio

from actors.clock import Clock

__all__ = ["RateLimiter"]

_EDGE = 0.001
"""The departure gate's window is this much longer than a rate's, so a send timed a
moment later than the gate saw it (the provider's clock, its log) still falls outside."""


class _Number:
    """One sending number's schedule and its recipients' next allowed times."""

    __slots__ = ("departed", "recipients", "tat")

    def __init__(self) -> None:
        self.tat = -math.inf
        """The theoretical time of the next send when sends are back to back."""
        self.departed: deque[float] = deque()
        """When the latest sends actually left, oldest first (the departure gate)."""
        self.recipients: OrderedDict[str, float] = OrderedDict()
        """recipient -> earliest next slot; in booking (hence time) order."""


class RateLimiter:
    """Paces sends per sending number (``rate_per_s``, ``burst``) and per recipient
    (``spacing_s``); :meth:`acquire` returns when a send may go."""

    def __init__(
        self,
        clock: Clock,
        *,
        rate_per_s: float = 80.0,
        burst: int = 1,
        spacing_s: float = 0.0,
    ) -> None:
        if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
            raise ValueError("rate_per_s must be a positive number")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if not (spacing_s >= 0 and math.isfinite(spacing_s)):
            raise ValueError("spacing_s must be a finite number of seconds, at least 0")
        self.clock = clock
        self.interval = 1.0 / rate_per_s
        #: The departure gate: at most ``capacity`` sends leave in any ``window`` seconds.
        self.capacity = max(1, math.floor(rate_per_s))
        self.window = self.capacity / rate_per_s
        self.burst = burst
        self.spacing = spacing_s
        self._numbers: dict[str, _Number] = {}
        self._sleepers: set[anyio.Event] = set()
        self.waited = 0.0
        """Seconds spent waiting in :meth:`acquire`, summed over callers."""

    # -- booking (no waiting) ----------------------------------------------------------

    def _number(self, sender: str) -> _Number:
        number = self._numbers.get(sender)
        if number is None:
            number = self._numbers[sender] = _Number()
        return number

    def recipient_ready(self, sender: str, recipient: str) -> float:
        """The earliest monotonic time a slot may be booked for ``recipient``."""
        number = self._numbers.get(sender)
        if number is None:
            return -math.inf
        return number.recipients.get(recipient, -math.inf)

    def book(self, sender: str, recipient: str) -> float:
        """Book the next slot of ``sender`` for ``recipient`` now and return its time.

        The caller must have waited for :meth:`recipient_ready` first (``acquire`` does)."""
        now = self.clock.monotonic()
        number = self._number(sender)
        tolerance = (self.burst - 1) * self.interval
        slot = max(now, number.tat - tolerance)
        number.tat = max(number.tat, now) + self.interval
        if self.spacing > 0:
            recipients = number.recipients
            recipients[recipient] = slot + self.spacing
            recipients.move_to_end(recipient)
            self._prune(recipients, now)
        return slot

    def hold_off(self, sender: str) -> None:
        """Treat ``sender``'s bucket as emptied just now (no slot before one interval
        from now, then the rate): called when this process takes the send lease over,
        since the previous holder may have sent until then."""
        number = self._number(sender)
        now = self.clock.monotonic()
        number.tat = max(number.tat, now + self.burst * self.interval)

    @staticmethod
    def _prune(recipients: OrderedDict[str, float], now: float) -> None:
        while recipients:
            key = next(iter(recipients))
            if recipients[key] > now:
                break
            del recipients[key]

    def tracked(self) -> int:
        """Recipients currently remembered, over all numbers (memory bound checks)."""
        return sum(len(n.recipients) for n in self._numbers.values())

    # -- waiting ---------------------------------------------------------------------

    async def acquire(self, sender: str, recipient: str) -> float:
        """Wait until a message from ``sender`` to ``recipient`` may go; returns the
        monotonic time of its slot."""
        started = self.clock.monotonic()
        while True:
            ready = self.recipient_ready(sender, recipient)
            if ready <= self.clock.monotonic():
                break
            await self._sleep_until(ready)
        slot = self.book(sender, recipient)
        await self._sleep_until(slot)
        if self.burst == 1:
            # Slots are 1/rate apart, but a task may wake late (the loop was busy) and
            # leave together with the next ones. So the actual departures are counted
            # too: no more than ``capacity`` of them in any ``window`` seconds (80 in any
            # second at 80/s), which a late wake-up delays only when it would break that.
            departed = self._numbers[sender].departed
            while len(departed) >= self.capacity:
                due = departed[0] + self.window + _EDGE
                if due <= self.clock.monotonic():
                    departed.popleft()
                    continue
                await self._sleep_until(due)
            departed.append(self.clock.monotonic())
        self.waited += self.clock.monotonic() - started
        return slot

    async def _sleep_until(self, deadline: float) -> None:
        while self.clock.monotonic() < deadline:
            wakeup = anyio.Event()
            self._sleepers.add(wakeup)
            try:
                await self.clock.sleep_until(deadline, wakeup)
            finally:
                self._sleepers.discard(wakeup)

    def wake(self) -> None:
        """Make every sleeper re-read the clock (after moving a virtual clock)."""
        sleepers, self._sleepers = self._sleepers, set()
        for event in sleepers:
            event.set()

    @property
    def sleeping(self) -> int:
        """Callers currently waiting for their time."""
        return len(self._sleepers)
