"""Cluster: join throughput with 1, 2 and 3 nodes on one three-server NATS cluster, and
the failover time when one of three nodes is SIGKILLed mid-crowd.

Everything is real and in separate processes (``bench._cluster``): three nats-servers
with JetStream routed to each other, node processes with ``journal = "jetstream"`` and
three replicas (each connected to a different server), and the flash crowd's load
generator (``bench._flash_load``), connected to all three servers and retrying what the
contract says to retry with the same join id. One run, one NATS cluster:

* **scale**: for 1, then 2, then 3 nodes: start them, wait until the shards are spread
  evenly, list ``windows`` products (one seller each) so the campaign proposes one window
  per product, which land on different shards and so on different nodes, register the
  crowd, wait until every window is active, then send the crowd: every buyer joins every
  window once, ``stock`` units per window, ``buyers`` joins per window. Figures: accepted
  joins/s (``ok`` replies over the time to the last one), all replies/s, p50/p99 latency
  of all replies and of the accepted joins, the count of every other outcome. Then the
  nodes stop (SIGTERM: each hands its shards over) before the next size starts.
* **failover**: three nodes and new windows; once ``kill_after`` joins were accepted the
  node running the most windows is SIGKILLed, and the failover is timed from the kill
  until ``cluster.status`` shows every shard owned by the two others and until a request
  to a window on one of the dead node's shards succeeds.

After every crowd each window's reservations are read back (every page): every
acknowledged join must be held and nothing may be sold beyond the stock. The run exits
non-zero otherwise.

On a small machine (the reference runs have two cores for everything: three NATS
servers, the nodes and the load generator) more nodes are not faster: each node adds a
process competing for the same cores, and two requests out of three take an extra hop
to the node that owns the window. What the figures show there is the cost of the hop
and of the replication, not the scaling a machine per node would give.

    python -m bench.cluster [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec

from bench._cluster import Failover, ShopCluster, request_probe
from bench._common import figure, ratio
from bench._flash_load import LoadResult, LoadSpec
from bench._flash_shop import BenchError
from bench.flash_crowd import run_load_process

__all__ = ["CrowdCheck", "Sizes", "crowd", "failover", "main", "scale"]

NODES = ("n1", "n2", "n3")

Echo = Callable[[str], None]


class Sizes(msgspec.Struct, frozen=True, kw_only=True):
    windows: int
    """Windows (products) in each crowd, spread over the shards."""
    stock: int
    """Units of each window."""
    buyers: int
    """Crowd buyers; each joins every window once (``buyers`` joins per window)."""
    concurrency: int = 100
    timeout_s: float = 2.0
    """One attempt's time limit; the load retries for up to ``retry_for_s``."""
    retry_for_s: float = 30.0
    kill_after: int = 0
    """Failover: SIGKILL a node once this many joins were accepted."""


FULL = Sizes(windows=8, stock=1000, buyers=2000, kill_after=2000)
QUICK = Sizes(windows=4, stock=40, buyers=80, concurrency=50, kill_after=40)


class CrowdCheck(msgspec.Struct, frozen=True, kw_only=True):
    """A crowd's load and what the windows held afterwards."""

    nodes: int
    load: LoadResult
    setup_s: float
    quantity_total: int
    held_quantity: int
    lost: int
    """Acknowledged joins not among their window's held reservations."""
    oversold: int
    """Units held beyond a window's stock, summed over the windows."""
    held_unacked: int
    """Held reservations no ``ok`` reply acknowledged (a reply lost with its node)."""
    nodes_cpu_s: float = 0.0
    """CPU seconds the node processes used during the crowd (all of them)."""
    servers_cpu_s: float = 0.0
    """CPU seconds the three NATS servers used during the crowd."""

    @property
    def consistent(self) -> bool:
        return self.lost == 0 and self.oversold == 0


