"""``python -m iceshop.demo``: the same as ``iceshop demo``."""

from __future__ import annotations

from iceshop.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
