"""Run every benchmark, each in its own subprocess, and summarise the ratios.

A subprocess per benchmark keeps memory figures clean (nothing left over from the previous
benchmark) and keeps one crash from hiding the others. Each module prints plain figure lines;
the runner streams them as they come and collects the ``ratio ...`` lines for the summary.

    python -m bench                       # everything, full sizes
    python -m bench --only savina         # one or more, comma separated
    python -m bench --quick               # small sizes: a smoke test, not a measurement
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench._common import RATIO_PREFIX

BENCHMARKS = (
    "savina",
    "activation",
    "idle_memory",
    "timer_lag",
    "journal_throughput",
    "recovery",
    "flash_crowd",
    "flash_overhead",
    "cluster",
    "notify",
    "metrics_overhead",
    "tracing_overhead",
    "fuzz",
)
#: Entries that run a module other than ``bench.<name>``, or with arguments.
COMMANDS: dict[str, tuple[str, ...]] = {
    # Metrics and tracing on vs off, alternating crowds in one run (~2 min; target < 10 %).
    "flash_overhead": ("flash_crowd", "--mode", "overhead"),
}
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Outcome:
    name: str
    status: str  # ok | FAILED | missing | TIMEOUT
    seconds: float = 0.0
    ratios: list[str] = field(default_factory=list)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated benchmark names: " + ", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds per benchmark (default 1800)"
    )
    return parser.parse_args(argv)


def _selected(only: str | None) -> list[str]:
    if not only:
        return list(BENCHMARKS)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; known: {BENCHMARKS}")
    return names


def _run_one(name: str, quick: bool, timeout: float) -> Outcome:
    module, *args = COMMANDS.get(name, (name,))
    if importlib.util.find_spec(f"bench.{module}") is None:
        print(f"(bench.{module} does not exist yet: skipped)", flush=True)
        return Outcome(name, "missing")
    command = [sys.executable, "-m", f"bench.{module}", *args, *(["--quick"] if quick else [])]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True, bufsize=1
    )
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        process.kill()

    watchdog = threading.Timer(timeout, kill)
    watchdog.start()
    ratios: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            if line.startswith(RATIO_PREFIX):
                ratios.append(line.removeprefix(RATIO_PREFIX).strip())
        returncode = process.wait()
    finally:
        watchdog.cancel()
    seconds = time.perf_counter() - start
    if timed_out.is_set():
        status = "TIMEOUT"
    elif returncode != 0:
        status = "FAILED"
    else:
        status = "ok"
    if status != "ok":
        print(f"!! bench.{name}: {status} (exit code {returncode})", flush=True)
    return Outcome(name, status, seconds, ratios)


def _print_summary(outcomes: list[Outcome]) -> None:
    width = max(len(outcome.name) for outcome in outcomes)
    print()
    print("=" * 72)
    print(f"{'benchmark':<{width}}  {'status':<8} {'wall s':>7}  ratios (ours/baseline)")
    print("-" * 72)
    for outcome in outcomes:
        wall = f"{outcome.seconds:7.1f}" if outcome.status != "missing" else f"{'-':>7}"
        first, *rest = outcome.ratios or ["-"]
        print(f"{outcome.name:<{width}}  {outcome.status:<8} {wall}  {first}")
        for extra in rest:
            print(f"{'':<{width}}  {'':<8} {'':>7}  {extra}")
    print("=" * 72)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    outcomes: list[Outcome] = []
    for name in _selected(args.only):
        shown = " ".join(COMMANDS.get(name, (name,)))
        print(f"\n### bench.{shown}{' (quick)' if args.quick else ''}", flush=True)
        outcomes.append(_run_one(name, args.quick, args.timeout))
    _print_summary(outcomes)
    failed = [outcome.name for outcome in outcomes if outcome.status in ("FAILED", "TIMEOUT")]
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
