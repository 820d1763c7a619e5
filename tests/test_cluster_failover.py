"""Three nodes on a three-server NATS cluster lose one mid-crowd, and nothing is lost.

Real processes all the way (``bench._cluster``): three nats-servers with JetStream, three
``python -m iceshop.node`` processes with ``journal = "jetstream"`` and three replicas,
and the flash crowd's load generator, which retries what the contract says to retry
(timeouts, no responders, ``unavailable``) with the same join id. Several windows, one
per product, spread over the nodes' shards: "hot" ones with fewer units than the crowd
asks for (they sell out), "cool" ones with more (they close when they expire, so their
expiry deadline fires after the failover, on the node that took their shard).

* A node SIGKILLed mid-crowd: its shards are served again within 5 s (lease_ttl_s 3,
  heartbeat 0.75: a lapse, then the next claim round), every acknowledged join is among
  its window's reservations, nothing is oversold, and the event stream holds exactly one
  ``activated`` and one ``closed`` event per window (each deadline fired once, on one
  node).
* A node SIGSTOPped longer than the lease TTL: the others take its shards; resumed, it
  drops its leases ("shard leases lost" in its log) and stores nothing for those shards:
  every acknowledged join held, nothing oversold, and a commit that was already on its
  way when it stopped is refused by the journal stream's per-actor sequence check. Then
  it serves again: it rejoins and gets shards back.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from actors.cluster import shard_of
from bench._cluster import (
    SHARDS,
    ClusterStatus,
    Failover,
    ShopCluster,
    register_probe,
    request_probe,
    window_events,
)
from bench._flash_load import LoadResult, LoadSpec
from bench.flash_crowd import run_load_process
from tests.shop_client import until

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

NODES = ["n1", "n2", "n3"]
BUYERS = 60
"""Crowd buyers; each joins every window once."""
HOT_STOCK = 30
COOL_STOCK = 100
FAILOVER_LIMIT_S = 5.0


async def shop(cluster: ShopCluster, products: list[str], stocks: list[int]) -> list[str]:
    """Three nodes, balanced; one active window per product. The window ids."""
    await cluster.start_nodes(NODES)
    await cluster.wait_ready(balanced=True)
    # One intent per product, for all of its stock: each window is sized to the stock.
    await cluster.client.setup_products(products, BUYERS, stocks, "C", demand_buyers=1)
    views = await cluster.client.active_windows(products)
    return [view["window_id"] for view in views]


def crowd(cluster: ShopCluster, windows: list[str], progress_every: int) -> LoadSpec:
    return LoadSpec(
        url=cluster.nats.url,
        subject=f"iceshop.windows.{windows[0]}.join",
        subjects=tuple(f"iceshop.windows.{w}.join" for w in windows),
        count=BUYERS * len(windows),
        concurrency=24,
        buyer_prefix="C",
        join_prefix="J",
        timeout_s=1.0,
        retry_for_s=25.0,
        progress_every=progress_every,
    )


async def crowd_with_incident(
    cluster: ShopCluster,
    spec: LoadSpec,
    workdir: Path,
    after_acks: int,
    incident: Callable[[], Awaitable[Failover]],
) -> tuple[LoadResult, Failover]:
    """Run the crowd; once ``after_acks`` joins were acknowledged, await ``incident()``
    beside it. Both results."""
    due = anyio.Event()
    outcome: list[Failover] = []

    def on_line(line: str) -> None:
        if line.startswith("acked ") and int(line.split()[1]) >= after_acks:
            due.set()

    async def act() -> None:
        await due.wait()
        outcome.append(await incident())

    async with anyio.create_task_group() as tg:
        tg.start_soon(act)
        load = await run_load_process(spec, workdir, on_line)
        if not due.is_set():
            tg.cancel_scope.cancel()
    assert outcome, f"the crowd never reached {after_acks} acknowledged joins: {load.codes}"
    return load, outcome[0]


def acked_by_window(load: LoadResult, windows: list[str]) -> dict[str, set[str]]:
    acked: dict[str, set[str]] = {w: set() for w in windows}
    for join_id in load.ok_join_ids:
        acked[windows[int(join_id.removeprefix("J")) % len(windows)]].add(join_id)
    return acked


async def check_reservations(
    cluster: ShopCluster, load: LoadResult, windows: list[str], hot: set[str]
) -> dict[str, dict[str, Any]]:
    """Every acknowledged join held, nothing oversold, the view and the reservations in
    agreement; hot windows sold out. The final views."""
    acked = acked_by_window(load, windows)
    views: dict[str, dict[str, Any]] = {}
    for window_id in windows:
        view = await cluster.client.ok(f"windows.{window_id}.get")
        held = await cluster.client.reservations(window_id)
        assert acked[window_id] <= held.held_join_ids, (
            window_id,
            acked[window_id] - held.held_join_ids,
        )
        assert held.held_quantity <= view["quantity_total"], (window_id, held, view)
        assert held.held_quantity == view["quantity_reserved"], (window_id, held, view)
        if window_id in hot:
            assert held.held_quantity == view["quantity_total"] == HOT_STOCK, (window_id, view)
        else:
            assert held.held_quantity == BUYERS, (window_id, view)  # room for every buyer
        views[window_id] = view
    return views


async def one_event_each(cluster: ShopCluster, event_type: str, windows: list[str]) -> None:
    """Once every window has its event in the stream: exactly one per window."""

    async def every() -> dict[str, list[str]] | None:
        found = await window_events(cluster.client.transport, event_type)
        return found if set(windows) <= set(found) else None

    found = await until(every, f"a {event_type} event for every window", timeout=15.0)
    assert set(found) == set(windows), found
    for window_id, event_ids in found.items():
        assert len(set(event_ids)) == 1, (event_type, window_id, event_ids)
        assert len(event_ids) == 1, (event_type, window_id, event_ids)


def owners(status: ClusterStatus, windows: list[str]) -> dict[str, str | None]:
    return {w: status.owner_of("window", w) for w in windows}


def log_records(log: str, event: str) -> list[dict[str, Any]]:
    """The records of a node's (JSON) log whose event is ``event``."""
    return [
        record
        for line in log.splitlines()
        if line.startswith("{") and (record := json.loads(line)).get("event") == event
    ]


