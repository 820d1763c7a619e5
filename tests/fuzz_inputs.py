"""Fuzz inputs for every command subject, and the oracle that judges what the node made
of each one.

The strategies and the oracle are written from the wire contract (CONTRACT below is the
contract's table, field by field), not derived from ``iceshop.wire``: a decoder that is
too lenient or too strict then disagrees with them instead of agreeing with itself.

A ``Case`` is one request (subject, headers, body) of one of three families:

- ``valid``: a request the contract accepts; it must be routed, with exactly the values
  sent (this keeps the decoder from passing the fuzz by refusing everything);
- a defect name (``DEFECTS``): a valid request with exactly one contract violation (a
  wrong type, a huge number, deep nesting, an oversized body, a bad id in the subject, a
  malformed deadline, ...); it must be refused with ``invalid_request`` (``unavailable``
  for a deadline already past, or ``overloaded`` when the buyer's join / intent rate
  refused it first), or not delivered at all when the subject is not one the node
  serves. These are the only inputs sent to a live node, so every reply must be
  ``ok: false`` and nothing may change;
- ``wild``: anything (mutated, random JSON, random bytes, ambiguous corners such as
  ``-0``, duplicate keys or lone surrogates); it must not crash, and whatever the node
  makes of it must be consistent (a routed request is a contract subject with a body
  that satisfies the contract).

``RouteTable`` is the in-process level: the node's routes captured from ``ShopNode``
exactly as it subscribes them, and a dispatcher that picks the subscription NATS would
deliver a subject to, as the binding does. ``judge`` returns the bucket an outcome falls
in (``routed``, ``unrouted`` or an error code) or raises ``FuzzFailure`` with a
reproducer.
"""

from __future__ import annotations

import base64
import calendar
import functools
import hashlib
import hmac
import json
import math
import re
import string
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import anyio
import msgspec
from hypothesis import strategies as st

from actors import VirtualClock
from actors.nats import Routed
from iceshop.auth.gate import Gate
from iceshop.auth.keyring import KeyRing, TokenKey
from iceshop.auth.service import NodeAuth
from iceshop.node import ShopNode
from iceshop.node.routing import check_command
from iceshop.protocol import Request
from iceshop.settings import Settings
from iceshop.wire import (
    COMMAND_TYPES,
    SUBJECTS,
    CommandKind,
    ShopError,
    decode_command,
    encode_error,
)

__all__ = [
    "BAD_CREDENTIALS",
    "CONTRACT",
    "CREDENTIALS",
    "DEFECTS",
    "EPOCH",
    "ERROR_CODES",
    "GOOD_CREDENTIALS",
    "KINDS",
    "MAX_BODY",
    "PREFIX",
    "Accepted",
    "ApiKey",
    "AuthCase",
    "Case",
    "Crash",
    "Credentials",
    "FuzzFailure",
    "RouteTable",
    "Unrouted",
    "World",
    "allowed",
    "any_case",
    "api_key_records",
    "auth_case",
    "contract_route",
    "credential",
    "defect_pairs",
    "defective_case",
    "fixed_api_keys",
    "format_deadline",
    "good_token",
    "judge",
    "judge_auth",
    "refused_at_routing",
    "valid_case",
    "wild_case",
]

# -- the contract, written out -----------------------------------------------------------

PREFIX: Final = "iceshop"
EPOCH: Final = 1_800_000_000.0
MAX_INT: Final = 2**53 - 1
MAX_BODY: Final = 64 * 1024
MAX_TEXT: Final = 200
TTL_MIN, TTL_MAX = 60, 2_592_000
MAX_LIMIT: Final = 500
LOCALES: Final = ("tr", "en")
WINDOW_STATES: Final = ("scheduled", "active", "closed", "cancelled")
ERROR_CODES: Final = frozenset(
    {
        "invalid_request",
        "unauthorized",
        "forbidden",
        "unknown_buyer",
        "unknown_seller",
        "unknown_product",
        "unknown_intent",
        "unknown_window",
        "unknown_join",
        "unknown_decision",
        "unknown_offer",
        "window_not_active",
        "window_closed",
        "sold_out",
        "insufficient_stock",
        "limit_exceeded",
        "idempotency_conflict",
        "overloaded",
        "unavailable",
        "internal",
    }
)
RETRYABLE: Final = frozenset({"overloaded", "unavailable", "internal"})
#: What a refusal at routing may be (authentication off): a bad request, a deadline
#: already past, or a buyer over its join / intent rate. Nothing else is decided there.
ROUTING_CODES: Final = frozenset({"invalid_request", "unavailable", "overloaded"})
#: The commands with a per-buyer rate (``overloaded`` is their answer beyond it).
RATED: Final = frozenset({"window.join", "intent.submit"})

ID_ALPHABET: Final = string.ascii_letters + string.digits + "_-"
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PHONE = re.compile(r"\+[1-9][0-9]{1,14}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_DEADLINE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?Z"
)
DEADLINE_HEADER: Final = "Iceshop-Deadline"


class Field(NamedTuple):
    name: str
    type: str  # id text phone locale bool count money quantity currency ttl limit cursor state
    required: bool


class Spec(NamedTuple):
    template: tuple[str, ...]  # tokens after the prefix; "{name}" marks an id
    fields: tuple[Field, ...]

    @property
    def slots(self) -> tuple[tuple[int, str], ...]:
        return tuple((i, t[1:-1]) for i, t in enumerate(self.template) if t.startswith("{"))

    def subject(self, ids: Mapping[str, str]) -> str:
        tokens = [ids[t[1:-1]] if t.startswith("{") else t for t in self.template]
        return ".".join([PREFIX, *tokens])


def _spec(template: str, *fields: tuple[str, str, bool]) -> Spec:
    return Spec(tuple(template.split(".")), tuple(Field(*f) for f in fields))


_PAGING = (("limit", "limit", False), ("cursor", "cursor", False))

#: The contract's command table: kind (CommandKind's value) -> subject and body fields.
CONTRACT: Final[dict[str, Spec]] = {
    "buyer.register": _spec(
        "buyers.{buyer_id}.register",
        ("name", "text", True),
        ("phone", "phone", True),
        ("locale", "locale", False),
        ("whatsapp_opt_in", "bool", False),
    ),
    "seller.register": _spec(
        "sellers.{seller_id}.register",
        ("name", "text", True),
        ("max_active_windows", "count", False),
        ("auto_approve", "bool", False),
    ),
    "listing.upsert": _spec(
        "sellers.{seller_id}.listings.upsert",
        ("product_id", "id", True),
        ("title", "text", True),
        ("list_price_minor", "money", True),
        ("floor_price_minor", "money", True),
        ("stock", "count", True),
        ("currency", "currency", False),
    ),
    "intent.submit": _spec(
        "buyers.{buyer_id}.intents.submit",
        ("intent_id", "id", True),
        ("product_id", "id", True),
        ("quantity", "quantity", False),
        ("max_price_minor", "money", True),
        ("ttl_s", "ttl", False),
    ),
    "intent.cancel": _spec("buyers.{buyer_id}.intents.{intent_id}.cancel"),
    "window.join": _spec(
        "windows.{window_id}.join",
        ("join_id", "id", True),
        ("buyer_id", "id", True),
        ("quantity", "quantity", False),
    ),
    "window.leave": _spec(
        "windows.{window_id}.leave", ("join_id", "id", True), ("buyer_id", "id", True)
    ),
    "window.get": _spec("windows.{window_id}.get"),
    "window.reservations": _spec("windows.{window_id}.reservations", *_PAGING),
    "windows.list": _spec(
        "windows.list",
        ("state", "state", False),
        ("product_id", "id", False),
        ("seller_id", "id", False),
        *_PAGING,
    ),
    "decision.get": _spec("decisions.{decision_id}.get"),
    "offer.approve": _spec("sellers.{seller_id}.offers.{offer_id}.approve"),
    "offer.reject": _spec("sellers.{seller_id}.offers.{offer_id}.reject"),
    "admin.window.cancel": _spec("admin.windows.{window_id}.cancel", ("reason", "text", True)),
    "cluster.status": _spec("cluster.status"),
}
#: Subjects the node serves beyond the contract (docs/shop.md lists them): fuzzed for
#: their subject and the body defects that hold whatever their fields are.
EXTENSIONS: Final[dict[str, Spec]] = {
    str(kind): _spec(template) for kind, template in SUBJECTS.items() if str(kind) not in CONTRACT
}
KINDS: Final = tuple(CONTRACT) + tuple(EXTENSIONS)
SPECS: Final = {**CONTRACT, **EXTENSIONS}
#: Kinds answered by a handler that ignores ``Iceshop-Deadline`` (docs/shop.md, 3.9).
DEADLINE_IGNORED: Final = frozenset({"windows.list", "cluster.status"})


def contract_route(subject: str) -> tuple[str, dict[str, str]] | None:
    """The contract's kind and ids of a full subject, or None if it names no command."""
    tokens = subject.split(".")
    if tokens[0] != PREFIX:
        return None
    tokens = tokens[1:]
    for kind, spec in SPECS.items():
        if len(tokens) != len(spec.template):
            continue
        ids: dict[str, str] = {}
        for token, part in zip(tokens, spec.template, strict=True):
            if part.startswith("{"):
                if _ID.fullmatch(token) is None:
                    break
                ids[part[1:-1]] = token
            elif token != part:
                break
        else:
            return kind, ids
    return None


def _valid_field(ftype: str, value: Any) -> bool:
    if ftype in ("count", "money", "quantity", "limit"):
        low, high = {"quantity": (1, MAX_INT), "limit": (1, MAX_LIMIT)}.get(ftype, (0, MAX_INT))
        return type(value) is int and low <= value <= high
    if ftype == "bool":
        return type(value) is bool
    if ftype == "ttl":
        ok = type(value) in (int, float) and math.isfinite(value)
        return ok and TTL_MIN <= value <= TTL_MAX
    if type(value) is not str:
        return False
    match ftype:
        case "id":
            return _ID.fullmatch(value) is not None
        case "text" | "cursor":
            return len(value) <= MAX_TEXT and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
        case "phone":
            return _PHONE.fullmatch(value) is not None
        case "currency":
            return _CURRENCY.fullmatch(value) is not None
        case "locale":
            return value in LOCALES
        case "state":
            return value in WINDOW_STATES
    raise AssertionError(f"unknown field type {ftype}")


