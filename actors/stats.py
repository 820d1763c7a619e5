"""Runtime statistics: cheap counters on the hot path, read when someone asks.

The runtime counts what it does with plain ints and fixed-bucket histograms, updated
inline: a turn costs one pair of ``perf_counter`` calls and one :meth:`Histogram.observe`
(a bisect and an int add), a commit the same. Nothing is formatted, locked or sent while
actors run; an exporter (a Prometheus collector, a status reply) calls
:meth:`ActorSystem.stats <actors.system.ActorSystem.stats>` at its own pace and gets a
:class:`RuntimeStats` snapshot. The runtime itself depends on no metrics library.

Histograms count observations into buckets by upper bound (``value <= bound``), the
way Prometheus does, so a snapshot maps onto a Prometheus histogram as it is.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from itertools import pairwise
from typing import Final

import msgspec

__all__ = [
    "BATCH_BUCKETS",
    "COMMIT_BUCKETS",
    "LAG_BUCKETS",
    "TURN_BUCKETS",
    "Histogram",
    "HistogramSnapshot",
    "KindStats",
    "RuntimeStats",
]

#: Seconds one turn takes: 10 microseconds (one small message) up to a second.
TURN_BUCKETS: Final = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
#: Seconds one journal write (a group commit) takes.
COMMIT_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Turns (write requests) committed together in one journal write.
BATCH_BUCKETS: Final = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1000.0)
#: Seconds a timer fires after its due time.
LAG_BUCKETS: Final = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)


class HistogramSnapshot(msgspec.Struct, frozen=True):
    """A histogram at one moment. ``cumulative[i]`` counts observations ``<= bounds[i]``;
    ``count`` is every observation (the ``+Inf`` bucket), ``sum`` their total."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    count: int
    sum: float

    def quantile(self, q: float) -> float:
        """An estimate of the ``q`` quantile (0..1): the upper bound of the bucket that
        holds it (the last bound when it lies beyond them; 0.0 with no observations)."""
        if self.count == 0:
            return 0.0
        rank = q * self.count
        for bound, seen in zip(self.bounds, self.cumulative, strict=True):
            if seen >= rank:
                return bound
        return self.bounds[-1] if self.bounds else 0.0


class Histogram:
    """Fixed buckets, counted with :meth:`observe`; read with :meth:`snapshot`."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        ordered = tuple(float(b) for b in bounds)
        if not ordered or any(b >= c for b, c in pairwise(ordered)):
            raise ValueError("histogram bounds must be a non-empty, strictly rising sequence")
        self.bounds = ordered
        #: One count per bound, and a last one for values above every bound.
        self.counts = [0] * (len(ordered) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> HistogramSnapshot:
        counts = list(self.counts)  # one copy: the buckets and the count agree
        cumulative: list[int] = []
        running = 0
        for n in counts[:-1]:
            running += n
            cumulative.append(running)
        return HistogramSnapshot(self.bounds, tuple(cumulative), running + counts[-1], self.sum)

    def reset(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0


class KindStats(msgspec.Struct, frozen=True, kw_only=True):
    """One actor kind: counters since the system started, and its state right now."""

    kind: str
    #: Messages whose handler returned (for a persistent kind: before the commit).
    handled: int
    #: Handler calls that raised (each one restarts the actor; see supervision).
    failed: int
    #: Messages refused (or dropped) because a mailbox of the kind was full.
    overflows: int
    #: Messages whose deadline passed while they waited: answered ``DeadlineExceeded``
    #: and never handled.
    expired: int = 0
    activations: int
    passivations: int
    #: Actors of the kind in memory now.
    active: int
    #: Messages waiting in the kind's mailboxes (system lanes included): in all, and in
    #: the fullest one.
    mailbox_total: int
    mailbox_max: int
    #: Seconds per turn (one turn handles up to ``throughput`` messages).
    turn_seconds: HistogramSnapshot


class RuntimeStats(msgspec.Struct, frozen=True, kw_only=True):
    """The whole system at one moment (:meth:`ActorSystem.stats`)."""

    node_id: str
    kinds: tuple[KindStats, ...]
    turns: int
    handled: int
    restarts: int
    dead_letters: int
    timer_lag_seconds: HistogramSnapshot
    #: The largest timer lag seen (seconds).
    timer_lag_max: float
    #: Timers armed now.
    timers: int
    #: Journal writes (group commits) and what they held; ``None`` without a journal.
    commit_seconds: HistogramSnapshot | None
    commit_batch: HistogramSnapshot | None
    committed_events: int
    commit_failures: int
    outbox_published: int
