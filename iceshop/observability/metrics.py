"""Prometheus metrics of one node, read at scrape time.

Nothing here runs on the hot path. The runtime keeps its own cheap counters
(:mod:`actors.stats`) and the shop its :class:`~iceshop.observability.counters.ShopCounters`;
a scrape asks for a snapshot of both and turns it into metric families (a custom
collector), so the cost of metrics is paid once per scrape, not once per message.

Each node has its own :class:`~prometheus_client.CollectorRegistry`: several nodes may
run in one process (tests, the demo), and the library's global registry would mix them.

The same registry serves the processes that run apart from a node (``role``):
``iceshop notifier`` exports its notifications by outcome, ``iceshop projector`` the
windows by state of the read model it writes; each says which it is in
``iceshop_node_info{role}``.

Windows by state come from the read model (one ``GROUP BY`` per scrape, on the read
model's own thread): the read model knows every window, including those whose actor is
passivated or lives on another node. The last answer is kept when the file is briefly
unavailable.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import Final, Literal, get_args

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from actors import ActorSystem
from actors.errors import ActorsError
from actors.stats import HistogramSnapshot, RuntimeStats
from iceshop.notify import Notifier
from iceshop.observability.counters import ShopCounters
from iceshop.readmodel import ReadModel
from iceshop.wire import WindowState

__all__ = ["METRIC_NAMES", "NodeMetrics", "Role"]

log = structlog.get_logger("iceshop.metrics")

WINDOW_STATES: Final[tuple[str, ...]] = get_args(WindowState)

#: What a process is, in ``iceshop_node_info{role}``: a node, or a process that runs a
#: part of one apart (``iceshop notifier``, ``iceshop projector``).
Role = Literal["node", "notifier", "projector"]

#: Every metric family a node exports (histograms add ``_bucket``, ``_sum``, ``_count``;
#: counters are exposed with ``_total``).
METRIC_NAMES: Final = frozenset(
    {
        "iceshop_node_info",
        "iceshop_actor_messages_total",
        "iceshop_actor_failures_total",
        "iceshop_actor_overflows_total",
        "iceshop_actor_expired_total",
        "iceshop_actor_activations_total",
        "iceshop_actor_passivations_total",
        "iceshop_actor_turn_seconds",
        "iceshop_actors_active",
        "iceshop_mailbox_depth",
        "iceshop_mailbox_messages",
        "iceshop_actor_restarts_total",
        "iceshop_dead_letters_total",
        "iceshop_timer_lag_seconds",
        "iceshop_timer_lag_max_seconds",
        "iceshop_timers",
        "iceshop_journal_commit_seconds",
        "iceshop_journal_batch_size",
        "iceshop_journal_events_total",
        "iceshop_journal_commit_failures_total",
        "iceshop_outbox_published_total",
        "iceshop_joins_total",
        "iceshop_windows",
        "iceshop_notifications_total",
        "iceshop_shards_owned",
    }
)


def _count_windows(db: sqlite3.Connection) -> list[tuple[str, int]]:
    return db.execute("SELECT state, count(*) FROM windows GROUP BY state").fetchall()


#: The notifier's counters exported as ``iceshop_notifications_total{outcome}``: sent,
#: retried (a retryable failure, tried again later), failed (permanent), dead (attempts
#: used up), refused (no consent) and settled (a duplicate found already done).
_NOTIFIER_OUTCOMES: Final = ("sent", "retried", "failed", "dead", "refused", "settled")


class NodeMetrics:
    """One process's registry and what feeds it. A node (``role = "node"``) fills in
    ``system``, ``readmodel``, ``notifier`` and ``shards_owned`` as it starts; a notifier
    process only ``notifier``, a projector process only ``readmodel``. A node exports
    every family of :data:`METRIC_NAMES`; the others ``iceshop_node_info`` and their own
    (notifications by outcome; windows by state). :meth:`scrape` answers a scrape."""

    def __init__(
        self,
        node_id: str,
        counters: ShopCounters | None = None,
        *,
        version: str,
        role: Role = "node",
    ) -> None:
        self.node_id = node_id
        self.version = version
        self.role: Role = role
        self.counters = counters if counters is not None else ShopCounters()
        self.system: ActorSystem | None = None
        self.readmodel: ReadModel | None = None
        #: The node's own notifier (``notifier = "node"``), whose outcomes are counted.
        self.notifier: Notifier | None = None
        self.shards_owned = 0
        #: Windows by state, as of the last :meth:`refresh`.
        self.windows: dict[str, int] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    async def refresh(self) -> None:
        """Read what is not in memory (windows by state from the read model)."""
        readmodel = self.readmodel
        if readmodel is None:
            return
        try:
            rows = await readmodel.read(_count_windows)
        except ActorsError as exc:
            log.warning("windows by state not read; keeping the last count", error=repr(exc))
            return
        self.windows = {str(state): int(n) for state, n in rows}

    def exposition(self) -> bytes:
        """The Prometheus text format of everything, from what is known now."""
        return generate_latest(self.registry)

    async def scrape(self) -> bytes:
        await self.refresh()
        return self.exposition()


class _Collector:
    """Turns snapshots into metric families; called by the registry on every scrape."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterable[Metric]:
        m = self._m
        info = GaugeMetricFamily(
            "iceshop_node_info",
            "This process: its id, version and role (node, notifier or projector).",
            labels=["node_id", "version", "role"],
        )
        info.add_metric([m.node_id, m.version, m.role], 1)
        yield info
        if m.system is not None:
            yield from _runtime(m.system.stats())
        node = m.role == "node"
        if node:
            yield _joins(m)
        if node or m.readmodel is not None:
            yield _windows(m)
        if node or m.notifier is not None:
            yield _notifications(m)
        if node:
            yield GaugeMetricFamily(
                "iceshop_shards_owned", "Shards this node owns.", value=m.shards_owned
            )