def body_violations(kind: str, body: Any) -> list[str]:
    """Where a decoded body breaks the contract (absent and null fields are skipped)."""
    if kind in EXTENSIONS:
        return []
    spec = CONTRACT[kind]
    problems = []
    names = {f.name for f in spec.fields}
    extra = set(type(body).__struct_fields__) - names
    if extra:
        problems.append(f"fields beyond the contract: {sorted(extra)}")
    for f in spec.fields:
        value = getattr(body, f.name, msgspec.UNSET)
        if value is msgspec.UNSET or value is None:
            if f.required:
                problems.append(f"{f.name}: required, absent")
            continue
        if not _valid_field(f.type, value):
            problems.append(f"{f.name}: {value!r:.80} is not a valid {f.type}")
    if kind == "listing.upsert":
        floor, top = body.floor_price_minor, body.list_price_minor
        if isinstance(floor, int) and isinstance(top, int) and floor > top:
            problems.append("floor_price_minor exceeds list_price_minor")
    return problems


def parse_deadline(value: str) -> float | None:
    """Epoch seconds of a well-formed deadline (ASCII digits, 0-9 fraction digits, a real
    UTC time from 1970 on, no leap second), else None."""
    m = _DEADLINE.fullmatch(value.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if not (year >= 1970 and 1 <= month <= 12 and hour <= 23 and minute <= 59 and second <= 59):
        return None
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    fraction = m.group(7)
    whole = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    return whole + (float(fraction) if fraction else 0.0)


def _ambiguous_deadline(value: str) -> bool:
    """Corners the contract does not settle: non-ASCII digits, leap seconds, pre-1970."""
    if any(c.isdigit() and not c.isascii() for c in value):
        return True
    m = _DEADLINE.fullmatch(value.strip())
    return m is not None and (int(m.group(6)) == 60 or int(m.group(1)) < 1970)


def format_deadline(epoch: float) -> str:
    """``YYYY-MM-DDTHH:MM:SS.sssZ``, truncated to the millisecond (never later than epoch)."""
    millis = math.floor(epoch * 1000)
    t = time.gmtime(millis // 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{millis % 1000:03d}Z"


# -- cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """Ids worth aiming at (the seeded shop's), and the node's clock reading. Hashable,
    so the strategies built for one world are built once."""

    ids: tuple[tuple[str, tuple[str, ...]], ...] = ()
    now: float = EPOCH

    @classmethod
    def of(cls, now: float = EPOCH, **ids: Sequence[str]) -> World:
        return cls(tuple((name, tuple(pool)) for name, pool in sorted(ids.items())), now)

    def pool(self, name: str) -> tuple[str, ...]:
        return dict(self.ids).get(name, ())


@dataclass(frozen=True)
class Case:
    kind: str  # the command the case was built from
    defect: str  # "valid", "wild" or one of DEFECTS
    subject: str
    headers: dict[str, str]
    payload: bytes
    values: dict[str, Any] = field(default_factory=dict)  # valid: the fields sent

    def reproducer(self) -> str:
        body = self.payload if len(self.payload) <= 300 else self.payload[:300] + b"..."
        return (
            f"[{self.defect} / {self.kind}] subject={self.subject[:300]!r} "
            f"headers={self.headers!r:.300} payload({len(self.payload)} bytes)={body!r}"
        )


Pair = tuple[bytes, bytes]  # raw JSON key, raw JSON value


def _dumps(value: Any, ascii_only: bool = True) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _key(name: str, escaped: bool = False) -> bytes:
    if escaped:  # "\u0071\u0075..." decodes to the same name
        return ('"' + "".join(f"\\u{ord(c):04x}" for c in name) + '"').encode()
    return _dumps(name)


def _name(key: bytes) -> Any:
    return json.loads(key)


def _render(pairs: Sequence[Pair], ws: bytes = b"") -> bytes:
    inner = (b"," + ws).join(ws + k + ws + b":" + ws + v for k, v in pairs)
    return b"{" + inner + ws + b"}"


def _pad(payload: bytes, size: int) -> bytes:
    """``payload`` (a JSON object) grown to ``size`` bytes with whitespace after ``{``."""
    missing = size - len(payload)
    if missing <= 0 or not payload.startswith(b"{"):
        return payload
    return b"{" + b" " * missing + payload[1:]


def _printable(value: str) -> str:
    """What NATS can carry in a subject token: no whitespace or control bytes."""
    return "".join(c for c in value if ord(c) > 0x20)


_WS = st.sampled_from([b"", b"", b" ", b"\n", b"\t", b"\r\n  "])
VALID_IDS = st.text(ID_ALPHABET, min_size=1, max_size=64)
_CHARS = st.characters(exclude_categories=["Cs"])
TEXTS = st.text(_CHARS, min_size=1, max_size=MAX_TEXT)
_BAD_ID_CHARS = st.characters(exclude_characters=ID_ALPHABET, exclude_categories=["Cs"])
_TRICKY_IDS = [
    "*", ">", ".", "a.b", "a b", "B1\n", "\nB1", "B1\x00", "B1\t", "é", "\uff211", "\u212a",
    "İd", "٣", "B1 ", "\u200b", "B\u0301", "B1%2E", "B1/x", "B1+", "$B1", "_INBOX.x", "a" * 65,
]  # fmt: skip


def _insert(t: tuple[str, str, int]) -> str:
    base, bad, at = t
    at = min(at, len(base))
    return base[:at] + bad + base[at:]


@functools.cache
def bad_ids(nats_safe: bool = False) -> st.SearchStrategy[str]:
    """Identifiers the contract refuses (empty, too long, a character outside the set)."""
    s = st.one_of(
        st.just(""),
        st.text(ID_ALPHABET, min_size=65, max_size=300),
        st.tuples(
            VALID_IDS, st.text(_BAD_ID_CHARS, min_size=1, max_size=3), st.integers(0, 64)
        ).map(_insert),
        st.sampled_from(_TRICKY_IDS),
    )
    if nats_safe:  # NATS protocol limits, not the node's
        s = s.map(_printable)
    return s.filter(lambda v: _ID.fullmatch(v) is None)


@functools.cache
def _ids(name: str, world: World) -> st.SearchStrategy[str]:
    pool = world.pool(name)
    if pool:  # mostly the world's own ids: a defect that slipped through would show
        return st.one_of(st.sampled_from(pool), st.sampled_from(pool), VALID_IDS)
    return VALID_IDS


@functools.cache
def _texts_over(limit: int) -> st.SearchStrategy[str]:
    unit = st.text(_CHARS, min_size=1, max_size=8)
    return st.tuples(unit, st.integers(limit + 1, limit + 2000)).map(
        lambda t: t[0] * (t[1] // len(t[0]) + 1)
    )


_TTL_FORMS = [(100, b"1e2"), (60, b"6E1"), (2_592_000, b"2.592e6"), (60, b"60.0")]


def _plain(s: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, bytes]]:
    return s.map(lambda v: (v, _dumps(v)))


@functools.cache
def _valid_value(ftype: str, name: str, world: World) -> st.SearchStrategy[tuple[Any, bytes]]:
    """A valid value and its JSON text."""
    match ftype:
        case "id":
            return _plain(_ids(name, world))
        case "text":
            return st.tuples(TEXTS, st.booleans()).map(lambda t: (t[0], _dumps(t[0], t[1])))
        case "phone":
            return _plain(st.from_regex(_PHONE, fullmatch=True))
        case "currency":
            return _plain(st.one_of(st.just("TRY"), st.from_regex(_CURRENCY, fullmatch=True)))
        case "locale":
            return _plain(st.sampled_from(LOCALES))
        case "state":
            return _plain(st.sampled_from(WINDOW_STATES))
        case "bool":
            return _plain(st.booleans())
        case "count" | "money":
            return _plain(st.one_of(st.integers(0, 10_000), st.sampled_from([0, MAX_INT])))
        case "quantity":
            return _plain(st.one_of(st.integers(1, 5), st.integers(1, MAX_INT)))
        case "limit":
            return _plain(st.integers(1, MAX_LIMIT))
        case "ttl":
            return st.one_of(
                _plain(st.integers(TTL_MIN, TTL_MAX)),
                _plain(st.floats(TTL_MIN, TTL_MAX)),
                st.sampled_from(_TTL_FORMS),
            )
    raise AssertionError(f"no valid {ftype} ({name})")  # cursor: only from a reply


_NOT_STRING = st.one_of(
    st.sampled_from([b"0", b"-1", b"1.5", b"true", b"false", b"[]", b"{}", b'["a"]', b'{"a":"b"}']),
    st.integers().map(lambda i: str(i).encode()),
)
_NOT_BOOL = st.sampled_from([b"0", b"1", b'"true"', b'"false"', b"[]", b"{}", b"1.0", b'""'])
_NOT_INT = st.one_of(
    st.sampled_from(
        [
            b'"1"',
            b'"0"',
            b"true",
            b"false",
            b"[]",
            b"{}",
            b"[1]",
            b"1.0",
            b"0.0",
            b"1e3",
            b"1E2",
            b"2.5e1",
            b"-0.0",
            b"1.5",
            b'"NaN"',
        ]
    ),
    # Every JSON float has a fraction or an exponent: never an integer by the contract.
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: json.dumps(f).encode()),
)
_NOT_NUMBER = st.sampled_from([b'"100"', b'"1e2"', b"true", b"false", b"[]", b"{}", b"[100]"])
_HUGE = st.sampled_from(
    [b"1e400", b"-1e400", b"1" + b"0" * 400, b"-1" + b"0" * 400, str(2**64).encode(),
     str(2**53).encode(), str(-(2**63)).encode(), b"NaN", b"Infinity", b"-Infinity",
     b"1e-400", b"0.1e9999", b"123456789" * 40]
)  # fmt: skip


def _wrong_type(ftype: str) -> st.SearchStrategy[bytes]:
    if ftype in ("count", "money", "quantity", "limit"):
        return _NOT_INT
    if ftype == "ttl":
        return _NOT_NUMBER
    if ftype == "bool":
        return _NOT_BOOL
    return _NOT_STRING


def _bad_int(low: int, high: int) -> st.SearchStrategy[bytes]:
    out = st.one_of(st.integers(max_value=low - 1), st.integers(min_value=high + 1))
    extra = [b"-1", str(high + 1).encode(), str(2**64).encode(), b"1" + b"0" * 400]
    if low >= 1:
        extra += [b"0", b"-0"]
    return st.one_of(out.map(lambda i: str(i).encode()), st.sampled_from(extra))


def _not_matching(
    pattern: re.Pattern[str] | None, allowed: Sequence[str], tricky: list[str]
) -> st.SearchStrategy[bytes]:
    def bad(v: str) -> bool:
        return v not in allowed and (pattern is None or pattern.fullmatch(v) is None)

    return st.one_of(st.sampled_from(tricky), st.text(_CHARS, max_size=20).filter(bad)).map(_dumps)


@functools.cache
def _out_of_range(ftype: str) -> st.SearchStrategy[bytes]:
    """A value of the right JSON type that the contract still refuses."""
    match ftype:
        case "id":
            return bad_ids().map(_dumps)
        case "text" | "cursor":
            return _texts_over(MAX_TEXT).map(_dumps)
        case "phone":
            tricky = ["", "+", "+0123", "905551112233", "+90 555 111", "+1234567890123456",
                      "+٩٠٥٥٥", "+90555\n", "+\uff19\uff10", "++905551112233", "+90-5"]  # fmt: skip
            return _not_matching(_PHONE, (), tricky)
        case "currency":
            tricky = ["", "try", "TRYY", "TR", "ÄÖÜ", "TRY\n", "\uff34\uff32\uff39", "Try", " TRY"]
            return _not_matching(_CURRENCY, (), tricky)
        case "locale":
            return _not_matching(None, LOCALES, ["", "TR", "EN", "tr ", "tr\n", "de", "tr_TR"])
        case "state":
            tricky = ["", "Active", "ACTIVE", "active\n", " closed", "open"]
            return _not_matching(None, WINDOW_STATES, tricky)
        case "bool":
            return _NOT_BOOL
        case "count" | "money":
            return _bad_int(0, MAX_INT)
        case "quantity":
            return _bad_int(1, MAX_INT)
        case "limit":
            return _bad_int(1, MAX_LIMIT)
        case "ttl":
            return st.one_of(
                st.floats(max_value=TTL_MIN - 0.001, allow_infinity=False).map(_dumps),
                st.floats(min_value=TTL_MAX + 0.001, allow_infinity=False).map(_dumps),
                st.sampled_from([b"59", b"0", b"-0.0", b"2592001", b"1e400", b"-1e400", b"NaN"]),
            )
    raise AssertionError(f"no out-of-range {ftype}")


def _not_an_object_json(payload: bytes) -> bool:
    """True when ``payload`` is certainly no body: not blank, and not a UTF-8 JSON object."""
    if not payload.strip(b" \t\r\n"):
        return False  # an empty body counts as {}
    try:
        return not isinstance(json.loads(payload.decode("utf-8")), dict)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return True


_NOT_UTF8 = st.sampled_from(
    [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf5\x80\x80\x80", b"\xe2\x82", b"\x80"]
)
_NOT_JSON = st.sampled_from(
    [b"{", b"}", b"{,}", b"{'a': 1}", b'{"a" 1}', b"{a:1}", b"NaN", b"\xef\xbb\xbf{}",
     b"{}{}", b"{} x", b"{}\x00", b"\x00{}", b'{"a":1,}', b'{"a":01}', b'{"a":.5}']
)  # fmt: skip
_SCALARS = [b"null", b"true", b"false", b"0", b"-1", b"1e400", b'""', b"[]", b"[{}]"]
_UNKNOWN_KEYS = st.one_of(
    st.sampled_from(["Quantity", "quantity ", "name\x00", "", "__proto__", "ok", "x" * 1000]),
    st.text(_CHARS, max_size=30),
)
_ANY_VALUE = st.sampled_from([b"1", b'"x"', b"null", b"true", b"[]", b"{}"])
_DEPTHS = st.integers(1000, 30_000)


def _nested(shape: int, depth: int) -> bytes:
    """1000+ levels of arrays, objects or both, under 64 KiB."""
    if shape == 0:
        return b"[" * depth + b"]" * depth
    if shape == 1:
        depth //= 3
        return b'{"a":' * depth + b"1" + b"}" * depth
    depth //= 5
    return b'[{"a":' * depth + b"1" + b"}]" * depth


BODY_DEFECTS: Final = (
    "field_type",  # a field of the wrong JSON type
    "field_value",  # the right type, out of range or badly formed (ids, phone, ...)
    "huge_number",  # 1e400, 10**400, 2**64, NaN, Infinity in a field
    "missing_field",  # a required field absent or null
    "unknown_field",  # a field the command does not have
    "duplicate_key",  # a key twice, both values invalid
    "floor_above_list",  # listing.upsert's cross-field rule
    "not_json",  # random or truncated bytes
    "not_object",  # a JSON array, string, number, true, false or null
    "deep_nesting",  # 1000+ levels of arrays or objects
    "bad_utf8",  # invalid UTF-8 inside a string
    "oversized",  # a valid body padded over 64 KiB
)
SUBJECT_DEFECTS: Final = ("subject_id", "subject_unknown")
HEADER_DEFECTS: Final = ("deadline_malformed", "deadline_passed")
DEFECTS: Final = BODY_DEFECTS + SUBJECT_DEFECTS + HEADER_DEFECTS


@functools.cache
def _applicable(kind: str) -> tuple[str, ...]:
    spec = SPECS[kind]
    drop: set[str] = set()
    if not spec.fields:
        drop |= {"field_type", "field_value", "huge_number"}
    if not any(f.required for f in spec.fields):
        drop.add("missing_field")
    if kind != "listing.upsert":
        drop.add("floor_above_list")
    if not spec.slots:
        drop.add("subject_id")
    if kind in DEADLINE_IGNORED:
        drop |= set(HEADER_DEFECTS)
    if kind in EXTENSIONS:  # fields unknown here: keep what holds whatever they are
        drop.add("duplicate_key")
        fields = msgspec.structs.fields(COMMAND_TYPES[CommandKind(kind)])
        if any(f.required for f in fields):  # {} is refused anyway, deadline or not
            drop.add("deadline_passed")
    return tuple(d for d in DEFECTS if d not in drop)


def defect_pairs() -> list[tuple[str, str]]:
    """Every (kind, defect) that applies: the fuzz's coverage goal."""
    return [(k, d) for k in KINDS for d in _applicable(k)]


@functools.cache
def _kind_and_defect(kind: str | None, defect: str | None) -> st.SearchStrategy[tuple[str, str]]:
    """Every (kind, defect) pair equally likely: rare kinds get their share."""
    pairs = [(k, d) for k, d in defect_pairs() if kind in (None, k) and defect in (None, d)]
    if not pairs:
        raise ValueError(f"no defect {defect} for {kind}")
    return st.sampled_from(pairs)


@functools.cache
@st.composite
def _valid_fields(draw: st.DrawFn, kind: str, world: World) -> tuple[dict[str, Any], list[Pair]]:
    """Valid fields of ``kind``: their values, and the body's (key, value) texts in a
    random order (some keys spelled with \\u escapes, some absent fields sent as null)."""
    chosen: dict[str, tuple[Any, bytes]] = {}
    nulls: list[str] = []
    for f in SPECS[kind].fields:
        if f.required or (f.type != "cursor" and draw(st.booleans())):
            chosen[f.name] = draw(_valid_value(f.type, f.name, world))
        elif draw(st.integers(0, 5)) == 0:
            nulls.append(f.name)  # null means absent
    if kind == "listing.upsert" and chosen["floor_price_minor"][0] > chosen["list_price_minor"][0]:
        chosen["floor_price_minor"], chosen["list_price_minor"] = (
            chosen["list_price_minor"],
            chosen["floor_price_minor"],
        )
    pairs = [(name, raw) for name, (_, raw) in chosen.items()] + [(n, b"null") for n in nulls]
    order = draw(st.permutations(range(len(pairs)))) if len(pairs) > 1 else range(len(pairs))
    rendered = [(_key(pairs[i][0], draw(st.integers(0, 15)) == 0), pairs[i][1]) for i in order]
    return {name: value for name, (value, _) in chosen.items()}, rendered


_HEADER_NAMES = st.sampled_from(
    ["Authorization", "authorization", "AUTHORIZATION", "traceparent", "Traceparent",
     "X-Fuzz", "Nats-Msg-Id", "tracestate"]
)  # fmt: skip
_DEADLINE_NAMES = st.sampled_from([DEADLINE_HEADER, "iceshop-deadline", "ICESHOP-DEADLINE"])
_JUNK = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=60)
_AUTH_VALUES = st.one_of(
    _JUNK,
    _JUNK.map(lambda v: "Bearer " + v),
    st.sampled_from(["Bearer", "Bearer ", "bearer x.y.z", "Basic Zm9vOmJhcg==", "Bearer e30.e30."]),
)
_TRACEPARENTS = st.one_of(
    _JUNK,
    st.from_regex(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", fullmatch=True),
    st.sampled_from(["00-" + "0" * 32 + "-" + "0" * 16 + "-00", "ff-x-y-z", ""]),
)


@functools.cache
@st.composite
def _noise_headers(draw: st.DrawFn, world: World, deadline_ok: bool) -> dict[str, str]:
    """Headers that never make a request invalid: credentials (ignored with auth off),
    trace context, unknown names, and maybe a deadline still in the future."""
    headers: dict[str, str] = {}
    for _ in range(draw(st.integers(0, 3))):
        name = draw(_HEADER_NAMES)
        lower = name.lower()
        if lower == "authorization":
            headers[name] = draw(_AUTH_VALUES)
        elif lower in ("traceparent", "tracestate"):
            headers[name] = draw(_TRACEPARENTS)
        else:
            headers[name] = draw(_JUNK)
    if deadline_ok and draw(st.booleans()):
        ahead = draw(st.floats(1.0, 1e8))
        headers[draw(_DEADLINE_NAMES)] = format_deadline(world.now + ahead)
    return headers


_MALFORMED_DEADLINES = st.sampled_from(
    ["", "now", "1e9", "2030-01-31T12:00:00.000z", "2030-01-31 12:00:00.000Z",
     "2030-01-31T12:00:00.000+00:00", "2030-1-31T12:00:00.000Z", "2030-13-01T00:00:00.000Z",
     "2030-02-30T00:00:00.000Z", "2030-01-32T00:00:00.000Z", "2030-01-31T24:00:00.000Z",
     "2030-01-31T12:60:00.000Z", "2030-01-31T12:00:00.Z", "2030-01-31T12:00:00.0000000000Z",
     "+2030-01-31T12:00:00.000Z", "2030-01-31T12:00:00.000ZZ", "12:00:00", "1800000000"]
)  # fmt: skip
_MALFORMED_DEADLINE = st.one_of(
    _MALFORMED_DEADLINES,
    _JUNK.filter(lambda v: parse_deadline(v) is None and not _ambiguous_deadline(v)),
)
_ID_TOKENS = st.one_of(VALID_IDS, st.sampled_from(["*", ">", "windows", "list", "get", "admin"]))
_OTHER_PREFIXES = st.sampled_from(["Iceshop", "iceshop2", "ice", "_INBOX", "$JS", ""])
_RANDOM_SUBJECTS = st.text(_CHARS, min_size=1, max_size=80)


@functools.cache
@st.composite
def _unknown_subject(draw: st.DrawFn, kind: str, world: World, nats_safe: bool) -> str:
    """A subject no command has: a literal changed, a token added or removed, random."""
    spec = SPECS[kind]
    parts = spec.subject({name: draw(_ids(name, world)) for _, name in spec.slots}).split(".")
    how = draw(st.integers(0, 5))
    if how == 0:  # one literal token changed
        literal = [i for i, t in enumerate([PREFIX, *spec.template]) if not t.startswith("{")]
        i = draw(st.sampled_from(literal))
        parts[i] = draw(st.sampled_from([parts[i].upper(), parts[i] + "x", parts[i][:-1], "*"]))
    elif how == 1:  # a token added
        parts.insert(draw(st.integers(1, len(parts))), draw(VALID_IDS))
    elif how == 2 and len(parts) > 2:  # a token removed
        del parts[draw(st.integers(1, len(parts) - 1))]
    elif how == 3:  # random tokens under the prefix
        parts = [PREFIX, *draw(st.lists(_ID_TOKENS, min_size=1, max_size=7))]
    elif how == 4:
        parts = draw(_RANDOM_SUBJECTS).split(".")
    else:
        parts[0] = draw(_OTHER_PREFIXES)
    subject = ".".join(parts)
    if nats_safe:
        subject = _printable(subject)[:400] or "x"
    if contract_route(subject) is not None:
        subject += ".x"  # still a defect
    return subject


@dataclass
class _Draft:
    """A valid request being given its one defect."""

    kind: str
    spec: Spec
    ids: dict[str, str]
    headers: dict[str, str]
    pairs: list[Pair]
    ws: bytes

    @property
    def fields(self) -> dict[str, Field]:
        return {f.name: f for f in self.spec.fields}

    def body(self) -> bytes:
        return _render(self.pairs, self.ws)

    def with_field(self, name: str, *raws: bytes) -> bytes:
        """The body with ``name`` set to ``raws`` (more than one: a duplicate key)."""
        kept = [(k, v) for k, v in self.pairs if _name(k) != name]
        return _render([*kept, *((_key(name), raw) for raw in raws)], self.ws)


def _field_defect(draw: st.DrawFn, d: _Draft, defect: str) -> bytes:
    name = draw(st.sampled_from(sorted(d.fields)))
    ftype = d.fields[name].type
    if defect == "field_type":
        return d.with_field(name, draw(_wrong_type(ftype)))
    if defect == "field_value":
        return d.with_field(name, draw(_out_of_range(ftype)))
    return d.with_field(name, draw(_HUGE))


def _body_defect(draw: st.DrawFn, d: _Draft, defect: str) -> bytes:
    names = sorted(d.fields)
    match defect:
        case "field_type" | "field_value" | "huge_number":
            return _field_defect(draw, d, defect)
        case "missing_field":
            name = draw(st.sampled_from([f.name for f in d.spec.fields if f.required]))
            kept = [(k, v) for k, v in d.pairs if _name(k) != name]
            if draw(st.booleans()):
                kept.append((_key(name), b"null"))
            return _render(kept, d.ws)
        case "unknown_field":
            slots = [n for _, n in d.spec.slots] or ["buyer_id"]
            key = draw(st.one_of(st.sampled_from(slots), _UNKNOWN_KEYS))
            if key in d.fields:
                key += "_"
            return _render([*d.pairs, (_dumps(key, draw(st.booleans())), draw(_ANY_VALUE))], d.ws)
        case "duplicate_key":
            if not names:
                return _render([*d.pairs, (b'"x"', b"1"), (b'"x"', b"2")], d.ws)
            name = draw(st.sampled_from(names))
            wrong = _wrong_type(d.fields[name].type)
            return d.with_field(name, draw(wrong), draw(wrong))
        case "floor_above_list":
            top = draw(st.integers(0, MAX_INT - 1))
            floor = draw(st.integers(top + 1, MAX_INT))
            kept = [(k, v) for k, v in d.pairs if not _name(k).endswith("price_minor")]
            extra = [
                (_key("list_price_minor"), _dumps(top)),
                (_key("floor_price_minor"), _dumps(floor)),
            ]
            return _render(kept + extra, d.ws)
        case "not_json":
            valid = d.body()
            how = draw(st.integers(0, 2))
            if how == 0:
                payload = draw(st.binary(min_size=1, max_size=256))
            elif how == 1:
                payload = valid[: draw(st.integers(1, max(1, len(valid) - 1)))]
            else:
                payload = draw(_NOT_JSON)
            return payload if _not_an_object_json(payload) else b"{" + payload
        case "not_object":
            how = draw(st.integers(0, len(_SCALARS) + 2))
            if how == 0:
                return b"[" + d.body() + b"]"
            if how == 1:
                return _dumps(d.body().decode())
            if how == 2:
                return _nested(0, draw(_DEPTHS))
            return _SCALARS[how - 3]
        case "deep_nesting":
            nested = _nested(draw(st.integers(0, 2)), draw(_DEPTHS))
            where = draw(st.integers(0, 2))
            if names and where == 0:
                return d.with_field(draw(st.sampled_from(names)), nested)
            if where == 1:
                return _render([*d.pairs, (_key("nested"), nested)], d.ws)
            return nested
        case "bad_utf8":
            bad = draw(_NOT_UTF8)
            strings = [f.name for f in d.spec.fields if f.type not in ("bool", "ttl")]
            in_a_field = draw(st.booleans())
            if strings and in_a_field:
                return d.with_field(draw(st.sampled_from(strings)), b'"a' + bad + b'b"')
            return _render([*d.pairs, (b'"k' + bad + b'"', b"1")], d.ws)
        case "oversized":
            return _pad(d.body(), draw(st.integers(MAX_BODY + 1, MAX_BODY + 256 * 1024)))
    raise AssertionError(defect)


@functools.cache
@st.composite
def defective_case(
    draw: st.DrawFn,
    world: World = World(),
    nats_safe: bool = False,
    kind: str | None = None,
    defect: str | None = None,
) -> Case:
    """A valid request with one contract violation: it must be refused. ``nats_safe``
    keeps to what the NATS protocol carries unchanged (no whitespace or control bytes in
    subjects, subjects well under the control-line limit, header values without CR, LF
    or the surrounding ASCII blanks NATS strips). ``kind`` and ``defect`` choose."""
    kind, defect = draw(_kind_and_defect(kind, defect))
    spec = SPECS[kind]
    ids = {name: draw(_ids(name, world)) for _, name in spec.slots}
    headers = draw(_noise_headers(world, kind not in DEADLINE_IGNORED))
    _, pairs = draw(_valid_fields(kind, world))
    d = _Draft(kind, spec, ids, headers, pairs, draw(_WS))
    subject = spec.subject(ids)
    payload = _body_defect(draw, d, defect) if defect in BODY_DEFECTS else d.body()
    if defect == "subject_id":
        _, name = draw(st.sampled_from(spec.slots))
        subject = spec.subject({**ids, name: draw(bad_ids(nats_safe))})
        if contract_route(subject) is not None:  # a dotted id that spells another command
            subject = spec.subject({**ids, name: "*"})
    elif defect == "subject_unknown":
        subject = draw(_unknown_subject(kind, world, nats_safe))
    elif defect in HEADER_DEFECTS:
        headers = {k: v for k, v in headers.items() if k.lower() != "iceshop-deadline"}
        if defect == "deadline_passed":
            behind = draw(st.one_of(st.floats(0.001, 60.0), st.floats(0.001, world.now)))
            headers[draw(_DEADLINE_NAMES)] = format_deadline(world.now - behind)
        else:
            headers[draw(_DEADLINE_NAMES)] = draw(_MALFORMED_DEADLINE)
    if nats_safe:
        headers = {k: _nats_header(v) for k, v in headers.items()}
        value = _deadline_value(headers)
        if defect == "deadline_malformed" and (value is None or parse_deadline(value) is not None):
            headers = {k: v for k, v in headers.items() if k.lower() != "iceshop-deadline"}
            headers[DEADLINE_HEADER] = "now"
    return Case(kind, defect, subject, headers, payload)


def _nats_header(value: str) -> str:
    """A header value as the receiving NATS client will read it."""
    return value.replace("\r", "").replace("\n", "").strip(" \t\x0b\x0c")


@functools.cache
@st.composite
def valid_case(draw: st.DrawFn, world: World = World(), kind: str | None = None) -> Case:
    """A request the contract accepts, with its values: it must be routed as sent."""
    kind = kind or draw(st.sampled_from(tuple(CONTRACT)))
    spec = CONTRACT[kind]
    ids = {name: draw(_ids(name, world)) for _, name in spec.slots}
    values, pairs = draw(_valid_fields(kind, world))
    payload = _render(pairs, draw(_WS))
    if not pairs and draw(st.booleans()):
        payload = b""  # an empty body counts as {}
    elif draw(st.integers(0, 9)) == 0:  # exactly at the limit, or one byte under it
        payload = _pad(payload, MAX_BODY - draw(st.integers(0, 1)))
    headers = draw(_noise_headers(world, True))
    return Case(kind, "valid", spec.subject(ids), headers, payload, values)


_ALL_FIELDS = sorted({f.name for s in CONTRACT.values() for f in s.fields})
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.one_of(st.text(max_size=10), st.sampled_from(_ALL_FIELDS)), inner, max_size=5
        )
    ),
    max_leaves=20,
)
_TWISTS = st.sampled_from(
    [("quantity", b"-0"), ("max_active_windows", b"-0"), ("stock", b"-0"), ("name", b'""'),
     ("name", b'"\\ud800"'), ("title", b'"\\udfff\\ud800"'), ("reason", b'"a\\u0000b"'),
     ("join_id", b'"J\\u0000"'), ("buyer_id", b'"\\u0042\\u0031"'), ("ttl_s", b"60"),
     ("ttl_s", b"2592000.0"), ("limit", b"500"), ("cursor", b'""'), ("cursor", b'"x"'),
     ("quantity", b"1.0"), ("stock", b"0e0"), ("limit", b"5E0")]
)  # fmt: skip
_ODD_BODIES = st.sampled_from([b" ", b"\n", b"null", b"\xef\xbb\xbf{}", b"{}", b'{"":1}'])
_WILD_DEADLINES = st.one_of(
    st.sampled_from(
        ["٢٠٣٠-01-31T12:00:00.000Z", "2030-01-31T12:00:00Z", "2030-01-31T23:59:60.000Z",
         "1969-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z", "2030-01-31T12:00:00.123456789Z",
         " 2030-01-31T12:00:00.000Z ", "0000-01-01T00:00:00.000Z"]
    ),
    _JUNK,
)  # fmt: skip
_WILD_TOKENS = st.one_of(VALID_IDS, bad_ids(), st.sampled_from(["windows", "list", "*", ">", ""]))


