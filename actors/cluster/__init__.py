"""Several nodes sharing the actors: shards, and leases on them in a NATS KV bucket.

Actors are grouped into a fixed number of shards by a stable hash of ``(kind, key)``
(:func:`shard_of`); a node runs a shard's actors only while it holds the shard's lease
(:class:`ShardLeases`), whose KV revision is the fencing token. NATS JetStream is the
arbiter; nothing here runs a consensus of its own. Messages for actors on other nodes
travel over NATS (:class:`RemoteMessenger`, with a :class:`MessageCodec`), and
:class:`ClusterMember` ties it all to one actor system (:class:`ShardPlacement`).
"""

from .codec import MessageCodec
from .leases import ShardLeases, read_view
from .member import ClusterMember, ShardPlacement
from .records import ClusterView, NodeInfo, ShardInfo
from .remote import RemoteMessenger, RemoteStats
from .shards import preference, shard_of

__all__ = [
    "ClusterMember",
    "ClusterView",
    "MessageCodec",
    "NodeInfo",
    "RemoteMessenger",
    "RemoteStats",
    "ShardInfo",
    "ShardLeases",
    "ShardPlacement",
    "preference",
    "read_view",
    "shard_of",
]
