"""A shop node: the actors of ``iceshop`` served over NATS with their journal.

``ShopNode(settings)`` is everything one process runs: the actor system on a SQLite
journal, the JetStream outbox for events, one NATS subscription per actor kind, the
read-model projector and the campaign's ear on demand events.
"""

from __future__ import annotations

from iceshop.node.app import ShopNode
from iceshop.node.routing import encode_reply, make_route

__all__ = ["ShopNode", "encode_reply", "make_route"]