def _mutate(draw: st.DrawFn, payload: bytes, values: Mapping[str, Any]) -> bytes:
    how = draw(st.integers(0, 5))
    if how == 0:
        return draw(st.binary(max_size=300))
    if how == 1:
        return json.dumps(draw(_JSON_VALUES)).encode("utf-8", "surrogatepass")
    if how == 2 and payload:  # flip, drop or insert a byte
        i = draw(st.integers(0, len(payload) - 1))
        b = bytes([draw(st.integers(0, 255))])
        return [payload[:i] + b + payload[i + 1 :], payload[:i] + payload[i + 1 :],
                payload[:i] + b + payload[i:]][draw(st.integers(0, 2))]  # fmt: skip
    if how == 3 and payload.startswith(b"{") and len(payload) < MAX_BODY:  # a twisted field
        name, raw = draw(_TWISTS)
        rest = payload[1:]
        return b"{" + _key(name) + b":" + raw + (b"" if rest.strip() == b"}" else b",") + rest
    if how == 4 and payload.startswith(b"{") and values:  # duplicate key, one of them valid
        return b"{" + _key(draw(st.sampled_from(sorted(values)))) + b':"dup",' + payload[1:]
    return draw(_ODD_BODIES)


@functools.cache
@st.composite
def wild_case(draw: st.DrawFn, world: World = World(), kind: str | None = None) -> Case:
    """Anything: it must not crash, and what the node makes of it must be consistent."""
    bases = [defective_case(world, kind=kind)]
    if kind is None or kind in CONTRACT:
        bases.append(valid_case(world, kind))
    base = draw(st.one_of(bases))
    subject, headers, payload = base.subject, dict(base.headers), base.payload
    what = draw(st.integers(0, 3))
    if what == 0:
        payload = _mutate(draw, payload, base.values)
    elif what == 1:
        headers[draw(_DEADLINE_NAMES)] = draw(_WILD_DEADLINES)
    elif what == 2:
        subject = ".".join([PREFIX, *draw(st.lists(_WILD_TOKENS, min_size=1, max_size=6))])
    else:
        payload = _mutate(draw, payload, base.values)
        headers[draw(_DEADLINE_NAMES)] = draw(_WILD_DEADLINES)
    return Case(base.kind, "wild", subject, headers, payload)


