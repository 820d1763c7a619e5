"""The decision audit: every campaign decision, offer answer and admin action, kept
append-only with who, what and why.

- :mod:`iceshop.audit.record`: :class:`AuditRecord`, one record, and who acted
  (:func:`actor_of` a command's principal, or ``system/campaign``, ``system/clock``).
- :mod:`iceshop.audit.actions`: the record of each audited action (``decision_made``,
  ``offer_settled``, ``window_cancelled``, ``apikey_changed``, ``seller_registered``).
- :mod:`iceshop.audit.emit`: :func:`emit_audit`, a record staged in the acting actor's
  outbox, so it is committed with the change and published after it, once per
  ``audit_id``.
- :mod:`iceshop.audit.stream`: the ``ICESHOP_AUDIT`` stream (deny delete, deny purge,
  long retention), created by the node.
- :mod:`iceshop.audit.query`: :func:`read_audit`, the records of a kind, an id, a time
  range, through an ordered ephemeral consumer (``iceshop audit`` on the command line).

Who emits what: the decision actor ``decision.made`` (by ``system/campaign``), the
seller actor ``offer.approved`` / ``offer.rejected`` (by the principal that answered) and
``offer.expired`` (by ``system/clock``, or by the seller whose answer came too late) and
``seller.registered``, the window actor ``window.cancelled``, the API key actor
``apikey.created`` / ``apikey.revoked``.
"""

from __future__ import annotations

from iceshop.audit.actions import (
    apikey_changed,
    decision_made,
    offer_settled,
    seller_registered,
    window_cancelled,
)
from iceshop.audit.emit import audit_filter, audit_subject, emit_audit
from iceshop.audit.query import SINCE_SLACK_S, AuditQuery, read_audit
from iceshop.audit.record import (
    ANONYMOUS,
    SYSTEM_CAMPAIGN,
    SYSTEM_CLOCK,
    AuditActor,
    AuditRecord,
    actor_of,
    decode_record,
    encode_record,
    given_reason,
)
from iceshop.audit.stream import AUDIT_STREAM, DEDUPE_WINDOW_S, ensure_audit_stream

__all__ = [
    "ANONYMOUS",
    "AUDIT_STREAM",
    "DEDUPE_WINDOW_S",
    "SINCE_SLACK_S",
    "SYSTEM_CAMPAIGN",
    "SYSTEM_CLOCK",
    "AuditActor",
    "AuditQuery",
    "AuditRecord",
    "actor_of",
    "apikey_changed",
    "audit_filter",
    "audit_subject",
    "decision_made",
    "decode_record",
    "emit_audit",
    "encode_record",
    "ensure_audit_stream",
    "given_reason",
    "offer_settled",
    "read_audit",
    "seller_registered",
    "window_cancelled",
]
