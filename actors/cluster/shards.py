"""Which shard an actor belongs to, and which shards a node prefers.

Nodes share the actors by shards: a fixed number of buckets, each owned by at most one
node at a time (see :mod:`actors.cluster.leases`). An actor's shard is a pure function of
its ``(kind, key)``, so every node, every process and every version computes the same
answer without asking anybody::

    shard_of(kind, key, shards) == zlib.crc32((kind + "\\x00" + key).encode()) % shards

CRC-32 is not a good hash for security, but it is specified, fast, in the standard library
and identical on every machine (Python's ``hash()`` is salted per process). The NUL byte
separates kind from key so ``("ab", "c")`` and ``("a", "bc")`` differ.

**Changing this function, or the number of shards, is a breaking change of a
deployment**: actors would move to other shards while their old owners still hold the
old ones. Every node of a cluster must run with the same ``shards``; changing it means
stopping the whole cluster first.

:func:`preference` ranks ``(node, shard)`` pairs by rendezvous hashing: each node scores
every shard, and the node with the highest score is that shard's preferred owner. Nodes
claiming free shards in their own order of preference rarely collide, without talking
to each other.
"""

from __future__ import annotations

import hashlib
import zlib

__all__ = ["preference", "shard_of"]


def shard_of(kind: str, key: str, shards: int) -> int:
    """The shard of actor ``(kind, key)`` among ``shards`` (``0 <= result < shards``)."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, not {shards}")
    return zlib.crc32((kind + "\x00" + key).encode()) % shards


def preference(node_id: str, shard: int) -> int:
    """The rendezvous score of ``shard`` for ``node_id``: higher means preferred. Stable
    across processes and machines."""
    digest = hashlib.blake2b(f"{node_id}\x00{shard}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