@functools.cache
def any_case(world: World = World(), kind: str | None = None) -> st.SearchStrategy[Case]:
    """Mostly defects (the interesting refusals), some valid requests, some wild ones."""
    defective = defective_case(world, kind=kind)
    options = [defective, defective, wild_case(world, kind)]
    if kind is None or kind in CONTRACT:
        options.append(valid_case(world, kind))
    return st.one_of(options)


# -- the node's routes, in process -------------------------------------------------------


class Unrouted:
    """No subscription of the node matches the subject: NATS answers "no responders"."""

    def __repr__(self) -> str:
        return "Unrouted()"


class Crash(NamedTuple):
    error: BaseException
    trace: str


class Accepted(NamedTuple):
    """A handler subject (windows.list, cluster.status) whose body decoded."""

    kind: str
    body: Any


Outcome = Routed | bytes | Unrouted | Accepted | Crash


def _matches(pattern: Sequence[str], tokens: Sequence[str]) -> bool:
    for i, p in enumerate(pattern):
        if p == ">":
            return len(tokens) > i
        if i >= len(tokens) or (p != "*" and p != tokens[i]):
            return False
    return len(tokens) == len(pattern)


class _Recorder:
    """Stands in for the NATS binding while the node declares what it serves."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, Any]] = []
        self.handlers: list[str] = []

    async def serve(self, kind: str, subject: str, route: Any, *args: Any, **kw: Any) -> None:
        self.routes.append((subject, route))

    async def serve_handler(self, subject: str, *args: Any, **kw: Any) -> None:
        self.handlers.append(subject)


class RouteTable:
    """The node's routes, called exactly as the binding calls them."""

    def __init__(
        self,
        routes: list[tuple[str, Any]],
        handlers: list[str],
        clock: VirtualClock,
        gate: Gate | None = None,
    ):
        self.routes = [(s.split("."), self._skip(s), r) for s, r in routes]
        self.handlers = {s: contract_route(s) for s in handlers}
        self.clock = clock
        #: With authentication on: the gate the handlers (windows.list, ...) ask first.
        self.gate = gate

    @staticmethod
    def _skip(subject: str) -> int:
        n = 0
        for token in subject.split("."):
            if token in ("*", ">"):
                break
            n += 1
        return n

    @classmethod
    def from_node(
        cls, clock: VirtualClock | None = None, creds: Credentials | None = None
    ) -> RouteTable:
        """Capture the routes a ``ShopNode`` subscribes: authentication off, or, given
        ``creds``, on, with their token keys and API keys."""
        clock = clock or VirtualClock(epoch=EPOCH)
        settings = Settings(
            auth="off" if creds is None else "on", data_dir="unused", node_id="fuzz"
        )
        node = ShopNode(settings, clock=clock)
        recorder = _Recorder()

        async def capture() -> None:
            if creds is None:
                # As ShopNode.__aenter__ does: with auth off the gate keeps only the rates.
                node.auth = await NodeAuth.create(settings, node.data_dir, clock)
            else:  # the ring and records the node would read from its keys and journal
                ring = KeyRing([
                    TokenKey.hs256(HS_KID, creds.hs_secret),
                    TokenKey.ed25519(ED_KID, creds.ed_private()),
                ])  # fmt: skip
                node.auth = NodeAuth(settings, clock, ring=ring)
                node.auth.apikeys.replace_all(api_key_records(creds.api_keys, clock.time()))
            await node._serve(recorder)  # type: ignore[arg-type]

        anyio.run(capture)
        gate = None if creds is None or node.auth is None else node.auth.gate
        return cls(recorder.routes, recorder.handlers, clock, gate)

    def dispatch(self, subject: str, headers: Mapping[str, str], payload: bytes) -> Outcome:
        """What the node makes of a request, before any actor sees it."""
        tokens = subject.split(".")
        if "" in tokens:
            return Unrouted()  # NATS delivers no subject with an empty token
        lowered = {k.lower(): v for k, v in headers.items()}
        found = self.handlers.get(subject)
        if found is not None:  # the handler's first step; it answers errors the same way
            try:
                if self.gate is not None:
                    body, _ = check_command(self.gate, CommandKind(found[0]), lowered, payload)
                    return Accepted(found[0], body)
                return Accepted(found[0], decode_command(CommandKind(found[0]), payload))
            except ShopError as exc:
                return encode_error(exc)
            except Exception as exc:
                return Crash(exc, traceback.format_exc())
        for pattern, skip, route in self.routes:
            if _matches(pattern, tokens):
                try:  # a route answers refusals itself: anything raised is a crash
                    result: Routed | bytes = route(tokens[skip:], lowered, payload)
                except Exception as exc:
                    return Crash(exc, traceback.format_exc())
                return result
        return Unrouted()