def _histogram(family: HistogramMetricFamily, labels: list[str], h: HistogramSnapshot) -> None:
    buckets: list[tuple[str, float]] = [
        (repr(bound), float(seen)) for bound, seen in zip(h.bounds, h.cumulative, strict=True)
    ]
    buckets.append(("+Inf", float(h.count)))
    family.add_metric(labels, buckets, h.sum)


#: Per-kind series: (name, help, is a counter, KindStats field).
_PER_KIND: Final = (
    ("iceshop_actor_messages_total", "Messages handled, by actor kind.", True, "handled"),
    (
        "iceshop_actor_failures_total",
        "Handler calls that raised (each restarts its actor), by actor kind.",
        True,
        "failed",
    ),
    (
        "iceshop_actor_overflows_total",
        "Messages refused or dropped by a full mailbox, by actor kind.",
        True,
        "overflows",
    ),
    (
        "iceshop_actor_expired_total",
        "Messages whose deadline (Iceshop-Deadline) passed while they waited in a mailbox: "
        "answered deadline exceeded, never handled; by actor kind.",
        True,
        "expired",
    ),
    (
        "iceshop_actor_activations_total",
        "Actors brought into memory, by actor kind.",
        True,
        "activations",
    ),
    (
        "iceshop_actor_passivations_total",
        "Idle actors taken out of memory, by actor kind.",
        True,
        "passivations",
    ),
    ("iceshop_actors_active", "Actors in memory now, by actor kind.", False, "active"),
    (
        "iceshop_mailbox_depth",
        "Messages waiting in the fullest mailbox of the kind, now.",
        False,
        "mailbox_max",
    ),
    (
        "iceshop_mailbox_messages",
        "Messages waiting in all mailboxes of the kind, now.",
        False,
        "mailbox_total",
    ),
)


