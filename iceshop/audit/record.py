"""One audit record: who did what to which entity, and why.

The audit trail answers an operator's "why was this window proposed", "who cancelled
it", "who approved that offer" without reading code. Each record is a frozen Struct,
stored as JSON in the ``ICESHOP_AUDIT`` stream (see :mod:`iceshop.audit.stream`):

- ``audit_id``: unique and deterministic from the change it records (the same change
  always yields the same id, so a re-published record is dropped as a duplicate);
- ``at``: when the change happened (contract time, UTC);
- ``actor``: who made it: the principal of the command (``{role, id}`` from its
  credential), ``anonymous`` when authentication is off, or ``system/...`` for the
  shop's own doings (``system/campaign`` decides; ``system/clock`` expires offers);
- ``action``: ``<entity>.<verb>``, e.g. ``decision.made``, ``offer.rejected``,
  ``window.cancelled``, ``apikey.revoked``;
- ``entity`` and ``entity_id``: what it was done to (also the record's subject);
- ``why``: the reasons, each ``code``, ``text``, ``value``, ``threshold``: for a decision
  its principal reasons exactly as ``decisions.<id>.get`` returns them, for an admin
  action the ``reason`` the admin gave;
- ``outcome``: the result where there is one (a decision's outcome, a window's state);
- ``refs``: the ids needed to follow the trail (``decision_id``, ``window_id``,
  ``product_id``, ``seller_id``, ``offer_id``, ...);
- ``inputs``: the numbers needed to reconstruct it (a decision's policy inputs, an
  offer's price and quantity, the reservations a cancel released).

Records are facts about the past: fields are only ever added, never renamed.
"""

from __future__ import annotations

from typing import Final

import msgspec

from iceshop.protocol import Principal
from iceshop.wire import Reason
from iceshop.wire.views import Number

__all__ = [
    "ANONYMOUS",
    "SYSTEM_CAMPAIGN",
    "SYSTEM_CLOCK",
    "AuditActor",
    "AuditRecord",
    "actor_of",
    "decode_record",
    "encode_record",
    "given_reason",
]


class AuditActor(msgspec.Struct, frozen=True):
    """Who acted: a principal's ``role`` and ``id`` (its credential's ``sub``)."""

    role: str  # admin | seller | buyer | gateway | anonymous | system
    id: str

    def __str__(self) -> str:
        return f"{self.role}/{self.id}"


ANONYMOUS: Final = AuditActor("anonymous", "anonymous")
"""A command sent to a node with authentication off: nobody can tell who."""
SYSTEM_CAMPAIGN: Final = AuditActor("system", "campaign")
"""The campaign's own decisions."""
SYSTEM_CLOCK: Final = AuditActor("system", "clock")
"""Changes a durable deadline made (an offer nobody answered in time)."""


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One audited change; see the module docstring for each field."""

    audit_id: str
    at: str
    actor: AuditActor
    action: str
    entity: str
    entity_id: str
    why: list[Reason] = []
    outcome: str | None = None
    refs: dict[str, str] = {}
    inputs: dict[str, Number] = {}


def actor_of(principal: Principal | None) -> AuditActor:
    """The actor a command's principal stands for (``anonymous`` without one)."""
    if principal is None:
        return ANONYMOUS
    return AuditActor(principal.role, principal.sub)


def given_reason(reason: str) -> Reason:
    """The free-text reason an admin gave, as a record's ``why``."""
    return Reason(code="given_reason", text=reason, value=None, threshold=None)


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(AuditRecord)


def encode_record(record: AuditRecord) -> bytes:
    return _encoder.encode(record)


def decode_record(data: bytes) -> AuditRecord:
    """A stored record; ``msgspec.DecodeError`` (a ``ValueError``) when it is not one."""
    return _decoder.decode(data)