# -- the oracle ---------------------------------------------------------------------------


class FuzzFailure(AssertionError):
    pass


class _Error(msgspec.Struct):
    code: str
    message: str
    retryable: bool
    details: dict[str, Any] | None = None


class _Reply(msgspec.Struct):
    ok: bool
    error: _Error | None = None
    data: Any = None


_reply = msgspec.json.Decoder(_Reply)


def error_code(reply: bytes) -> str:
    """The code of a contract error reply; FuzzFailure for anything else."""
    try:
        decoded = _reply.decode(reply)
    except msgspec.DecodeError as exc:
        raise FuzzFailure(f"reply is not the contract's envelope: {exc}: {reply[:200]!r}") from exc
    if decoded.ok or decoded.error is None:
        raise FuzzFailure(f"expected a refusal, got {reply[:300]!r}")
    error = decoded.error
    if error.code not in ERROR_CODES:
        raise FuzzFailure(f"error code {error.code!r} is not the contract's")
    if error.retryable != (error.code in RETRYABLE) or not error.message:
        raise FuzzFailure(f"malformed error {error!r}")
    return error.code


def _deadline_value(headers: Mapping[str, str]) -> str | None:
    value = None
    for name, v in headers.items():  # as the binding sees them: later spellings win
        if name.lower() == "iceshop-deadline":
            value = v
    return value