async def crowd(
    cluster: ShopCluster,
    nodes: int,
    sizes: Sizes,
    tag: str,
    workdir: Path,
    incident: tuple[int, Callable[[list[str]], Any]] | None = None,
) -> tuple[CrowdCheck, Any]:
    """Windows ``<tag>W<k>``, a crowd ``<tag>C<i>`` on them, and the check. With
    ``incident`` ``(after, act)``: ``await act(window_ids)`` once ``after`` joins were
    accepted, beside the crowd; its result is returned with the check."""
    client = cluster.client
    started = anyio.current_time()
    products = [f"{tag}W{k}" for k in range(sizes.windows)]
    # One intent for the whole stock: the window is proposed at its full size at once
    # (with several, the campaign may propose it before the last one arrives).
    await client.setup_products(products, sizes.buyers, sizes.stock, f"{tag}C", demand_buyers=1)
    views = await client.active_windows(products)
    setup_s = anyio.current_time() - started
    windows = [view["window_id"] for view in views]
    spec = LoadSpec(
        url=cluster.nats.url,
        subject=f"iceshop.windows.{windows[0]}.join",
        subjects=tuple(f"iceshop.windows.{w}.join" for w in windows),
        count=sizes.buyers * sizes.windows,
        concurrency=sizes.concurrency,
        buyer_prefix=f"{tag}C",
        join_prefix=f"{tag}J",
        timeout_s=sizes.timeout_s,
        retry_for_s=sizes.retry_for_s,
        progress_every=max(1, sizes.kill_after // 10) if incident else 0,
    )
    outcome: list[Any] = []
    nodes_before, servers_before = await cluster.cpu_seconds()
    if incident is None:
        load = await run_load_process(spec, workdir)
    else:
        after, act = incident
        due = anyio.Event()

        def on_line(line: str) -> None:
            if line.startswith("acked ") and int(line.split()[1]) >= after:
                due.set()

        async def run_incident() -> None:
            await due.wait()
            outcome.append(await act(windows))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run_incident)
            load = await run_load_process(spec, workdir, on_line)
            if not due.is_set():
                tg.cancel_scope.cancel()
        if not outcome:
            raise BenchError(f"the crowd never had {after} joins accepted: {load.codes}")
    nodes_after, servers_after = await cluster.cpu_seconds()
    check = await _check(cluster, nodes, load, windows, setup_s)
    check = msgspec.structs.replace(
        check,
        # a node killed meanwhile is left out (its figures went with it)
        nodes_cpu_s=sum(s - nodes_before[n] for n, s in nodes_after.items() if n in nodes_before),
        servers_cpu_s=servers_after - servers_before,
    )
    return check, (outcome[0] if outcome else None)


async def _check(
    cluster: ShopCluster, nodes: int, load: LoadResult, windows: list[str], setup_s: float
) -> CrowdCheck:
    acked: dict[str, set[str]] = {w: set() for w in windows}
    for join_id in load.ok_join_ids:
        # "<prefix><i>": request i went to window i mod n (see bench._flash_load)
        index = int(join_id[len(join_id.rstrip("0123456789")) :])
        acked[windows[index % len(windows)]].add(join_id)
    total = held_total = lost = oversold = unacked = 0
    for window_id in windows:
        view = await cluster.client.ok(f"windows.{window_id}.get")
        held = await cluster.client.reservations(window_id)
        total += view["quantity_total"]
        held_total += held.held_quantity
        lost += len(acked[window_id] - held.held_join_ids)
        unacked += len(held.held_join_ids - acked[window_id])
        oversold += max(0, held.held_quantity - view["quantity_total"])
    return CrowdCheck(
        nodes=nodes,
        load=load,
        setup_s=setup_s,
        quantity_total=total,
        held_quantity=held_total,
        lost=lost,
        oversold=oversold,
        held_unacked=unacked,
    )


async def scale(
    cluster: ShopCluster, sizes: Sizes, workdir: Path, echo: Echo = print
) -> list[CrowdCheck]:
    """The crowd with 1, 2 and 3 nodes, one after the other."""
    results = []
    for n in (1, 2, 3):
        node_ids = list(NODES[:n])
        await cluster.start_nodes(node_ids)
        await cluster.wait_ready(node_ids, balanced=True)
        check, _ = await crowd(cluster, n, sizes, f"S{n}", workdir)
        report_crowd(check, sizes, echo)
        results.append(check)
        await cluster.stop_nodes(node_ids)
    return results


async def failover(
    cluster: ShopCluster, sizes: Sizes, workdir: Path, echo: Echo = print
) -> tuple[CrowdCheck, Failover]:
    """Three nodes, a crowd, and the node with the most windows SIGKILLed mid-crowd."""
    if not 0 < sizes.kill_after < sizes.windows * min(sizes.stock, sizes.buyers):
        raise ValueError("failover needs 0 < kill_after < the joins the windows accept")
    await cluster.start_nodes(list(NODES))
    await cluster.wait_ready(list(NODES), balanced=True)

    async def kill(windows: list[str]) -> Failover:
        status = await cluster.status()
        if status is None:
            raise BenchError("no node answers cluster.status")
        placed = {w: status.owner_of("window", w) for w in windows}
        victim = max(NODES, key=lambda n: sum(1 for owner in placed.values() if owner == n))
        window = next((w for w, owner in placed.items() if owner == victim), None)
        probe = None if window is None else request_probe(cluster.client, f"windows.{window}.get")
        return await cluster.kill_and_measure(victim, probe)

    check, measured = await crowd(cluster, 3, sizes, "F", workdir, (sizes.kill_after, kill))
    assert isinstance(measured, Failover)
    report_crowd(check, sizes, echo, label="failover crowd")
    report_failover(measured, echo)
    return check, measured


