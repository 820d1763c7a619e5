"""The ``ICESHOP_AUDIT`` stream: where audit records are kept, append-only.

Subjects ``<prefix>.audit.>`` (one subject per entity: ``<prefix>.audit.<kind>.<id>``),
on file, with ``deny_delete`` and ``deny_purge``: the server refuses to delete a record
or purge the stream, and refuses an update that would lift either flag. Records leave
only by age (``audit_max_age_s``, a year by default). A node creates the stream when it
is missing and leaves an existing one as it is (it warns when that one lets records be
deleted). Who may publish there is the NATS server's business: in ``nats.conf`` only the
``node`` user may, and the ``admin`` user may read it but not delete it.

The de-duplication window is a day (or the retention, when shorter), far longer than the
event stream's two minutes: the outbox of a node that was down publishes its records
again when it comes back, and audit records are few, so remembering their ids is cheap.
"""

from __future__ import annotations

from typing import Final

import nats.js.errors
import structlog
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from actors.nats import NatsTransport
from actors.nats.errors import mapped_errors

__all__ = ["AUDIT_STREAM", "DEDUPE_WINDOW_S", "ensure_audit_stream"]

log = structlog.get_logger("iceshop.audit")

AUDIT_STREAM: Final = "ICESHOP_AUDIT"
#: How long the stream remembers a record's id to drop a re-published copy.
DEDUPE_WINDOW_S: Final = 86_400.0
_STREAM_NAME_IN_USE: Final = 10058


async def ensure_audit_stream(
    transport: NatsTransport,
    prefix: str,
    *,
    replicas: int = 1,
    max_age: float = 365 * 86_400.0,
    timeout: float = 10.0,  # noqa: ASYNC109 - each JetStream API call's deadline
) -> bool:
    """Create the audit stream when it is missing; return whether this call created it.
    Raises :class:`~actors.errors.TransportError` when JetStream does not answer."""
    js = transport.jetstream(timeout=timeout)
    with mapped_errors(f"stream {AUDIT_STREAM}"):
        try:
            info = await js.stream_info(AUDIT_STREAM)
        except nats.js.errors.NotFoundError:
            pass
        else:
            if not (info.config.deny_delete and info.config.deny_purge):
                log.warning(
                    "the audit stream lets records be deleted or purged",
                    stream=AUDIT_STREAM,
                    deny_delete=info.config.deny_delete,
                    deny_purge=info.config.deny_purge,
                )
            return False
        try:
            await js.add_stream(
                StreamConfig(
                    name=AUDIT_STREAM,
                    subjects=[f"{prefix}.audit.>"],
                    retention=RetentionPolicy.LIMITS,
                    discard=DiscardPolicy.OLD,
                    storage=StorageType.FILE,
                    num_replicas=replicas,
                    max_age=max_age,
                    duplicate_window=min(DEDUPE_WINDOW_S, max_age),
                    deny_delete=True,
                    deny_purge=True,
                )
            )
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise
            return False  # another node created it meanwhile
        return True