def _runtime(s: RuntimeStats) -> Iterator[Metric]:
    kinds = sorted(s.kinds, key=lambda k: k.kind)
    for name, doc, counter, field in _PER_KIND:
        family: CounterMetricFamily | GaugeMetricFamily = (
            CounterMetricFamily(name, doc, labels=["kind"])
            if counter
            else GaugeMetricFamily(name, doc, labels=["kind"])
        )
        for k in kinds:
            family.add_metric([k.kind], getattr(k, field))
        yield family
    # One observation per turn, not per message: a turn handles up to the kind's
    # throughput in messages (a window's turn in a crowd: hundreds of joins). The mean
    # per message is rate(_sum) / rate(iceshop_actor_messages_total).
    turns = HistogramMetricFamily(
        "iceshop_actor_turn_seconds",
        "Seconds per actor turn, by actor kind. A turn handles one or more messages (up "
        "to the kind's throughput), so this is not per-message latency; the mean per "
        "message is rate(_sum) / rate(iceshop_actor_messages_total).",
        labels=["kind"],
    )
    for k in kinds:
        _histogram(turns, [k.kind], k.turn_seconds)
    yield turns
    yield CounterMetricFamily(
        "iceshop_actor_restarts_total", "Actors restarted after a failure.", value=s.restarts
    )
    yield CounterMetricFamily(
        "iceshop_dead_letters_total",
        "Messages given up after failing too often.",
        value=s.dead_letters,
    )
    lag = HistogramMetricFamily(
        "iceshop_timer_lag_seconds", "Seconds timers fired after their due time."
    )
    _histogram(lag, [], s.timer_lag_seconds)
    yield lag
    yield GaugeMetricFamily(
        "iceshop_timer_lag_max_seconds", "The largest timer lag seen.", value=s.timer_lag_max
    )
    yield GaugeMetricFamily("iceshop_timers", "Timers armed now.", value=s.timers)
    if s.commit_seconds is not None and s.commit_batch is not None:
        commit = HistogramMetricFamily(
            "iceshop_journal_commit_seconds", "Seconds per journal write (one group commit)."
        )
        _histogram(commit, [], s.commit_seconds)
        yield commit
        batch = HistogramMetricFamily(
            "iceshop_journal_batch_size", "Turns committed together in one journal write."
        )
        _histogram(batch, [], s.commit_batch)
        yield batch
    yield CounterMetricFamily(
        "iceshop_journal_events_total", "Events committed to the journal.", value=s.committed_events
    )
    yield CounterMetricFamily(
        "iceshop_journal_commit_failures_total",
        "Turns whose commit failed (their actor is rebuilt from the journal).",
        value=s.commit_failures,
    )
    yield CounterMetricFamily(
        "iceshop_outbox_published_total",
        "Outbox entries (events, notification requests) published after commit.",
        value=s.outbox_published,
    )


def _joins(m: NodeMetrics) -> Metric:
    joins = CounterMetricFamily(
        "iceshop_joins_total",
        "Joins answered by window actors (counted once answered, after the commit): "
        "accepted, or the error code.",
        labels=["outcome"],
    )
    for outcome, n in sorted(m.counters.joins.items()):
        joins.add_metric([outcome], n)
    return joins


def _windows(m: NodeMetrics) -> Metric:
    windows = GaugeMetricFamily(
        "iceshop_windows", "Windows by state (from the read model).", labels=["state"]
    )
    for state in sorted({*WINDOW_STATES, *m.windows}):
        windows.add_metric([state], m.windows.get(state, 0))
    return windows


def _notifications(m: NodeMetrics) -> Metric:
    notifications = CounterMetricFamily(
        "iceshop_notifications_total",
        "Notifications handled by this process's notifier, by outcome.",
        labels=["outcome"],
    )
    if m.notifier is not None:  # no notifier here (notifier = "external" or "off"): none
        stats = m.notifier.stats
        for outcome in _NOTIFIER_OUTCOMES:
            notifications.add_metric([outcome], getattr(stats, outcome))
    return notifications
