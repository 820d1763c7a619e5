"""One timer service per node: a binary heap and one sleeping task.

Timers are never a sleep per timer. Each timer is an entry in a heap ordered by its due
time (monotonic); the service's single task sleeps until the earliest one (or until an
earlier timer is added) and then hands every due entry to the system, which delivers
it to its actor as an ordinary message in the actor's turn.

Entries are keyed by ``(kind, key, name)``: arming the same key again replaces the
timer; cancelling marks the heap entry dead (lazy deletion) and forgets the key. A
durable deadline is identified by its wall-clock due time (kept in ``message``; its
monotonic ``due`` is recomputed whenever it is armed). Once fired it stays known as
*fired* until the actor's turn commits its removal, so recovering the actor does not
arm it twice, and a fire that was overtaken (the deadline replaced or cancelled
meanwhile) can be recognised as stale.

Every firing records how late it was (:class:`TimerStats`).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import structlog

from .clock import Clock
from .stats import LAG_BUCKETS, Histogram

__all__ = ["TimerEntry", "TimerService", "TimerStats"]

TimerKey = tuple[str, str, str]

log = structlog.get_logger("actors.timers")


class TimerEntry:
    """One armed timer. ``message`` is delivered to actor ``(kind, key)`` when due."""

    __slots__ = ("cancelled", "due", "durable", "fired", "key", "kind", "message", "name")

    def __init__(
        self, kind: str, key: str, name: str, due: float, message: Any, durable: bool
    ) -> None:
        self.kind = kind
        self.key = key
        self.name = name
        self.due = due
        self.message = message
        self.durable = durable
        self.cancelled = False
        self.fired = False


class TimerStats:
    """How late timers fire: count, max, and percentiles over the last ``window``."""

    __slots__ = ("_recent", "count", "lags", "max")

    def __init__(self, window: int = 100_000) -> None:
        self._recent: deque[float] = deque(maxlen=window)
        self.count = 0
        self.max = 0.0
        #: Every lag since the start (or the last reset), in fixed buckets for exporters.
        self.lags = Histogram(LAG_BUCKETS)

    def record(self, lag: float) -> None:
        self.count += 1
        self._recent.append(lag)
        self.lags.observe(lag)
        if lag > self.max:
            self.max = lag

    def percentile(self, q: float) -> float:
        """The ``q`` quantile (0..1) of recent lags, in seconds (0.0 when none)."""
        if not self._recent:
            return 0.0
        ordered = sorted(self._recent)
        index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
        return ordered[index]

    def reset(self) -> None:
        self._recent.clear()
        self.count = 0
        self.max = 0.0
        self.lags.reset()


class TimerService:
    """The node's timers. ``deliver(entry)`` is called (synchronously) for each due
    entry; it must not block."""

    def __init__(self, clock: Clock, deliver: Callable[[TimerEntry], None]) -> None:
        self._clock = clock
        self._deliver = deliver
        self._heap: list[tuple[float, int, TimerEntry]] = []
        self._by_key: dict[TimerKey, TimerEntry] = {}
        # In-memory (non-durable) timer names per actor, to drop them on passivation.
        self._by_actor: dict[tuple[str, str], set[str]] = {}
        self._pushes = 0
        self._seq = itertools.count()
        self._wakeup = anyio.Event()
        self._sleeping_until = math.inf
        self.stats = TimerStats()

    # -- arming ---------------------------------------------------------------

    def arm(
        self,
        kind: str,
        key: str,
        name: str,
        due: float,
        message: Any,
        *,
        durable: bool = False,
    ) -> TimerEntry | None:
        """Arm (or replace) the timer ``(kind, key, name)`` for monotonic time ``due``.

        For a durable deadline ``message`` is its wall-clock due time. Re-arming one with
        the same wall time is a no-op (also when it has fired and its removal is not yet
        committed); returns ``None`` then.
        """
        tkey = (kind, key, name)
        old = self._by_key.get(tkey)
        if old is not None:
            if durable and old.durable and old.message == message:
                return None
            old.cancelled = True
        entry = TimerEntry(kind, key, name, due, message, durable)
        self._by_key[tkey] = entry
        if not durable:
            names = self._by_actor.get((kind, key))
            if names is None:
                self._by_actor[(kind, key)] = {name}
            else:
                names.add(name)
        self.push(entry)
        return entry

    def push(self, entry: TimerEntry) -> None:
        """Arm an unkeyed one-shot entry (ask deadlines, restarts). Cancel it by setting
        ``entry.cancelled``; dead entries are swept out of the heap now and then."""
        heapq.heappush(self._heap, (entry.due, next(self._seq), entry))
        if entry.due < self._sleeping_until:
            self._wakeup.set()
        self._pushes += 1
        if self._pushes >= 65_536:
            self._pushes = 0
            if len(self._heap) > 2 * len(self._by_key) + 65_536:
                self._heap = [item for item in self._heap if not item[2].cancelled]
                heapq.heapify(self._heap)

    def arm_many(self, entries: Iterable[TimerEntry]) -> int:
        """Bulk-arm durable deadlines (used on start): one heapify instead of n pushes."""
        added = 0
        heap = self._heap
        by_key = self._by_key
        seq = self._seq
        for entry in entries:
            tkey = (entry.kind, entry.key, entry.name)
            old = by_key.get(tkey)
            if old is not None:
                if old.durable and old.message == entry.message:
                    continue
                old.cancelled = True
            by_key[tkey] = entry
            heap.append((entry.due, next(seq), entry))
            added += 1
        heapq.heapify(heap)
        self._wakeup.set()
        return added

    def cancel(self, kind: str, key: str, name: str) -> bool:
        entry = self._by_key.pop((kind, key, name), None)
        if entry is None:
            return False
        entry.cancelled = True
        if not entry.durable:
            self._forget_name(kind, key, name)
        return True

    def _forget_name(self, kind: str, key: str, name: str) -> None:
        names = self._by_actor.get((kind, key))
        if names is not None:
            names.discard(name)
            if not names:
                del self._by_actor[(kind, key)]

    def cancel_actor(self, kind: str, key: str) -> None:
        """Forget the in-memory timers of one actor (on passivation / stop). Its durable
        deadlines stay armed: they activate the actor again when due."""
        names = self._by_actor.pop((kind, key), None)
        if names:
            for name in names:
                entry = self._by_key.pop((kind, key, name), None)
                if entry is not None:
                    entry.cancelled = True

    def cancel_where(self, pick: Callable[[str, str], bool]) -> int:
        """Cancel every keyed timer, durable or not, of the actors ``pick(kind, key)``
        chooses (their shard left this node). A scan of all timers: for rare events."""
        doomed = [tkey for tkey in self._by_key if pick(tkey[0], tkey[1])]
        for kind, key, name in doomed:
            self.cancel(kind, key, name)
        return len(doomed)

    def get(self, kind: str, key: str, name: str) -> TimerEntry | None:
        return self._by_key.get((kind, key, name))

    # -- firing ---------------------------------------------------------------

    def next_due(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def fire_due(self) -> int:
        """Deliver every timer due now; returns how many fired."""
        now = self._clock.monotonic()
        heap = self._heap
        fired = 0
        while heap and heap[0][0] <= now:
            due, _, entry = heapq.heappop(heap)
            if entry.cancelled:
                continue
            if entry.durable:
                entry.fired = True
            elif self._by_key.get((entry.kind, entry.key, entry.name)) is entry:
                del self._by_key[(entry.kind, entry.key, entry.name)]
                self._forget_name(entry.kind, entry.key, entry.name)
            self.stats.record(now - due)
            fired += 1
            try:
                self._deliver(entry)
            except Exception as exc:  # one faulty callback must not stop every timer
                log.error("timer delivery failed", kind=entry.kind, key=entry.key, error=repr(exc))
        return fired

    def is_current_fire(self, kind: str, key: str, name: str, due_wall: float) -> bool:
        """True if durable deadline ``name`` fired for ``due_wall`` and was neither
        replaced nor cancelled since (a stale fire must not reach the actor)."""
        entry = self._by_key.get((kind, key, name))
        return entry is not None and entry.fired and entry.message == due_wall

    def settled(self, kind: str, key: str, name: str, due_wall: float) -> None:
        """A fired durable deadline's removal committed: forget it (unless re-armed)."""
        tkey = (kind, key, name)
        entry = self._by_key.get(tkey)
        if entry is not None and entry.fired and entry.message == due_wall:
            del self._by_key[tkey]

    def unfire(self, kind: str, key: str, name: str) -> None:
        """A fired durable deadline was not handled (its turn's commit failed): arm it
        again so that it fires once more."""
        tkey = (kind, key, name)
        entry = self._by_key.get(tkey)
        if entry is not None and entry.fired:
            del self._by_key[tkey]
            self.arm(kind, key, name, entry.due, entry.message, durable=True)

    def __len__(self) -> int:
        return len(self._by_key)

    async def run(self) -> None:
        """The one timer task. Runs until cancelled."""
        while True:
            self.fire_due()
            nxt = self.next_due()
            self._sleeping_until = math.inf if nxt is None else nxt
            self._wakeup = anyio.Event()
            await self._clock.sleep_until(self._sleeping_until, self._wakeup)
            self._sleeping_until = -math.inf
