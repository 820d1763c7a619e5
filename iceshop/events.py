"""Publishing a contract event from an actor's turn, in one place.

Every event goes to ``<prefix>.events.<entity>.<id>.<type>`` with the body
``{"event_id", "type", "at", "seq", "data"}``; its ``event_id`` is
``<entity>.<id>.<seq>`` (deterministic, so a replayed turn re-emits the same id and
JetStream drops the duplicate). The actor's outbox publishes it after the turn commits.
"""

from __future__ import annotations

from typing import Any

import msgspec

from actors import PersistentActor
from iceshop.wire import Event, format_time
from iceshop.wire.subjects import event_subject

__all__ = ["emit_event"]

_encoder = msgspec.json.Encoder()


def emit_event(
    actor: PersistentActor,
    prefix: str,
    entity: str,
    entity_id: str,
    event_type: str,
    seq: int,
    at: float | str,
    data: Any,
) -> str:
    """Stage the event in ``actor``'s outbox; returns its ``event_id``. ``at`` is wall
    seconds or an already formatted time."""
    event_id = f"{entity}.{entity_id}.{seq}"
    body = Event(
        event_id=event_id,
        type=event_type,
        at=at if isinstance(at, str) else format_time(at),
        seq=seq,
        data=data,
    )
    actor.emit(
        event_subject(entity, entity_id, event_type, prefix), _encoder.encode(body), id=event_id
    )
    return event_id
