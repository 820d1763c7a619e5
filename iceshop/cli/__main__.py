"""``python -m iceshop.cli``: the same as the ``iceshop`` console script."""

from iceshop.cli import main

raise SystemExit(main())