def expected_codes(case: Case) -> frozenset[str]:
    """A defect is refused as ``invalid_request``; a deadline already past as
    ``unavailable``, unless the buyer's rate (checked first) refused it already."""
    if case.defect == "deadline_passed":
        return frozenset({"unavailable", "overloaded"} if case.kind in RATED else {"unavailable"})
    return frozenset({"invalid_request"})


def _check_routed(case: Case, kind: str, body: Any, routed: Routed | None, now: float) -> None:
    found = contract_route(case.subject)
    if found is None or found[0] != kind:
        raise FuzzFailure(f"routed as {kind}, the contract says {found}")
    if type(body) is not COMMAND_TYPES[CommandKind(kind)]:
        raise FuzzFailure(f"{kind} body decoded as {type(body).__name__}")
    if problems := body_violations(kind, body):
        raise FuzzFailure(f"accepted a body that breaks the contract: {problems}")
    deadline = _deadline_value(case.headers)
    if routed is not None:
        request = routed.message
        ids = found[1]
        rest = {k: v for k, v in ids.items() if request.ids.get(k) != v}
        fixed = not rest and kind in EXTENSIONS  # one actor for all (API keys)
        if set(request.ids) - set(ids) or (list(rest.values()) != [routed.key] and not fixed):
            raise FuzzFailure(f"key {routed.key!r} and ids {request.ids} for subject ids {ids}")
        if deadline is not None and not _ambiguous_deadline(deadline):
            at = parse_deadline(deadline)
            if at is None or at <= now:
                raise FuzzFailure(f"routed despite the deadline {deadline!r}")
            if routed.deadline is None:
                raise FuzzFailure("a future deadline was dropped")
        elif deadline is None and routed.deadline is not None:
            raise FuzzFailure(f"a deadline {routed.deadline} from nowhere")
    if case.defect == "valid":
        for name, value in case.values.items():
            got = getattr(body, name)
            if got != value or (type(got) is bool) != (type(value) is bool):
                raise FuzzFailure(f"{name}: sent {value!r:.80}, decoded {got!r:.80}")


def judge(case: Case, outcome: Outcome, now: float = EPOCH) -> str:
    """The bucket of ``outcome`` (routed, unrouted or an error code), or FuzzFailure."""
    if isinstance(outcome, Crash):
        raise FuzzFailure(f"the route raised {outcome.error!r}\n{outcome.trace}")
    if isinstance(outcome, Unrouted):
        if contract_route(case.subject) is not None:
            raise FuzzFailure("a contract subject has no subscription")
        if case.defect == "valid":
            raise FuzzFailure("a valid request was not delivered")
        return "unrouted"
    if isinstance(outcome, Routed | Accepted):
        if case.defect not in ("valid", "wild"):
            raise FuzzFailure(f"accepted a request with a defect ({case.defect})")
        if isinstance(outcome, Routed):
            if not isinstance(outcome.message, Request):
                raise FuzzFailure(f"routed message is {outcome.message!r:.200}")
            kind = str(outcome.message.kind)
            _check_routed(case, kind, outcome.message.body, outcome, now)
        else:
            _check_routed(case, outcome.kind, outcome.body, None, now)
        return "routed"
    code = error_code(outcome)
    if code not in ROUTING_CODES:
        raise FuzzFailure(f"{code} is not decided at routing")
    if code == "overloaded" and case.kind not in RATED:
        raise FuzzFailure(f"overloaded for a command without a rate: {outcome[:300]!r}")
    if case.defect == "valid" and code != "overloaded":
        raise FuzzFailure(f"refused a valid request: {outcome[:300]!r}")
    if case.defect in ("valid", "wild"):
        if code == "unavailable":
            deadline = _deadline_value(case.headers)
            at = None if deadline is None else parse_deadline(deadline)
            if deadline is None or (at is not None and at > now):
                raise FuzzFailure(f"unavailable without a past deadline: {outcome[:300]!r}")
        return code
    if code not in expected_codes(case):
        raise FuzzFailure(f"expected {sorted(expected_codes(case))}, got {outcome[:300]!r}")
    return code


# -- authentication on ---------------------------------------------------------------------
#
# The same requests, each with one credential (or none), sent to routes whose gate has
# authentication on. A credential is one of CREDENTIALS: a good one (a JWT signed with a
# key the node holds, or an active API key) speaks for a principal, a bad one must be
# refused. The oracle follows the contract's precedence: ``unauthorized`` (bad or missing
# credentials, whatever else is wrong), then ``invalid_request`` (the defects above), then
# ``forbidden`` (a principal outside its rights, written out from the contract's Security
# section in ``allowed``, not taken from ``iceshop.auth``); a routed request carries its
# principal. Tokens are assembled here (header, claims, signature: HMAC-SHA256 or
# Ed25519 from the standard libraries), not with the shop's ``mint`` or pyjwt.

ROLES: Final = ("buyer", "seller", "admin", "gateway")
AUDIENCE: Final = "iceshop"
LEEWAY_S: Final = 30  # the contract's
MAX_TOKEN: Final = 8192  # a longer bearer value is refused unread (docs/shop.md)
HS_KID: Final = "fuzz-hs"
ED_KID: Final = "fuzz-ed"
HS_SECRET: Final = b"fuzz-hs256-secret-0123456789abcdef0123456789abcdef"
ED_SEED: Final = bytes(range(32))

#: Credentials that speak for a principal.
GOOD_CREDENTIALS: Final = ("jwt_hs256", "jwt_eddsa", "apikey")
#: Credentials that must be refused as ``unauthorized``.
BAD_CREDENTIALS: Final = (
    "missing",  # no Authorization header
    "not_bearer",  # another scheme, or Bearer with nothing after it
    "junk",  # Bearer and random text
    "garbage_base64",  # three base64url segments of random bytes or JSON
    "forged",  # the node's kid, another secret or private key
    "expired",  # exp more than the leeway ago
    "not_yet_valid",  # nbf more than the leeway ahead
    "wrong_kid",  # a kid the node does not hold, none, or not a string
    "alg_mismatch",  # alg none, or the other key's algorithm
    "wrong_audience",  # aud absent or another audience
    "bad_exp",  # exp absent or not a number
    "bad_role",  # role absent or not one of the four
    "bad_sub",  # sub absent or not an id
    "unicode",  # a valid token with a non-ASCII character in it, or non-ASCII text
    "huge",  # longer than the limit, garbage or properly signed
    "apikey_unknown",  # a well-formed isk_ key with an id the node does not have
    "apikey_wrong_secret",  # a known key id, another secret
    "apikey_revoked",  # a key that was revoked
    "apikey_malformed",  # isk_ and anything that is not <id>_<64 hex>
)
CREDENTIALS: Final = GOOD_CREDENTIALS + BAD_CREDENTIALS
_AUTH_NAMES = st.sampled_from(["Authorization", "authorization", "AUTHORIZATION"])
_SCHEMES = st.sampled_from(["Bearer", "Bearer", "bearer", "BEARER"])


@dataclass(frozen=True)
class ApiKey:
    key: str  # isk_<key_id>_<secret>
    role: str
    principal: str
    revoked: bool = False

    @property
    def key_id(self) -> str:
        return self.key[4:].rpartition("_")[0]


@functools.cache
def _ed25519(seed: bytes) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(seed)


@dataclass(frozen=True)
class Credentials:
    """What the node under test trusts: its two token keys (fixed, so every worker and
    every run agrees) and its API keys. Hashable: strategies are built once per value."""

    api_keys: tuple[ApiKey, ...] = ()
    hs_secret: bytes = HS_SECRET
    ed_seed: bytes = ED_SEED

    def ed_private(self) -> Any:
        return _ed25519(self.ed_seed)

    def key_files(self) -> dict[str, bytes]:
        """The node's key directory: ``<kid>.key`` files."""
        from cryptography.hazmat.primitives import serialization

        pem = self.ed_private().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return {f"{HS_KID}.key": self.hs_secret + b"\n", f"{ED_KID}.key": pem}

    def active(self) -> tuple[ApiKey, ...]:
        return tuple(k for k in self.api_keys if not k.revoked)

    def revoked(self) -> tuple[ApiKey, ...]:
        return tuple(k for k in self.api_keys if k.revoked)


