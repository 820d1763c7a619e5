"""The client verbs, one per command of the contract, as data.

Each verb names its words on the command line (``window join``), the command it sends
and its arguments. Every argument is named exactly as the contract names the subject id
or body field it fills, so the table is checkable against the wire layer: a test walks
every ``CommandKind`` and every field. Whether an argument lands in the subject or in the
body is not written here at all; it follows from ``SUBJECT_IDS``, and the subject itself
comes from ``command_subject``, so the CLI cannot disagree with the node's routing.

Building a request is a pure function of the parsed values (``build_request``): what a
verb would send is testable without NATS. Optional arguments that are not given are left
out of the body, so the node applies the contract's defaults (and a registration, being
an upsert, keeps the stored value). Client-chosen ids that make a command idempotent
(``join_id``, ``intent_id``) are generated when omitted and reported, so a retry after a
timeout can repeat the same id.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from iceshop.wire import SUBJECT_IDS, CommandKind, command_subject, validate_id

__all__ = ["VERBS", "Arg", "Request", "Verb", "build_request", "fresh_id"]


class Arg(msgspec.Struct, frozen=True):
    """One argument: ``name`` is the contract's field or id; ``flag`` ``None`` means positional."""

    name: str
    flag: str | None = None
    type: Callable[[str], Any] = str
    required: bool = False
    help: str = ""
    choices: tuple[str, ...] | None = None
    #: A yes/no field given as ``--flag`` / ``--no-flag``; sent only when given.
    switch: bool = False
    #: When omitted, a fresh id starting with this letter is sent (and reported).
    fresh: str | None = None


class Verb(msgspec.Struct, frozen=True):
    words: tuple[str, ...]
    kind: CommandKind
    help: str
    args: tuple[Arg, ...] = ()


class Request(msgspec.Struct, frozen=True):
    """What a verb sends: the subject, the JSON body, and the ids it generated."""

    kind: CommandKind
    subject: str
    body: dict[str, Any]
    generated: dict[str, str]


def fresh_id(letter: str) -> str:
    """A new client-chosen id such as ``J5f0c2a9e7b14d3c8`` (valid under the contract's rule)."""
    return f"{letter}{secrets.token_hex(8)}"


_MINOR = "in minor units (e.g. kurus: 89900 is 899.00 TRY)"
_PAGE = (
    Arg("limit", "--limit", int, help="page size, 1-500 (default 100)"),
    Arg("cursor", "--cursor", help="next_cursor of the previous page"),
)

