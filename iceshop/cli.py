"""The ``iceshop`` command line.

Sub-commands arrive capability by capability; each one that is not built yet says so
plainly instead of pretending.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]

_PENDING = {
    "up": "the embedded default (nats-server + one node)",
    "node": "one node against an existing NATS server or cluster",
    "demo": "the whole happy path on the embedded default",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="iceshop", description="Flash sales driven by aggregated demand, on NATS."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in _PENDING.items():
        sub.add_parser(name, help=text)
    args = parser.parse_args(argv)
    print(
        f"iceshop {args.command}: not yet — {_PENDING[args.command]} is still being built. "
        "The runtime and its tests are ready: run `make test` and `make bench`.",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
