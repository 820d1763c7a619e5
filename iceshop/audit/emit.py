"""Staging an audit record in an actor's turn, in one place.

A record goes to ``<prefix>.audit.<entity>.<entity_id>`` through the acting actor's
outbox, so it is stored in the same commit as the change it describes: a change the
client heard ``ok`` for always has its record (the relay publishes it after the commit,
again after a crash), and a turn whose commit failed leaves none. The outbox id, and so
``Nats-Msg-Id``, is the record's ``audit_id``: the stream drops a re-published copy.
"""

from __future__ import annotations

from actors import PersistentActor
from iceshop.audit.record import AuditRecord, encode_record

__all__ = ["audit_filter", "audit_subject", "emit_audit"]


def audit_subject(prefix: str, entity: str, entity_id: str) -> str:
    return f"{prefix}.audit.{entity}.{entity_id}"


def audit_filter(prefix: str, entity: str | None = None, entity_id: str | None = None) -> str:
    """The subject filter for the records of ``entity`` kind and/or ``entity_id``."""
    if entity is None and entity_id is None:
        return f"{prefix}.audit.>"
    return audit_subject(prefix, entity or "*", entity_id or "*")


def emit_audit(actor: PersistentActor, prefix: str, record: AuditRecord) -> None:
    """Publish ``record`` once ``actor``'s turn has committed (see the module docstring)."""
    actor.emit(
        audit_subject(prefix, record.entity, record.entity_id),
        encode_record(record),
        id=record.audit_id,
    )
