"""Which subject carries which command, and the ids it carries.

A command's subject is ``<prefix>.<tokens>``; the prefix is one or more tokens chosen
per deployment. ``SUBJECTS`` is the contract's table, one template per command, with
``{name}`` marking an id token, plus two admin subjects beyond the contract
(``admin.apikeys.{key_id}.create`` / ``.revoke``, API keys for integrations).
``route`` reads the tokens after the prefix and returns the command and its ids,
validating each id exactly as a body id is validated (so ``*``, ``>``, empty tokens,
non-ASCII and over-long ids are ``invalid_request``).

Lookup is a dict keyed by (token count, first token, last token), unique for every
template, so routing a message costs one dict probe and a few compares; subjects are
routed on every request. Events go to ``<prefix>.events.<entity>.<id>.<type>``
(``event_subject``), stored in the stream ``EVENT_STREAM``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import msgspec

from iceshop.wire.commands import CommandKind
from iceshop.wire.errors import ShopError

__all__ = [
    "DEFAULT_PREFIX",
    "EVENT_STREAM",
    "ID_RULE",
    "SUBJECTS",
    "SUBJECT_IDS",
    "Route",
    "command_subject",
    "event_subject",
    "parse_subject",
    "route",
    "validate_id",
    "validate_prefix",
]

DEFAULT_PREFIX: Final = "iceshop"
EVENT_STREAM: Final = "ICESHOP_EVENTS"
ID_RULE: Final = "must be 1-64 characters of A-Z a-z 0-9 _ -"

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PREFIX_TOKEN = re.compile(r"[A-Za-z0-9_-]+")

SUBJECTS: Final[dict[CommandKind, str]] = {
    CommandKind.BUYER_REGISTER: "buyers.{buyer_id}.register",
    CommandKind.SELLER_REGISTER: "sellers.{seller_id}.register",
    CommandKind.LISTING_UPSERT: "sellers.{seller_id}.listings.upsert",
    CommandKind.INTENT_SUBMIT: "buyers.{buyer_id}.intents.submit",
    CommandKind.INTENT_CANCEL: "buyers.{buyer_id}.intents.{intent_id}.cancel",
    CommandKind.WINDOW_JOIN: "windows.{window_id}.join",
    CommandKind.WINDOW_LEAVE: "windows.{window_id}.leave",
    CommandKind.WINDOW_GET: "windows.{window_id}.get",
    CommandKind.WINDOW_RESERVATIONS: "windows.{window_id}.reservations",
    CommandKind.WINDOWS_LIST: "windows.list",
    CommandKind.DECISION_GET: "decisions.{decision_id}.get",
    CommandKind.OFFER_APPROVE: "sellers.{seller_id}.offers.{offer_id}.approve",
    CommandKind.OFFER_REJECT: "sellers.{seller_id}.offers.{offer_id}.reject",
    CommandKind.ADMIN_WINDOW_CANCEL: "admin.windows.{window_id}.cancel",
    CommandKind.CLUSTER_STATUS: "cluster.status",
    CommandKind.APIKEY_CREATE: "admin.apikeys.{key_id}.create",
    CommandKind.APIKEY_REVOKE: "admin.apikeys.{key_id}.revoke",
}


class Route(msgspec.Struct, frozen=True):
    """A routed command: its kind and the ids its subject carries, by name."""

    kind: CommandKind
    ids: dict[str, str]


def validate_id(value: str, what: str) -> str:
    """Return ``value`` if it is a valid identifier, else raise ``invalid_request``."""
    if _ID.fullmatch(value) is None:
        raise ShopError.invalid(f"{what}: {ID_RULE}", field=what)
    return value


def validate_prefix(prefix: str) -> tuple[str, ...]:
    """Split a subject prefix into tokens, rejecting wildcards and empty tokens."""
    tokens = tuple(prefix.split("."))
    for token in tokens:
        if _PREFIX_TOKEN.fullmatch(token) is None:
            raise ValueError(f"invalid subject prefix {prefix!r}")
    return tokens


# kind, (position, literal) of the inner literal tokens, (position, id name) of the ids
_Pattern = tuple[CommandKind, tuple[tuple[int, str], ...], tuple[tuple[int, str], ...]]


def _compile() -> tuple[dict[tuple[int, str, str], _Pattern], dict[CommandKind, tuple[str, ...]]]:
    table: dict[tuple[int, str, str], _Pattern] = {}
    ids: dict[CommandKind, tuple[str, ...]] = {}
    for kind, template in SUBJECTS.items():
        parts = template.split(".")
        first, last = parts[0], parts[-1]
        assert not first.startswith("{"), template
        assert not last.startswith("{"), template
        key = (len(parts), first, last)
        assert key not in table, f"ambiguous subject templates: {template}"
        inner = tuple((i, p) for i, p in enumerate(parts) if not p.startswith("{"))[1:-1]
        slots = tuple((i, p[1:-1]) for i, p in enumerate(parts) if p.startswith("{"))
        table[key] = (kind, inner, slots)
        ids[kind] = tuple(name for _, name in slots)
    return table, ids


_TABLE, SUBJECT_IDS = _compile()
_ID_MATCH = _ID.fullmatch


def _unknown(tokens: Sequence[str], subject: str | None) -> ShopError:
    shown = ".".join(tokens) if subject is None else subject
    return ShopError.invalid(f"unknown command subject {shown!r}")


def route(tokens: Sequence[str], subject: str | None = None) -> Route:
    """Route the subject tokens after the prefix to a command and its ids.

    ``subject`` (the full subject) is only used in the error message.
    """
    found = _TABLE.get((len(tokens), tokens[0], tokens[-1])) if tokens else None
    if found is None:
        raise _unknown(tokens, subject)
    kind, inner, slots = found
    for i, literal in inner:
        if tokens[i] != literal:
            raise _unknown(tokens, subject)
    ids: dict[str, str] = {}
    for i, name in slots:
        token = tokens[i]
        if _ID_MATCH(token) is None:
            raise ShopError.invalid(f"{name}: {ID_RULE}", field=name)
        ids[name] = token
    return Route(kind, ids)


def parse_subject(subject: str, prefix: str = DEFAULT_PREFIX) -> Route:
    """Route a full subject; one that does not start with ``prefix.`` is unknown."""
    head = prefix + "."
    if not subject.startswith(head):
        raise ShopError.invalid(f"unknown command subject {subject!r}")
    return route(subject[len(head) :].split("."), subject)


def command_subject(kind: CommandKind, prefix: str = DEFAULT_PREFIX, **ids: str) -> str:
    """The subject for ``kind`` with the given ids, e.g. for a client or the CLI."""
    expected = SUBJECT_IDS[kind]
    if set(ids) != set(expected):
        raise TypeError(f"{kind.value} takes ids {expected}, got {tuple(ids)}")
    for name, value in ids.items():
        validate_id(value, name)
    return f"{prefix}.{SUBJECTS[kind].format(**ids)}"


def event_subject(
    entity: str, entity_id: str, event_type: str, prefix: str = DEFAULT_PREFIX
) -> str:
    """``<prefix>.events.<entity>.<id>.<type>``, where every event is published."""
    validate_id(entity_id, f"{entity}_id")
    return f"{prefix}.events.{entity}.{entity_id}.{event_type}"