def fixed_api_keys() -> tuple[ApiKey, ...]:
    """API keys with secrets derived from their ids (in process: the same in every
    worker); :func:`api_key_records` is what the node stores for them."""
    out = []
    for key_id, role, principal, revoked in (
        ("fz-gw", "gateway", "fz-gw", False),
        ("fz-b1", "buyer", "B1", False),
        ("fz-s1", "seller", "S1", False),
        ("fz-adm", "admin", "fz-adm", False),
        ("fz-rev", "gateway", "fz-rev", True),
        ("fz-rev-adm", "admin", "fz-rev-adm", True),
    ):
        secret = hashlib.sha256(b"fuzz secret " + key_id.encode()).hexdigest()
        out.append(ApiKey(f"isk_{key_id}_{secret}", role, principal, revoked))
    return tuple(out)


def api_key_records(keys: Sequence[ApiKey], now: float) -> list[Any]:
    """The stored form of ``keys`` (salted SHA-256 of the secret, as docs/shop.md says)."""
    from iceshop.auth.apikeys import ApiKeyRecord

    records = []
    for k in keys:
        secret = k.key.rpartition("_")[2]
        salt = hashlib.sha256(b"salt " + k.key_id.encode()).digest()[:16]
        records.append(
            ApiKeyRecord(
                key_id=k.key_id,
                role=k.role,
                principal=k.principal,
                salt=salt,
                digest=hashlib.sha256(salt + secret.encode()).digest(),
                note=None,
                created_at=now - 3600,
                revoked_at=now - 60 if k.revoked else None,
            )
        )
    return records


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _by_hand(header: Mapping[str, Any], claims: Mapping[str, Any], sign: Any = None) -> str:
    """A JWT in compact form: ``sign(signing_input)`` gives the signature bytes (no
    ``sign``: an empty signature)."""
    head = json.dumps(header, separators=(",", ":")).encode()
    body = json.dumps(claims, separators=(",", ":")).encode()
    signing = _b64(head) + "." + _b64(body)
    signature = sign(signing.encode("ascii")) if sign is not None else b""
    return signing + "." + _b64(signature)


def _hs(secret: bytes) -> Any:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


def allowed(role: str, sub: str, kind: str, ids: Mapping[str, str], buyer_in_body: Any) -> bool:
    """Whether routing lets ``role``/``sub`` send ``kind`` (the contract's Security
    section; for reservations and decisions routing lets any seller through and the
    actor checks that it owns the window or offer)."""
    if role == "admin":
        return True
    if kind in ("buyer.register", "intent.submit", "intent.cancel"):
        return role == "gateway" or (role == "buyer" and sub == ids.get("buyer_id"))
    if kind in ("window.join", "window.leave"):
        return role == "gateway" or (role == "buyer" and sub == buyer_in_body)
    if kind in ("listing.upsert", "offer.approve", "offer.reject"):
        return role == "seller" and sub == ids.get("seller_id")
    if kind in ("window.get", "windows.list"):
        return True
    if kind in ("window.reservations", "decision.get"):
        return role == "seller"
    return False  # seller registration, admin subjects, cluster.status, API keys


@functools.cache
def _subs(world: World) -> st.SearchStrategy[str]:
    pool = world.pool("buyer_id") + world.pool("seller_id")
    if pool:
        return st.one_of(st.sampled_from(pool), st.sampled_from(pool), VALID_IDS)
    return st.one_of(st.sampled_from(["B1", "S1", "X1"]), VALID_IDS)


# Registered claims with the types RFC 7519 gives them (a token with, say, a numeric
# jti is not a valid JWT), and private claims of any JSON type. Sampled, not generated:
# generating text is most of what a token would cost.
_EXTRA_CLAIMS: st.SearchStrategy[dict[str, Any]] = st.sampled_from([
    {}, {}, {}, {"iat": 1_700_000_000}, {"iss": "https://idp.example", "jti": "j-1"},
    {"iss": "", "jti": "\u00e9"}, {"scope": "shop", "x": None}, {"x": [True, 1, "a"]},
    {"role2": "admin", "admin": True}, {"sub_": "B1", "kid": "other"},
])  # fmt: skip


def _claims(draw: st.DrawFn, now: float, sub: Any, role: Any) -> dict[str, Any]:
    """Claims of a token good at ``now`` (within the leeway at its edges)."""
    claims: dict[str, Any] = dict(draw(_EXTRA_CLAIMS))
    claims.update(sub=sub, role=role, aud=draw(st.sampled_from([AUDIENCE, [AUDIENCE, "x"]])))
    claims["exp"] = int(now) + draw(st.one_of(st.integers(-LEEWAY_S + 1, 5), st.integers(1, 10**7)))
    if draw(st.booleans()):
        claims["nbf"] = int(now) + draw(st.integers(-(10**6), LEEWAY_S - 1))
    return claims


def _sign(creds: Credentials, claims: Mapping[str, Any], ed: bool) -> str:
    """A token signed with the node's key (RFC 7515 compact form, assembled here)."""
    if ed:
        return _by_hand({"alg": "EdDSA", "kid": ED_KID, "typ": "JWT"}, claims,
                        creds.ed_private().sign)  # fmt: skip
    return _by_hand({"alg": "HS256", "kid": HS_KID, "typ": "JWT"}, claims, _hs(creds.hs_secret))


def good_token(
    creds: Credentials, sub: str, role: str, now: float, *, ttl: int = 10**7, ed: bool = False
) -> str:
    """A token the node accepts for ``sub`` acting as ``role`` (for the shop's own calls)."""
    return _sign(creds, {"sub": sub, "role": role, "aud": AUDIENCE, "exp": int(now) + ttl}, ed)


_NON_ASCII = st.text(
    st.characters(min_codepoint=0x80, exclude_categories=["Cs", "Cc", "Zs", "Zl", "Zp"]),
    min_size=1,
    max_size=8,
)
_B64_TEXT = st.text(string.ascii_letters + string.digits + "-_", max_size=200)