# -- report ------------------------------------------------------------------------------


def _percent(cpu_s: float, wall_s: float) -> float:
    """CPU seconds per wall second, in percent of one core."""
    return 100 * cpu_s / wall_s if wall_s > 0 else 0.0


def _name(nodes: int) -> str:
    return f"{nodes} node{'s' if nodes > 1 else ''}"


def report_crowd(r: CrowdCheck, sizes: Sizes, echo: Echo = print, label: str = "") -> bool:
    load = r.load
    label = label or f"cluster {_name(r.nodes)}"
    echo(
        f"-- {label}: {sizes.windows} windows, {r.quantity_total} units in all, "
        f"{load.sent} join attempts, {sizes.concurrency} in flight (setup {r.setup_s:.1f}s)"
    )
    echo(figure(f"{label} accepted joins", load.ok_per_s, "joins/s"))
    echo(figure(f"{label} all replies", load.replies_per_s, "replies/s"))
    echo(figure(f"{label} latency p50", load.p50_ms, "ms"))
    echo(figure(f"{label} latency p99", load.p99_ms, "ms"))
    echo(figure(f"{label} accepted joins latency p50", load.ok_p50_ms, "ms"))
    echo(figure(f"{label} accepted joins latency p99", load.ok_p99_ms, "ms"))
    echo(figure(f"{label} ok", load.ok, "replies"))
    for code, count in load.codes.items():
        echo(figure(f"{label} {code}", count, "replies" if ":" not in code else "requests"))
    echo(figure(f"{label} retried attempts", load.retries, "requests"))
    wall = load.elapsed_s
    for who, cpu_s in (
        ("nodes", r.nodes_cpu_s),
        ("NATS servers", r.servers_cpu_s),
        ("load generator", load.cpu_s),
    ):
        echo(figure(f"{label} CPU of the {who}", _percent(cpu_s, wall), "% of a core"))
    echo(figure(f"{label} acknowledged joins lost", r.lost, "joins"))
    echo(figure(f"{label} oversold", r.oversold, "units"))
    if r.held_unacked:
        echo(figure(f"{label} held without an acknowledgement", r.held_unacked, "joins"))
    if not r.consistent:
        echo(f"!! {label}: {r.lost} acknowledged joins lost, {r.oversold} units oversold")
    return r.consistent


def report_failover(f: Failover, echo: Echo = print) -> None:
    echo(
        f"failover: {f.node_id} SIGKILLed holding {len(f.shards)} shards "
        "(lease_ttl_s 3, lease_heartbeat_s 0.75)"
    )
    echo(figure("failover shards owned by the others", f.shards_moved_s, "s"))
    echo(figure("failover first request served", f.served_s, "s"))
    echo(figure("failover time", f.seconds, "s"))


def report_scale(results: list[CrowdCheck], echo: Echo = print) -> None:
    echo(
        "nodes  accepted joins/s  all replies/s  p50 ms  p99 ms  ok p99 ms  "
        "CPU % nodes / NATS / load"
    )
    for r in results:
        load = r.load
        wall = load.elapsed_s
        cpu = " / ".join(
            f"{_percent(s, wall):.0f}" for s in (r.nodes_cpu_s, r.servers_cpu_s, load.cpu_s)
        )
        echo(
            f"{r.nodes:>5}  {load.ok_per_s:>16,.0f}  {load.replies_per_s:>13,.0f}  "
            f"{load.p50_ms:>6.1f}  {load.p99_ms:>6.1f}  {load.ok_p99_ms:>9.1f}  {cpu}"
        )
    one = results[0].load
    for r in results[1:]:
        echo(
            ratio(
                f"cluster accepted joins, {_name(r.nodes)} vs 1",
                r.load.ok_per_s,
                one.ok_per_s,
                "1 node",
            )
        )


async def main_async(sizes: Sizes, workdir: Path) -> bool:
    async with ShopCluster(workdir) as cluster:
        print(f"-- NATS cluster: {len(cluster.nats.servers)} servers with JetStream, replicas 3")
        results = await scale(cluster, sizes, workdir)
        check, _ = await failover(cluster, sizes, workdir)
    print("-- summary")
    report_scale(results)
    return all(r.consistent for r in [*results, check])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    try:
        with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
            good = anyio.run(main_async, sizes, Path(tmp))
    except BenchError as exc:
        print(f"!! cluster: {exc}", flush=True)
        return 1
    return 0 if good else 1


if __name__ == "__main__":
    raise SystemExit(main())
