"""Input hardening: 100,000 fuzzed requests through the node's routes, then thousands
over NATS against a live node, with zero crashes and zero state changes as the target.

Two levels, both driven by the Hypothesis strategies of ``tests/fuzz_inputs.py`` with
fixed seeds (the same inputs on every run):

* **in process**: the node's own routes (captured from ``ShopNode`` as it subscribes
  them) get defective, valid and wild requests for every command subject, in one worker
  process per CPU; each outcome is judged against the contract. Figures: inputs/s
  (generation and judging included; Hypothesis is most of it) and the routes' own
  inputs/s, the count of each outcome, crashes and mismatches (both must be 0).
* **over NATS**: a seeded shop (buyers, a seller's listing, an active window with a join)
  on a real nats-server and SQLite journal gets defective requests aimed at its own
  records, every (command, defect) pair alike; every reply must be a refusal, no event
  may be published, the journal and the views must be unchanged, and a valid join must
  still be served afterwards.

    python -m bench.fuzz [--quick] [--inputs N] [--per-pair N]

Exits non-zero on any crash, mismatch, unexpected reply or state change.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import anyio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from bench._common import figure

SEED = 20_251_125
BATCH = 8  # cases per Hypothesis example (spreads its per-example cost)
SHOWN = 5  # reproducers printed per kind of failure


def _in_process(worker: int, count: int) -> dict[str, Any]:
    """One worker's share: ``count`` cases, judged; counts and the first failures."""
    from tests.fuzz_inputs import FuzzFailure, RouteTable, any_case, judge

    table = RouteTable.from_node()
    buckets: collections.Counter[str] = collections.Counter()
    families: collections.Counter[tuple[str, str]] = collections.Counter()
    pairs: collections.Counter[tuple[str, str]] = collections.Counter()
    failures: list[str] = []
    routed_s = 0.0
    largest_reply = 0
    start = time.perf_counter()

    @hypothesis_seed(SEED + worker)
    @settings(
        max_examples=-(-count // BATCH),
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(any_case(), min_size=BATCH, max_size=BATCH))
    def run(cases: list[Any]) -> None:
        nonlocal routed_s, largest_reply
        for case in cases:
            t = time.perf_counter()
            outcome = table.dispatch(case.subject, case.headers, case.payload)
            routed_s += time.perf_counter() - t
            if isinstance(outcome, bytes):
                largest_reply = max(largest_reply, len(outcome))
            try:
                bucket = judge(case, outcome)
            except FuzzFailure as exc:
                bucket = "CRASH" if "the route raised" in str(exc) else "MISMATCH"
                failures.append(f"{bucket}: {str(exc)[:800]}\n    {case.reproducer()}")
            buckets[bucket] += 1
            family = case.defect if case.defect in ("valid", "wild") else "defect"
            families[family, bucket] += 1
            if family == "defect":
                pairs[case.kind, case.defect] += 1

    run()
    return {
        "inputs": sum(buckets.values()),
        "seconds": time.perf_counter() - start,
        "routed_s": routed_s,
        "largest_reply": largest_reply,
        "buckets": buckets,
        "families": families,
        "pairs": pairs,
        "failures": failures[:50],
    }


def in_process(inputs: int) -> bool:
    from tests.fuzz_inputs import defect_pairs

    workers = max(1, min(os.cpu_count() or 1, 8))
    share = -(-inputs // workers)
    print(f"in process: {inputs:,} inputs in {workers} worker process(es), seed {SEED}")
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        results = list(pool.map(_in_process, range(workers), [share] * workers))
    wall = time.perf_counter() - start
    total = sum(r["inputs"] for r in results)
    buckets: collections.Counter[str] = sum((r["buckets"] for r in results), collections.Counter())
    families: collections.Counter[tuple[str, str]] = sum(
        (r["families"] for r in results), collections.Counter()
    )
    pairs: collections.Counter[tuple[str, str]] = sum(
        (r["pairs"] for r in results), collections.Counter()
    )
    failures = [f for r in results for f in r["failures"]]
    routed_s = sum(r["routed_s"] for r in results)
    print(figure("inputs judged", total, "inputs"))
    print(figure("wall time", wall, "s"))
    print(figure("inputs/s (generate + route + judge, all workers)", total / wall, "inputs/s"))
    print(figure("inputs/s through the routes alone (one core)", total / routed_s, "inputs/s"))
    print(figure("largest error reply", max(r["largest_reply"] for r in results), "bytes"))
    for (family, bucket), n in sorted(families.items()):
        print(f"  {family:<7} -> {bucket:<16} {n:>8,}")
    covered = sum(1 for p in defect_pairs() if pairs[p])
    print(f"(command, defect) pairs hit: {covered}/{len(defect_pairs())}")
    crashes, mismatches = buckets["CRASH"], buckets["MISMATCH"]
    print(f"crashes: {crashes}")
    print(f"mismatches: {mismatches}")
    for failure in failures[:SHOWN]:
        print(failure)
    return total >= inputs and crashes == 0 and mismatches == 0


async def over_nats(per_pair: int) -> bool:
    from tests.fuzz_world import (
        defects_for_every_kind,
        fuzz_over_nats,
        fuzz_shop,
        seed_world,
        snapshot,
    )

    ok = True
    with tempfile.TemporaryDirectory(prefix="iceshop-fuzz-") as tmp:
        async with fuzz_shop(Path(tmp)) as shop:
            world = await seed_world(shop)
            start = time.perf_counter()
            cases = await anyio.to_thread.run_sync(defects_for_every_kind, world, per_pair, SEED)
            print(f"\nover NATS: {len(cases):,} defective requests ({per_pair} per pair)")
            print(figure("generated in", time.perf_counter() - start, "s"))
            before = await snapshot(shop, world)
            report = await fuzz_over_nats(shop, world, cases, concurrency=32)
            after = await snapshot(shop, world)
            print(figure("requests answered and judged", report.sent, "requests"))
            print(figure("requests/s", report.sent / report.seconds, "requests/s"))
            for bucket, n in sorted(report.buckets.items()):
                print(f"  {bucket:<16} {n:>8,}")
            changes = before.changes(after)
            print(f"failures (unexpected reply, timeout): {len(report.failures)}")
            for failure in report.failures[:SHOWN]:
                print("  " + failure[:1000])
            print(f"events published during the fuzz: {report.events}")
            print(f"state changes: {len(changes)}")
            for change in changes:
                print("  " + change)
            ok = not report.failures and not changes and report.events == 0
            ok = ok and report.sent == len(cases)
            (wid,) = world.pool("window_id")
            c = shop.client
            await c.ok("buyers.B9.register", {"name": "Late buyer", "phone": "+905551112299"})
            joined = await c.call(f"windows.{wid}.join", {"join_id": "J9", "buyer_id": "B9"})
            served = joined.get("ok") is True and joined["data"]["status"] == "reserved"
            print(f"a valid join afterwards: {'reserved' if served else joined}")
            ok = ok and served
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fuzz", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--inputs", type=int, help="in-process inputs (default 100,000)")
    parser.add_argument("--per-pair", type=int, help="NATS requests per (command, defect)")
    args = parser.parse_args(argv)
    inputs = args.inputs or (4_000 if args.quick else 100_000)
    per_pair = args.per_pair or (3 if args.quick else 40)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.* helpers
    ok = in_process(inputs)
    ok = anyio.run(over_nats, per_pair) and ok
    print(f"fuzz: {'PASSED' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
