"""Deterministic ids for what the campaign creates: decisions, windows and offers.

Every id is derived from the product and the product's decision counter ``n`` (kept in
the campaign's journal), never from a clock or a random source. A proposal that is
retried after a restart therefore reuses the ids it was journalled with, and every
downstream actor (seller, window, decision) can be idempotent by id.

One decision ``n`` owns ``d-<product>-<n>``; when it proposes, its window is
``w-<product>-<n>`` and its offer ``o-<product>-<n>``, so the three can be matched by eye.
The contract caps ids at 64 characters: a product id long enough to break that is
shortened and a digest of the full id appended, which keeps the id unique and stable.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["MAX_ID", "decision_id", "offer_id", "window_id"]

MAX_ID: Final = 64
_DIGEST_CHARS: Final = 12


def _entity_id(tag: str, product_id: str, n: int) -> str:
    plain = f"{tag}-{product_id}-{n}"
    if len(plain) <= MAX_ID:
        return plain
    digest = hashlib.blake2b(product_id.encode(), digest_size=_DIGEST_CHARS // 2).hexdigest()
    suffix = f"-{digest}-{n}"
    room = MAX_ID - len(tag) - 1 - len(suffix)
    return f"{tag}-{product_id[:room]}{suffix}"


def decision_id(product_id: str, n: int) -> str:
    return _entity_id("d", product_id, n)


def window_id(product_id: str, n: int) -> str:
    return _entity_id("w", product_id, n)


def offer_id(product_id: str, n: int) -> str:
    return _entity_id("o", product_id, n)
