"""Reading the audit trail back: an ordered ephemeral consumer on ``ICESHOP_AUDIT``.

A query names an entity kind and/or id (both become the consumer's subject filter, so
the server sends only the matching records), a start time and a count. The consumer is
JetStream's *ordered* one: ephemeral (nothing is left behind on the server), in stream
order, without acks, re-created by the client from the last sequence it saw if a
message goes missing. It lives for one query.

The read ends when it is caught up: the consumer reports how many matching records are
still pending with every message (and at creation, for a query that matches none), so
a query never waits for records that do not exist yet. Records stored meanwhile may or
may not be included.

``since`` is compared with each record's ``at`` (the time of the change, which is what
the reader sees). The server starts the consumer ``SINCE_SLACK_S`` earlier by its own
storage time, which is always a little later than ``at`` (records are published after
their commit); the slack covers the clock skew between nodes and the NATS server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.js.api import ConsumerConfig, DeliverPolicy

from actors.errors import RequestTimeout, TransportError
from actors.nats import NatsTransport
from actors.nats.errors import mapped_errors
from iceshop.audit.emit import audit_filter
from iceshop.audit.record import AuditRecord, decode_record
from iceshop.audit.stream import AUDIT_STREAM
from iceshop.wire import parse_time

__all__ = ["SINCE_SLACK_S", "AuditQuery", "read_audit"]

log = structlog.get_logger("iceshop.audit")

#: How much earlier than ``since`` (by the server's clock) the consumer starts.
SINCE_SLACK_S: Final = 300.0
_HEARTBEAT_S: Final = 2.0

OnRecord = Callable[[AuditRecord, bytes], None]
"""Called with each record, decoded and as stored (JSON)."""


class AuditQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Which records: of entity kind ``entity`` and/or id ``entity_id`` (subject
    tokens), changed at or after ``since`` (epoch seconds), at most ``limit`` of them
    (``None``: all), oldest first."""

    entity: str | None = None
    entity_id: str | None = None
    since: float | None = None
    limit: int | None = None


async def read_audit(
    transport: NatsTransport,
    prefix: str,
    query: AuditQuery,
    on_record: OnRecord,
    *,
    timeout: float = 5.0,  # noqa: ASYNC109 - each JetStream call's and message's deadline
) -> int:
    """Hand every record ``query`` matches to ``on_record``, in stream order; return how
    many. Raises :class:`~actors.errors.TransportError` when the stream does not exist
    or JetStream does not answer (:class:`~actors.errors.RequestTimeout` when a record
    does not arrive within ``timeout``)."""
    if query.limit is not None and query.limit <= 0:
        return 0
    config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    if query.since is not None:
        start = max(0.0, query.since - SINCE_SLACK_S)
        config.deliver_policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = datetime.fromtimestamp(start, UTC)
    js = transport.jetstream(timeout=timeout)
    subject = audit_filter(prefix, query.entity, query.entity_id)
    with mapped_errors("audit read"):
        try:
            sub = await js.subscribe(
                subject,
                stream=AUDIT_STREAM,
                config=config,
                ordered_consumer=True,
                idle_heartbeat=_HEARTBEAT_S,
            )
        except nats.js.errors.NotFoundError as exc:
            raise TransportError(
                f"stream {AUDIT_STREAM} not found (has a node with prefix {prefix!r} started?)"
            ) from exc
    count = 0
    try:
        with mapped_errors("audit read"):
            info = await sub.consumer_info()
        delivered = info.delivered.consumer_seq if info.delivered is not None else 0
        if info.num_pending == 0 and not delivered:
            return 0  # nothing matches
        while query.limit is None or count < query.limit:
            try:
                msg = await sub.next_msg(timeout=timeout)
            except nats.errors.TimeoutError as exc:
                raise RequestTimeout(
                    f"audit read: no record within {timeout:g}s ({count} read)"
                ) from exc
            if _deliver(msg.data, query.since, on_record):
                count += 1
            if msg.metadata.num_pending == 0:
                break
    finally:
        with contextlib.suppress(Exception):  # the consumer is ephemeral: the server
            await sub.unsubscribe()  # drops it soon after in any case
    return count


def _deliver(data: bytes, since: float | None, on_record: OnRecord) -> bool:
    try:
        record = decode_record(data)
        at = parse_time(record.at)
    except ValueError as exc:  # msgspec.DecodeError is a ValueError
        log.warning("not an audit record; skipped", error=str(exc))
        return False
    if since is not None and at < since:
        return False
    on_record(record, data)
    return True
