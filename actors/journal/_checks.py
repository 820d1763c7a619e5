"""Checks every journal applies to a batch before touching its store.

They catch programming errors (not store failures), so they raise ``ValueError`` and
nothing of the batch is applied.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import WriteRequest

__all__ = ["check_batch"]


def check_batch(batch: Sequence[WriteRequest]) -> None:
    """A request may only set deadlines of its own actor; cancellations are by name within
    that actor, so a deadline naming another actor could never be cancelled by it."""
    for req in batch:
        for d in req.deadlines_set:
            if (d.kind, d.key) != (req.kind, req.key):
                raise ValueError(
                    f"deadline {d.name!r} targets {d.kind}/{d.key}, "
                    f"but the request writes {req.kind}/{req.key}"
                )