def leases_lost(log: str) -> set[int]:
    """The shards of every "shard leases lost" line of a node's log."""
    return {shard for r in log_records(log, "shard leases lost") for shard in r["shards"]}


def refused_writes(log: str) -> list[tuple[str, str]]:
    """The actors whose commit the journal stream refused (another writer had written
    them since): the stream's sequence check, the fence behind the lease."""
    return [
        (r["kind"], r["key"])
        for r in log_records(log, "commit failed; rebuilding actor from its journal")
        if r["error"].startswith("SequenceConflict")
    ]


async def test_a_node_killed_mid_crowd_fails_over_within_five_seconds(tmp_path: Path) -> None:
    hot = [f"H{k}" for k in range(4)]
    cool = ["L0", "L1"]
    settings = {"window_duration_s": "10"}
    async with ShopCluster(tmp_path, settings) as cluster:
        windows = await shop(cluster, hot + cool, [HOT_STOCK] * 4 + [COOL_STOCK] * 2)
        hot_windows, cool_windows = set(windows[:4]), windows[4:]
        placed = owners(await cluster.wait_ready(), windows)
        # The victim runs a cool window (its expiry fires after the failover, on another
        # node), and as many of the others as possible.
        victim = max(
            {placed[w] for w in cool_windows},
            key=lambda n: sum(1 for w in windows if placed[w] == n),
        )
        assert victim is not None
        probe_window = next(w for w in cool_windows if placed[w] == victim)

        async def kill() -> Failover:
            probe = request_probe(cluster.client, f"windows.{probe_window}.get")
            return await cluster.kill_and_measure(victim, probe)

        spec = crowd(cluster, windows, progress_every=10)
        load, failover = await crowd_with_incident(cluster, spec, tmp_path, 60, kill)

        print(
            f"\nfailover of {victim} ({len(failover.shards)} shards, "
            f"{sum(1 for w in windows if placed[w] == victim)} of {len(windows)} windows): "
            f"shards moved {failover.shards_moved_s:.2f}s, "
            f"request served {failover.served_s:.2f}s"
        )
        assert failover.seconds <= FAILOVER_LIMIT_S, failover
        assert load.retries > 0  # the crowd was in flight: requests to the victim's shards
        # Every join got its final answer despite the crash: accepted, or sold out.
        assert set(load.codes) <= {"sold_out"}, load.codes
        assert load.ok == 4 * HOT_STOCK + 2 * BUYERS, load
        moved = await cluster.wait_ready([n for n in NODES if n != victim], balanced=False)
        assert not moved.owned_by(victim)

        async def all_closed() -> bool:
            for window_id in windows:
                view = await cluster.client.ok(f"windows.{window_id}.get")
                if view["state"] != "closed":
                    return False
            return True

        await until(all_closed, "every window closed", timeout=30.0)
        views = await check_reservations(cluster, load, windows, hot_windows)
        for window_id in windows:
            reason = "sold_out" if window_id in hot_windows else "expired"
            assert views[window_id]["close_reason"] == reason, views[window_id]
            assert views[window_id]["outcome"] == "succeeded", views[window_id]
        await one_event_each(cluster, "activated", windows)
        await one_event_each(cluster, "closed", windows)


