"""What the shard-lease bucket holds, and the cluster's picture built from it.

Two kinds of keys live in the bucket (values are JSON, so ``nats kv get`` shows them)::

    shard.<n>         LeaseRecord {owner, renewed_at}               who holds shard n
    node.<node_id>    NodeRecord  {node_id, started_at, heartbeat_at}  a member's heartbeat

Times in records are wall-clock seconds and only informative (ages in a status view):
nobody decides anything from another machine's wall clock. Liveness and lapse are judged
by KV revisions and each node's own monotonic clock (see :mod:`actors.cluster.leases`).

:class:`ClusterView` is the picture for operators: the members with their heartbeat ages
and shards, and every lease with its owner, age and revision (the fencing token).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

__all__ = [
    "NODE_PREFIX",
    "SHARD_PREFIX",
    "ClusterView",
    "LeaseRecord",
    "NodeInfo",
    "NodeRecord",
    "ShardInfo",
    "build_view",
    "decode_lease",
    "decode_node",
    "encode",
    "node_key",
    "parse_shard_key",
    "shard_key",
]

SHARD_PREFIX = "shard."
NODE_PREFIX = "node."


class LeaseRecord(msgspec.Struct, frozen=True):
    """The value of ``shard.<n>``: its owner and when the owner last wrote it (wall)."""

    owner: str
    renewed_at: float


class NodeRecord(msgspec.Struct, frozen=True):
    """The value of ``node.<node_id>``: a member's heartbeat (wall times)."""

    node_id: str
    started_at: float
    heartbeat_at: float


class NodeInfo(msgspec.Struct, frozen=True):
    """A member as the view shows it. ``heartbeat_age_s`` compares the member's wall
    clock with the reader's: informative only."""

    node_id: str
    started_at: float
    heartbeat_age_s: float
    shards: tuple[int, ...]


class ShardInfo(msgspec.Struct, frozen=True):
    """A shard's lease: ``owner`` ``None`` when free (never taken, or released);
    ``revision`` ``0`` when the key was never written."""

    shard: int
    owner: str | None
    lease_age_s: float | None
    revision: int


class ClusterView(msgspec.Struct, frozen=True):
    """Members and leases, ordered by node id and shard."""

    nodes: tuple[NodeInfo, ...]
    shards: tuple[ShardInfo, ...]


_encoder = msgspec.json.Encoder()
_lease_decoder = msgspec.json.Decoder(LeaseRecord)
_node_decoder = msgspec.json.Decoder(NodeRecord)


def encode(record: LeaseRecord | NodeRecord) -> bytes:
    return _encoder.encode(record)


def decode_lease(data: bytes) -> LeaseRecord:
    """Raises :class:`msgspec.DecodeError` (a :class:`ValueError`) for anything else."""
    return _lease_decoder.decode(data)


def decode_node(data: bytes) -> NodeRecord:
    """Raises :class:`msgspec.DecodeError` (a :class:`ValueError`) for anything else."""
    return _node_decoder.decode(data)


def parse_shard_key(name: str) -> int | None:
    """``n`` for the key suffix ``"n"`` written by :func:`shard_key`, else ``None``."""
    if not name.isdigit() or (len(name) > 1 and name[0] == "0"):
        return None
    return int(name)


def shard_key(shard: int) -> str:
    return f"{SHARD_PREFIX}{shard}"


def node_key(node_id: str) -> str:
    return f"{NODE_PREFIX}{node_id}"


def build_view(
    leases: Mapping[int, tuple[int, LeaseRecord | None]],
    nodes: Mapping[str, NodeRecord],
    now: float,
    shards: int | None = None,
) -> ClusterView:
    """The view of ``leases`` (shard -> (revision, record or ``None`` when deleted)) and
    ``nodes``, with ages against the wall time ``now``. With ``shards``, every shard
    ``0 .. shards-1`` is listed (the missing ones free); without it, those in ``leases``."""
    numbers = range(shards) if shards is not None else sorted(leases)
    rows: list[ShardInfo] = []
    held: dict[str, list[int]] = {}
    for shard in numbers:
        revision, record = leases.get(shard, (0, None))
        if record is None:
            rows.append(ShardInfo(shard, None, None, revision))
            continue
        rows.append(ShardInfo(shard, record.owner, max(0.0, now - record.renewed_at), revision))
        held.setdefault(record.owner, []).append(shard)
    members = tuple(
        NodeInfo(
            node_id=node_id,
            started_at=record.started_at,
            heartbeat_age_s=max(0.0, now - record.heartbeat_at),
            shards=tuple(held.get(node_id, ())),
        )
        for node_id, record in sorted(nodes.items())
    )
    return ClusterView(nodes=members, shards=tuple(rows))