VERBS: Final[tuple[Verb, ...]] = (
    Verb(
        ("buyer", "register"),
        CommandKind.BUYER_REGISTER,
        "register a buyer, or replace the fields given",
        (
            Arg("buyer_id"),
            Arg("name", "--name", required=True),
            Arg("phone", "--phone", required=True, help="E.164, e.g. +905551234567"),
            Arg("locale", "--locale", choices=("tr", "en"), help="default tr"),
            Arg(
                "whatsapp_opt_in",
                "--whatsapp-opt-in",
                switch=True,
                help="whether the buyer is told about windows (default no)",
            ),
        ),
    ),
    Verb(
        ("seller", "register"),
        CommandKind.SELLER_REGISTER,
        "register a seller, or replace the fields given",
        (
            Arg("seller_id"),
            Arg("name", "--name", required=True),
            Arg("max_active_windows", "--max-active-windows", int, help="default 3"),
            Arg(
                "auto_approve",
                "--auto-approve",
                switch=True,
                help="approve offers without asking (default yes)",
            ),
        ),
    ),
    Verb(
        ("listing", "upsert"),
        CommandKind.LISTING_UPSERT,
        "create or replace a seller's listing of a product",
        (
            Arg("seller_id"),
            Arg("product_id"),
            Arg("title", "--title", required=True),
            Arg("list_price_minor", "--list-price", int, required=True, help=_MINOR),
            Arg(
                "floor_price_minor",
                "--floor-price",
                int,
                required=True,
                help="lowest acceptable price, " + _MINOR,
            ),
            Arg("stock", "--stock", int, required=True, help="units outside any window"),
            Arg("currency", "--currency", help="ISO 4217 (default TRY)"),
        ),
    ),
    Verb(
        ("intent", "submit"),
        CommandKind.INTENT_SUBMIT,
        "say what a buyer would buy, and up to what price",
        (
            Arg("buyer_id"),
            Arg("intent_id", fresh="I", help="client-chosen id (generated when omitted)"),
            Arg("product_id", "--product", required=True),
            Arg("max_price_minor", "--max-price", int, required=True, help=_MINOR),
            Arg("quantity", "--quantity", int, help="default 1"),
            Arg("ttl_s", "--ttl", float, help="seconds, 60-2592000 (default 86400)"),
        ),
    ),
    Verb(
        ("intent", "cancel"),
        CommandKind.INTENT_CANCEL,
        "withdraw an intent",
        (Arg("buyer_id"), Arg("intent_id")),
    ),
    Verb(
        ("window", "join"),
        CommandKind.WINDOW_JOIN,
        "reserve units in an active window",
        (
            Arg("window_id"),
            Arg("buyer_id", "--buyer", required=True),
            Arg("join_id", "--join", fresh="J", help="client-chosen id (generated when omitted)"),
            Arg("quantity", "--quantity", int, help="default 1"),
        ),
    ),
    Verb(
        ("window", "leave"),
        CommandKind.WINDOW_LEAVE,
        "release a reservation",
        (
            Arg("window_id"),
            Arg("buyer_id", "--buyer", required=True),
            Arg("join_id", "--join", required=True),
        ),
    ),
    Verb(("window", "get"), CommandKind.WINDOW_GET, "show a window", (Arg("window_id"),)),
    Verb(
        ("window", "reservations"),
        CommandKind.WINDOW_RESERVATIONS,
        "list a window's reservations",
        (Arg("window_id"), *_PAGE),
    ),
    Verb(
        ("windows", "list"),
        CommandKind.WINDOWS_LIST,
        "list windows, optionally filtered",
        (
            Arg("state", "--state", choices=("scheduled", "active", "closed", "cancelled")),
            Arg("product_id", "--product"),
            Arg("seller_id", "--seller"),
            *_PAGE,
        ),
    ),
    Verb(
        ("decision", "get"),
        CommandKind.DECISION_GET,
        "show a campaign decision with its reasons and inputs",
        (Arg("decision_id"),),
    ),
    Verb(
        ("offer", "approve"),
        CommandKind.OFFER_APPROVE,
        "approve a pending offer",
        (Arg("seller_id"), Arg("offer_id")),
    ),
    Verb(
        ("offer", "reject"),
        CommandKind.OFFER_REJECT,
        "reject a pending offer",
        (Arg("seller_id"), Arg("offer_id")),
    ),
    Verb(
        ("admin", "window", "cancel"),
        CommandKind.ADMIN_WINDOW_CANCEL,
        "cancel a scheduled or active window, releasing every reservation",
        (Arg("window_id"), Arg("reason", "--reason", required=True)),
    ),
    Verb(("cluster", "status"), CommandKind.CLUSTER_STATUS, "show nodes and shard owners"),
    Verb(
        ("admin", "apikey", "create"),
        CommandKind.APIKEY_CREATE,
        "create an API key for an integration (its secret is shown once); the request "
        "goes to the subject <prefix>.admin.apikeys.<key_id>.create",
        (
            Arg("key_id"),
            Arg("role", "--role", required=True, choices=("buyer", "seller", "admin", "gateway")),
            Arg(
                "principal",
                "--principal",
                help="the id the key acts as (required for buyer and seller keys)",
            ),
            Arg("note", "--note", help="what the key is for"),
        ),
    ),
    Verb(
        ("admin", "apikey", "revoke"),
        CommandKind.APIKEY_REVOKE,
        "revoke an API key; it stops working at once (subject "
        "<prefix>.admin.apikeys.<key_id>.revoke)",
        (Arg("key_id"),),
    ),
)


def build_request(verb: Verb, values: Mapping[str, Any], prefix: str) -> Request:
    """The subject and body ``verb`` sends for the parsed ``values`` (keyed by arg name).

    Raises ``ShopError(invalid_request)`` for an id that breaks the contract's rule, in
    the subject or in the body: no round trip is needed to know the node would refuse it."""
    subject_ids = SUBJECT_IDS[verb.kind]
    ids: dict[str, str] = {}
    body: dict[str, Any] = {}
    generated: dict[str, str] = {}
    for arg in verb.args:
        value = values.get(arg.name)
        if value is None and arg.fresh is not None:
            value = generated[arg.name] = fresh_id(arg.fresh)
        if value is None:
            continue
        if arg.name in subject_ids:
            ids[arg.name] = value
        else:
            if arg.name.endswith("_id"):
                validate_id(value, arg.name)
            body[arg.name] = value
    subject = command_subject(verb.kind, prefix, **ids)
    return Request(verb.kind, subject, body, generated)
