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

Both levels run twice: with authentication off (credentials ignored, so the requests
themselves are fuzzed) and on. With it on (a fifth of the in-process inputs, and a shop
of its own over NATS) every request carries one credential of
``tests.fuzz_inputs.CREDENTIALS``: good JWTs (HS256, EdDSA) and API keys, and bad ones
(missing, junk, garbage base64, forged, expired, not yet valid, unknown or mismatched
key id and algorithm, wrong audience, bad claims, non-ASCII, over-long, unknown, wrong
or revoked ``isk_`` keys). Outcomes are judged in the contract's precedence
(``unauthorized``, then ``invalid_request``, then ``forbidden``); over NATS only
requests the node must refuse are sent (bad credentials with any request, good ones
with a defect or outside their rights), nothing may change, and afterwards an API key
and a token are still served while the revoked key is still refused.

    python -m bench.fuzz [--quick] [--inputs N] [--per-pair N] [--auth-per-pair N]

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


def _in_process(worker: int, count: int, auth: bool = False) -> dict[str, Any]:
    """One worker's share: ``count`` cases, judged; counts and the first failures. With
    ``auth``, every case carries a credential and the routes authenticate."""
    from tests.fuzz_inputs import (
        AuthCase,
        Credentials,
        FuzzFailure,
        RouteTable,
        any_case,
        auth_case,
        fixed_api_keys,
        judge,
        judge_auth,
    )

    creds = Credentials(fixed_api_keys()) if auth else None
    table = RouteTable.from_node(creds=creds)
    strategy: Any = any_case() if creds is None else auth_case(creds)
    buckets: collections.Counter[str] = collections.Counter()
    families: collections.Counter[tuple[str, str]] = collections.Counter()
    pairs: collections.Counter[tuple[str, str]] = collections.Counter()
    failures: list[str] = []
    routed_s = 0.0
    largest_reply = 0
    start = time.perf_counter()

    @hypothesis_seed(SEED + worker + (1000 if auth else 0))
    @settings(
        max_examples=-(-count // BATCH),
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(strategy, min_size=BATCH, max_size=BATCH))
    def run(items: list[Any]) -> None:
        nonlocal routed_s, largest_reply
        for item in items:
            case = item.case if isinstance(item, AuthCase) else item
            t = time.perf_counter()
            outcome = table.dispatch(case.subject, case.headers, case.payload)
            routed_s += time.perf_counter() - t
            if isinstance(outcome, bytes):
                largest_reply = max(largest_reply, len(outcome))
            try:
                if isinstance(item, AuthCase):
                    bucket = judge_auth(item, outcome)
                else:
                    bucket = judge(case, outcome)
            except FuzzFailure as exc:
                bucket = "CRASH" if "the route raised" in str(exc) else "MISMATCH"
                failures.append(f"{bucket}: {str(exc)[:800]}\n    {item.reproducer()}")
            buckets[bucket] += 1
            if isinstance(item, AuthCase):
                family = "good" if item.principal is not None else "bad"
                families[f"{family} credential", bucket] += 1
                pairs[case.kind, item.credential] += 1
                continue
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


def in_process(inputs: int, auth: bool = False) -> bool:
    from tests.fuzz_inputs import CREDENTIALS, KINDS, defect_pairs

    workers = max(1, min(os.cpu_count() or 1, 8))
    share = -(-inputs // workers)
    what = "authentication ON, every input with a credential" if auth else "authentication off"
    print(f"\nin process ({what}): {inputs:,} inputs in {workers} worker process(es), "
          f"seed {SEED}")  # fmt: skip
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        results = list(pool.map(_in_process, range(workers), [share] * workers, [auth] * workers))
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
    if auth:
        goal = [(k, c) for k in KINDS for c in CREDENTIALS]
        covered = sum(1 for p in goal if pairs[p])
        print(f"(command, credential) pairs hit: {covered}/{len(goal)}")
    else:
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
        fuzz_shop,
        seed_world,
    )

    ok = True
    with tempfile.TemporaryDirectory(prefix="iceshop-fuzz-") as tmp:
        async with fuzz_shop(Path(tmp)) as shop:
            world = await seed_world(shop)
            start = time.perf_counter()
            cases = await anyio.to_thread.run_sync(defects_for_every_kind, world, per_pair, SEED)
            print(f"\nover NATS: {len(cases):,} defective requests ({per_pair} per pair)")
            print(figure("generated in", time.perf_counter() - start, "s"))
            ok = await _judged_over_nats(shop, world, cases)
            (wid,) = world.pool("window_id")
            c = shop.client
            await c.ok("buyers.B9.register", {"name": "Late buyer", "phone": "+905551112299"})
            joined = await c.call(f"windows.{wid}.join", {"join_id": "J9", "buyer_id": "B9"})
            served = joined.get("ok") is True and joined["data"]["status"] == "reserved"
            print(f"a valid join afterwards: {'reserved' if served else joined}")
            ok = ok and served
    return ok


async def _judged_over_nats(shop: Any, world: Any, cases: list[Any]) -> bool:
    """Send ``cases`` to the node, print how they were answered, and whether the shop's
    journal, views and event stream stayed as they were: True when nothing failed,
    nothing was published and nothing changed."""
    from tests.fuzz_world import fuzz_over_nats, snapshot

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
    return (
        not report.failures and not changes and report.events == 0 and (report.sent == len(cases))
    )


async def over_nats_auth(per_pair: int) -> bool:
    from tests.fuzz_inputs import BAD_CREDENTIALS, Credentials, good_token
    from tests.fuzz_world import (
        create_api_keys,
        credentials_for_every_kind,
        fuzz_shop,
        seed_world,
    )

    with tempfile.TemporaryDirectory(prefix="iceshop-fuzz-auth-") as tmp:
        async with fuzz_shop(Path(tmp), Credentials()) as shop:
            world = await seed_world(shop)
            creds = await create_api_keys(shop, Credentials())
            start = time.perf_counter()
            cases = await anyio.to_thread.run_sync(
                credentials_for_every_kind, world, creds, per_pair, SEED
            )
            bad = sum(1 for c in cases if c.credential in BAD_CREDENTIALS)
            print(f"\nover NATS, authentication ON: {len(cases):,} requests the node must "
                  f"refuse ({per_pair} per (command, credential) pair; {bad:,} with bad "
                  f"credentials, {len(cases) - bad:,} with good ones and a defect or outside "
                  "their rights)")  # fmt: skip
            print(figure("generated in", time.perf_counter() - start, "s"))
            ok = await _judged_over_nats(shop, world, cases)

            c = shop.client
            gateway = next(k.key for k in creds.api_keys if k.role == "gateway" and not k.revoked)
            revoked = next(k.key for k in creds.api_keys if k.revoked)
            buyer = {"name": "Late buyer", "phone": "+905551112299"}
            refused = await c.call(
                "buyers.B9.register", buyer, headers={"Authorization": f"Bearer {revoked}"}
            )
            registered = await c.call(
                "buyers.B9.register", buyer, headers={"Authorization": f"Bearer {gateway}"}
            )
            (wid,) = world.pool("window_id")
            b9 = good_token(creds, "B9", "buyer", shop.clock.time(), ed=True)
            joined = await c.call(
                f"windows.{wid}.join",
                {"join_id": "J9", "buyer_id": "B9"},
                headers={"Authorization": f"Bearer {b9}"},
            )
            still_refused = refused.get("error", {}).get("code") == "unauthorized"
            served = registered.get("ok") is True and joined.get("ok") is True
            served = served and joined["data"]["status"] == "reserved"
            print(f"the revoked API key afterwards: {'unauthorized' if still_refused else refused}")
            print(f"a gateway API key and a buyer token afterwards: "
                  f"{'registered, reserved' if served else (registered, joined)}")  # fmt: skip
            ok = ok and served and still_refused
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fuzz", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--inputs", type=int, help="in-process inputs (default 100,000)")
    parser.add_argument("--per-pair", type=int, help="NATS requests per (command, defect)")
    parser.add_argument(
        "--auth-per-pair", type=int, help="NATS requests per (command, credential), auth on"
    )
    args = parser.parse_args(argv)
    inputs = args.inputs or (4_000 if args.quick else 100_000)
    per_pair = args.per_pair or (3 if args.quick else 40)
    auth_per_pair = args.auth_per_pair or (2 if args.quick else 8)
    auth_inputs = inputs // 5  # of the total: the rest with authentication off
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.* helpers
    start = time.perf_counter()
    ok = in_process(inputs - auth_inputs)
    ok = in_process(auth_inputs, auth=True) and ok
    print(f"\nin process, both: {inputs:,} inputs judged in all "
          f"({inputs - auth_inputs:,} authentication off, {auth_inputs:,} on)")  # fmt: skip
    ok = anyio.run(over_nats, per_pair) and ok
    ok = anyio.run(over_nats_auth, auth_per_pair) and ok
    print(figure("\nwhole fuzz, wall time", time.perf_counter() - start, "s"))
    print(f"fuzz: {'PASSED' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