@functools.cache
@st.composite
def credential(
    draw: st.DrawFn, creds: Credentials, world: World, label: str | None = None
) -> tuple[str, str | None, tuple[str, str] | None]:
    """``(label, token, principal)``: the bearer value (None: no credential, or, for
    ``not_bearer``, the whole header value in ``label``'s place below) and, for a good
    credential, the ``(sub, role)`` it speaks for."""
    label = label or draw(st.sampled_from(CREDENTIALS))
    now = world.now
    sub = draw(_subs(world))
    role = draw(st.sampled_from(ROLES))
    ed = draw(st.booleans())
    if label in ("jwt_hs256", "jwt_eddsa"):
        token = _sign(creds, _claims(draw, now, sub, role), label == "jwt_eddsa")
        return label, token, (sub, role)
    if label == "apikey":
        key = draw(st.sampled_from(creds.active()))
        return label, key.key, (key.principal, key.role)
    if label in ("missing", "not_bearer"):
        return label, None, None
    if label == "junk":
        return label, draw(_JUNK.filter(lambda v: v.strip() != "")), None
    if label == "garbage_base64":
        parts = [
            draw(st.one_of(_B64_TEXT, st.binary(max_size=120).map(_b64),
                           _JSON_VALUES.map(lambda v: _b64(json.dumps(v).encode()))))
            for _ in range(draw(st.integers(2, 4)))
        ]  # fmt: skip
        return label, ".".join(parts) or ".", None
    claims = _claims(draw, now, sub, role)
    good_header = {"alg": "EdDSA", "kid": ED_KID} if ed else {"alg": "HS256", "kid": HS_KID}
    if label == "forged":
        if ed:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            seed = draw(st.binary(min_size=32, max_size=32).filter(lambda b: b != creds.ed_seed))
            other = Ed25519PrivateKey.from_private_bytes(seed)
            token = _by_hand(good_header, claims, other.sign)
        else:
            secret = draw(st.binary(min_size=0, max_size=64).filter(lambda b: b != creds.hs_secret))
            token = _by_hand(good_header, claims, _hs(secret))
        if draw(st.booleans()):  # or a real token with its claims swapped for others
            signed = _sign(creds, _claims(draw, now, sub, role), ed).split(".")
            other_claims = dict(claims, role="admin", sub=draw(VALID_IDS))
            signed[1] = _b64(json.dumps(other_claims).encode())
            token = ".".join(signed)
    elif label == "expired":
        claims["exp"] = int(now) - LEEWAY_S - 1 - draw(st.integers(0, 10**8))
        token = _sign(creds, claims, ed)
    elif label == "not_yet_valid":
        claims["nbf"] = int(now) + LEEWAY_S + 1 + draw(st.integers(0, 10**8))
        token = _sign(creds, claims, ed)
    elif label == "wrong_kid":
        kid = draw(
            st.one_of(VALID_IDS, _JUNK, st.none(), st.integers(), st.just([HS_KID])).filter(
                lambda k: k not in (HS_KID, ED_KID)
            )
        )
        header: dict[str, Any] = {"alg": "HS256"}
        if kid is not None:
            header["kid"] = kid
        token = _by_hand(header, claims, _hs(creds.hs_secret))
    elif label == "alg_mismatch":
        how = draw(st.integers(0, 3))
        if how == 0:  # unsigned
            token = _by_hand(
                {"alg": "none", "kid": draw(st.sampled_from([HS_KID, ED_KID]))}, claims
            )
        elif how == 1:  # HS256 under the Ed25519 key's kid, keyed with its public bytes
            from cryptography.hazmat.primitives import serialization

            public = creds.ed_private().public_key()
            material = draw(st.sampled_from([
                public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
                public.public_bytes(serialization.Encoding.PEM,
                                    serialization.PublicFormat.SubjectPublicKeyInfo),
            ]))  # fmt: skip
            token = _by_hand({"alg": "HS256", "kid": ED_KID}, claims, _hs(material))
        elif how == 2:  # EdDSA under the HS256 key's kid
            token = _by_hand({"alg": "EdDSA", "kid": HS_KID}, claims, creds.ed_private().sign)
        else:  # another algorithm name, signed with the right secret
            alg = draw(st.sampled_from(["HS384", "HS512", "RS256", "ES256", "hs256", "", "EDDSA"]))
            token = _by_hand({"alg": alg, "kid": HS_KID}, claims, _hs(creds.hs_secret))
    elif label == "wrong_audience":
        aud = draw(st.one_of(st.none(), VALID_IDS.filter(lambda a: a != AUDIENCE),
                             st.just(["x", "y"]), st.just("Iceshop"), st.integers()))  # fmt: skip
        if aud is None:
            del claims["aud"]
        else:
            claims["aud"] = aud
        token = _sign(creds, claims, ed)
    elif label == "bad_exp":
        exp: Any = draw(st.sampled_from([None, "9999999999", True, [], {}, "", None]))
        if exp is None:
            del claims["exp"]
        else:
            claims["exp"] = exp
        token = _sign(creds, claims, ed)
    elif label == "bad_role":
        bad = draw(st.one_of(st.none(), st.sampled_from(["root", "Admin", "ADMIN", "", "buyer ",
                    "administrator", "*"]), st.integers(), st.just(["admin"])))  # fmt: skip
        if bad is None:
            del claims["role"]
        else:
            claims["role"] = bad
        token = _sign(creds, claims, ed)
    elif label == "bad_sub":
        bad = draw(st.one_of(st.none(), bad_ids(), st.integers(), st.just(["B1"])))
        if bad is None:
            del claims["sub"]
        else:
            claims["sub"] = bad
        token = _sign(creds, claims, ed)
    elif label == "unicode":
        if draw(st.booleans()):
            good = _sign(creds, claims, ed)
            at = draw(st.integers(0, len(good)))
            token = good[:at] + draw(_NON_ASCII) + good[at:]
        else:
            token = draw(_NON_ASCII) + draw(_JUNK)
    elif label == "huge":
        size = draw(st.integers(MAX_TOKEN + 1, 4 * MAX_TOKEN))
        if draw(st.booleans()):
            claims["pad"] = "x" * size
            token = _sign(creds, claims, ed)
        else:
            token = "a" * (size // 3) + "." + "b" * (size // 3) + "." + "c" * (size // 3 + 3)
    elif label == "apikey_unknown":
        known = {k.key_id for k in creds.api_keys}
        key_id = draw(VALID_IDS.filter(lambda v: v not in known))
        token = f"isk_{key_id}_{draw(st.from_regex(r'[0-9a-f]{64}', fullmatch=True))}"
    elif label == "apikey_wrong_secret":
        known_key = draw(st.sampled_from(creds.api_keys))
        real = known_key.key.rpartition("_")[2]
        wrong = draw(st.from_regex(r"[0-9a-f]{64}", fullmatch=True).filter(lambda v: v != real))
        token = f"isk_{known_key.key_id}_{wrong}"
    elif label == "apikey_revoked":
        token = draw(st.sampled_from(creds.revoked())).key
    elif label == "apikey_malformed":
        raw: str = draw(st.sampled_from(creds.api_keys)).key
        token = draw(st.one_of(
            st.just(raw.upper()), st.just(raw[:-1]), st.just(raw + "0"), st.just(raw + "_"),
            st.just("isk_"), _JUNK.map(lambda v: "isk_" + v),
            st.just(raw.replace("isk_", "isk-")),
        ).filter(lambda v: v != raw))  # fmt: skip
        if token.startswith("isk-"):
            token = "isk_" + token  # still an API key to the node, and a bad one
    else:
        raise AssertionError(label)
    return label, token, None


@dataclass(frozen=True)
class AuthCase:
    """A request and the credential it carries."""

    case: Case
    credential: str
    principal: tuple[str, str] | None  # (sub, role) of a good credential

    def reproducer(self) -> str:
        who = f"{self.credential} as {self.principal}" if self.principal else self.credential
        return f"[auth: {who}] {self.case.reproducer()}"


def _with_credential(case: Case, header_name: str, value: str | None, nats_safe: bool) -> Case:
    headers = {k: v for k, v in case.headers.items() if k.lower() != "authorization"}
    if value is not None:
        headers[header_name] = _nats_header(value) if nats_safe else value
    return Case(case.kind, case.defect, case.subject, headers, case.payload, case.values)


def _body_buyer(case: Case) -> Any:
    if "buyer_id" in case.values:
        return case.values["buyer_id"]
    try:
        body = json.loads(case.payload or b"{}")
    except (ValueError, RecursionError):  # a defect: refused before anyone's rights
        return None
    return body.get("buyer_id") if isinstance(body, dict) else None


def refused_at_routing(ac: AuthCase) -> bool:
    """Whether the oracle expects the node to refuse ``ac`` before any actor sees it
    (the only cases sent to a live node: they must change nothing)."""
    case = ac.case
    if ac.principal is None or case.defect not in ("valid", "wild"):
        return case.defect != "wild"
    if case.defect == "wild":
        return False
    found = contract_route(case.subject)
    assert found is not None
    sub, role = ac.principal
    return not allowed(role, sub, case.kind, found[1], _body_buyer(case))


@functools.cache
@st.composite
def auth_case(
    draw: st.DrawFn,
    creds: Credentials,
    world: World = World(),
    nats_safe: bool = False,
    kind: str | None = None,
    label: str | None = None,
    refusals_only: bool = False,
) -> AuthCase:
    """A request (valid, defective or, in process, wild) with one credential.
    ``refusals_only`` keeps to requests the node must refuse at routing (for a live
    node: a good credential then goes with a defect, or with a valid request its
    principal may not send)."""
    label, token, principal = draw(credential(creds, world, label))
    bases = [defective_case(world, nats_safe, kind)]
    if kind is None or kind in CONTRACT:
        bases.append(valid_case(world, kind))
    if not nats_safe and not refusals_only:
        bases.append(wild_case(world, kind))
    case = draw(st.one_of(bases))
    if nats_safe and case.defect == "valid":  # what NATS carries unchanged
        case = Case(case.kind, case.defect, case.subject,
                    {k: _nats_header(v) for k, v in case.headers.items()}, case.payload,
                    case.values)  # fmt: skip
    name = draw(_AUTH_NAMES)
    if label == "missing":
        value = None
    elif label == "not_bearer":
        value = draw(st.one_of(
            st.sampled_from(["", "Bearer", "Bearer   ", "Basic Zm9vOmJhcg==", "Token abc",
                             "JWT x.y.z", "isk_a_b", "Bearer\tx"]),
            _JUNK.filter(lambda v: v.strip().partition(" ")[0].lower() != "bearer"),
        ))  # fmt: skip
        if nats_safe and value.strip(" \t\x0b\x0c") == "" and value != "":
            value = ""
    else:
        assert token is not None
        value = f"{draw(_SCHEMES)} {token}"
    ac = AuthCase(_with_credential(case, name, value, nats_safe), label, principal)
    if refusals_only and not refused_at_routing(ac):  # a principal within its rights
        case = draw(defective_case(world, nats_safe, case.kind))
        ac = AuthCase(_with_credential(case, name, value, nats_safe), label, principal)
    return ac


def judge_auth(ac: AuthCase, outcome: Outcome, now: float = EPOCH) -> str:
    """The bucket of ``outcome`` for a request with a credential, or FuzzFailure."""
    case = ac.case
    if isinstance(outcome, Crash):
        raise FuzzFailure(f"the route raised {outcome.error!r}\n{outcome.trace}")
    if isinstance(outcome, Unrouted):
        return judge(case, outcome, now)
    if ac.principal is None:  # bad credentials come first, whatever else is wrong
        if isinstance(outcome, Routed | Accepted):
            raise FuzzFailure(f"accepted a request with {ac.credential} credentials")
        code = error_code(outcome)
        if code != "unauthorized":
            raise FuzzFailure(f"{ac.credential} credentials: expected unauthorized, got "
                              f"{outcome[:300]!r}")  # fmt: skip
        return code
    sub, role = ac.principal
    if isinstance(outcome, Routed | Accepted):
        bucket = judge(case, outcome, now)  # the body and ids are the contract's
        if isinstance(outcome, Routed):
            request = outcome.message
            got = request.principal
            if got is None or (got.sub, got.role) != (sub, role):
                raise FuzzFailure(f"routed with principal {got!r}, the credential is {sub}/{role}")
            found = contract_route(case.subject)
            assert found is not None
            buyer = getattr(request.body, "buyer_id", None)
            if not allowed(role, sub, str(request.kind), found[1], buyer):
                raise FuzzFailure(f"{sub}/{role} may not send {request.kind}, yet it was routed")
        elif not allowed(role, sub, outcome.kind, {}, None):
            raise FuzzFailure(f"{sub}/{role} may not send {outcome.kind}, yet it was accepted")
        return bucket
    code = error_code(outcome)
    if code == "unauthorized":
        raise FuzzFailure(f"refused a good {ac.credential} credential: {outcome[:300]!r}")
    if case.defect == "wild":
        if code not in ROUTING_CODES | {"forbidden"}:
            raise FuzzFailure(f"{code} is not decided at routing")
        return code
    found = contract_route(case.subject)
    permitted = found is not None and allowed(role, sub, case.kind, found[1], _body_buyer(case))
    if case.defect == "valid":
        if permitted:
            return judge(case, outcome, now)  # overloaded (a rated buyer) or a mismatch
        if code != "forbidden":
            raise FuzzFailure(f"{sub}/{role} outside its rights: expected forbidden, got "
                              f"{outcome[:300]!r}")  # fmt: skip
        return code
    if case.defect == "deadline_passed" and not permitted:
        expected = frozenset({"forbidden"})  # forbidden is decided before the deadline
    else:
        expected = expected_codes(case)
    if code not in expected:
        raise FuzzFailure(f"expected {sorted(expected)}, got {outcome[:300]!r}")
    return code