async def test_a_paused_node_drops_its_leases_and_writes_nothing_for_them(
    tmp_path: Path,
) -> None:
    products = [f"H{k}" for k in range(4)]
    async with ShopCluster(tmp_path) as cluster:
        windows = await shop(cluster, products, [HOT_STOCK] * 4)
        placed = owners(await cluster.wait_ready(), windows)
        victim = max(NODES, key=lambda n: sum(1 for w in windows if placed[w] == n))
        node = cluster.nodes[victim]
        shards: frozenset[int] = frozenset()

        async def pause() -> Failover:
            nonlocal shards
            status = await cluster.status()
            assert status is not None
            shards = status.owned_by(victim)
            since = anyio.current_time()
            node.pause()
            try:
                probe = register_probe(cluster.client, shards, SHARDS)
                # The others take its shards: only possible after lease_ttl_s.
                return await cluster.measure(victim, shards, since, probe)
            finally:
                node.resume()

        spec = crowd(cluster, windows, progress_every=10)
        load, taken = await crowd_with_incident(cluster, spec, tmp_path, 30, pause)
        print(
            f"\n{victim} paused: its {len(shards)} shards owned by the others after "
            f"{taken.shards_moved_s:.2f}s, served after {taken.served_s:.2f}s"
        )
        # Not before its leases lapsed: lease_ttl_s after the others saw its last
        # renewal, which it sent at most lease_heartbeat_s before the pause.
        assert taken.shards_moved_s >= 3.0 - 0.75, taken
        assert set(load.codes) <= {"sold_out"}, load.codes
        assert load.ok == 4 * HOT_STOCK, load

        # Resumed, it dropped its leases (its own fence) before writing anything more.
        async def dropped() -> bool:
            return shards <= leases_lost(node.log_text())

        await until(dropped, f"{victim} logs its leases lost", timeout=15.0)
        # A turn whose lease check passed just before the pause may still reach the
        # server after it (its write already on its way): the stream's per-actor
        # sequence check refuses it, since the new owner has written that actor since.
        refused = refused_writes(node.log_text())
        print(f"{victim}: {len(refused)} stale commits refused by the journal stream")
        assert all(shard_of(kind, key, SHARDS) in shards for kind, key in refused), refused
        assert not node.died
        await check_reservations(cluster, load, windows, set(windows))
        await one_event_each(cluster, "activated", windows)
        await one_event_each(cluster, "closed", windows)  # all sold out

        # And it serves again: it answers, it rejoins, it gets shards back and runs them.
        reply, _ = await cluster.client.transport.request(
            f"iceshop.nodes.{victim}.status", b"", timeout=5.0
        )
        assert reply

        async def regained() -> frozenset[int]:
            status = await cluster.status()
            return frozenset() if status is None else status.owned_by(victim)

        back = await until(regained, f"{victim} holds shards again", timeout=30.0)
        probe = register_probe(cluster.client, back, SHARDS)
        await until(probe, f"an actor on {victim}'s shards answers", timeout=10.0)
        await cluster.wait_ready(NODES, balanced=False)
