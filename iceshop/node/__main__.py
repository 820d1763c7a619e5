"""``python -m iceshop.node ...``: the same as ``iceshop node ...`` (kept for scripts that
start a node as a module)."""

from __future__ import annotations

import sys

from iceshop.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["node", *sys.argv[1:]]))
