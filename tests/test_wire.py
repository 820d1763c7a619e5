"""The wire layer against the contract: bodies, subjects, headers, replies, views."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import iceshop.wire as wire
from actors.errors import (
    ActorFailed,
    ActorStopped,
    CommitFailed,
    DeadlineExceeded,
    JournalUnavailable,
    NoResponders,
    Overloaded,
)
from iceshop.wire import (
    COMMAND_TYPES,
    MAX_BODY_BYTES,
    NO_HEADERS,
    SUBJECT_IDS,
    SUBJECTS,
    AdminCancelWindow,
    ApproveOffer,
    CancelIntent,
    ClusterStatus,
    ClusterStatusReply,
    CommandKind,
    CreateApiKey,
    DecisionMade,
    DecisionView,
    DemandUpdated,
    ErrorCode,
    ErrorReply,
    Event,
    GetDecision,
    GetWindow,
    Join,
    JoinReply,
    Leave,
    ListReservations,
    ListWindows,
    NodeStatus,
    OfferView,
    Reason,
    RegisterBuyer,
    RegisterBuyerReply,
    RegisterSeller,
    RejectOffer,
    ReservationsReply,
    ReservationView,
    RevokeApiKey,
    Route,
    ShardStatus,
    ShopError,
    SubmitIntent,
    UpsertListing,
    WindowView,
    command_subject,
    decode_command,
    decode_reply,
    decode_request,
    encode,
    encode_error,
    encode_ok,
    event_subject,
    format_time,
    given_fields,
    parse_headers,
    parse_subject,
    parse_time,
    route,
    to_shop_error,
    validate_id,
    validate_prefix,
)

K = CommandKind
UNSET = msgspec.UNSET
MAX_INT = 2**53 - 1

# --------------------------------------------------------------------------- fixtures

# The smallest valid body of every command, and what it decodes to.
MINIMAL: dict[CommandKind, tuple[dict[str, Any], msgspec.Struct]] = {
    K.BUYER_REGISTER: (
        {"name": "Ayse", "phone": "+905551234567"},
        RegisterBuyer(name="Ayse", phone="+905551234567"),
    ),
    K.SELLER_REGISTER: ({"name": "Shop"}, RegisterSeller(name="Shop")),
    K.LISTING_UPSERT: (
        {
            "product_id": "p1",
            "title": "Kettle",
            "list_price_minor": 1000,
            "floor_price_minor": 800,
            "stock": 5,
        },
        UpsertListing(
            product_id="p1",
            title="Kettle",
            list_price_minor=1000,
            floor_price_minor=800,
            stock=5,
        ),  # currency omitted: UNSET, resolved by the seller (the listing's, else TRY)
    ),
    K.INTENT_SUBMIT: (
        {"intent_id": "i1", "product_id": "p1", "max_price_minor": 900},
        SubmitIntent(
            intent_id="i1", product_id="p1", quantity=1, max_price_minor=900, ttl_s=86400.0
        ),
    ),
    K.INTENT_CANCEL: ({}, CancelIntent()),
    K.WINDOW_JOIN: ({"join_id": "j1", "buyer_id": "b1"}, Join(join_id="j1", buyer_id="b1")),
    K.WINDOW_LEAVE: ({"join_id": "j1", "buyer_id": "b1"}, Leave(join_id="j1", buyer_id="b1")),
    K.WINDOW_GET: ({}, GetWindow()),
    K.WINDOW_RESERVATIONS: ({}, ListReservations(limit=100, cursor=None)),
    K.WINDOWS_LIST: ({}, ListWindows(limit=100)),
    K.DECISION_GET: ({}, GetDecision()),
    K.OFFER_APPROVE: ({}, ApproveOffer()),
    K.OFFER_REJECT: ({}, RejectOffer()),
    K.ADMIN_WINDOW_CANCEL: ({"reason": "fraud"}, AdminCancelWindow(reason="fraud")),
    K.CLUSTER_STATUS: ({}, ClusterStatus()),
    K.APIKEY_CREATE: ({"role": "gateway"}, CreateApiKey(role="gateway")),
    K.APIKEY_REVOKE: ({}, RevokeApiKey()),
}

# Every field given, none left to its default.
FULL: dict[CommandKind, tuple[dict[str, Any], msgspec.Struct]] = {
    K.BUYER_REGISTER: (
        {"name": "Ayşe", "phone": "+15551234567", "locale": "en", "whatsapp_opt_in": True},
        RegisterBuyer(name="Ayşe", phone="+15551234567", locale="en", whatsapp_opt_in=True),
    ),
    K.SELLER_REGISTER: (
        {"name": "Shop", "max_active_windows": 0, "auto_approve": False},
        RegisterSeller(name="Shop", max_active_windows=0, auto_approve=False),
    ),
    K.LISTING_UPSERT: (
        {
            "product_id": "P_1-x",
            "title": "T",
            "list_price_minor": MAX_INT,
            "floor_price_minor": 0,
            "stock": 0,
            "currency": "USD",
        },
        UpsertListing(
            product_id="P_1-x",
            title="T",
            list_price_minor=MAX_INT,
            floor_price_minor=0,
            stock=0,
            currency="USD",
        ),
    ),
    K.INTENT_SUBMIT: (
        {
            "intent_id": "i1",
            "product_id": "p1",
            "quantity": 3,
            "max_price_minor": 0,
            "ttl_s": 90.5,
        },
        SubmitIntent(intent_id="i1", product_id="p1", quantity=3, max_price_minor=0, ttl_s=90.5),
    ),
    K.WINDOW_JOIN: (
        {"join_id": "j1", "buyer_id": "b1", "quantity": 2},
        Join(join_id="j1", buyer_id="b1", quantity=2),
    ),
    K.WINDOW_RESERVATIONS: (
        {"limit": 500, "cursor": "abc"},
        ListReservations(limit=500, cursor="abc"),
    ),
    K.WINDOWS_LIST: (
        {"state": "active", "product_id": "p1", "seller_id": "s1", "limit": 1, "cursor": "c"},
        ListWindows(state="active", product_id="p1", seller_id="s1", limit=1, cursor="c"),
    ),
    K.APIKEY_CREATE: (
        {"role": "seller", "principal": "S1", "note": "ERP sync"},
        CreateApiKey(role="seller", principal="S1", note="ERP sync"),
    ),
}

BAD_IDS = ["a.b", "*", ">", "a b", " ", "x" * 65, "", "ç", "日本", "a\n", "a\x00", "a/b", "a*"]


def body(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def invalid(kind: CommandKind, payload: bytes) -> ShopError:
    with pytest.raises(ShopError) as info:
        decode_command(kind, payload)
    assert info.value.code is ErrorCode.INVALID_REQUEST
    assert not info.value.retryable
    return info.value


def invalid_field(kind: CommandKind, value: dict[str, Any], field: str) -> ShopError:
    err = invalid(kind, body(value))
    assert err.details == {"field": field}, err
    assert field in err.message
    return err


def with_(kind: CommandKind, **changes: Any) -> dict[str, Any]:
    return {**MINIMAL[kind][0], **changes}


# --------------------------------------------------------------------------- errors


def test_error_codes_are_the_contracts() -> None:
    assert {c.value for c in ErrorCode} == {
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
    assert {c.value for c in ErrorCode if c.retryable} == {"overloaded", "unavailable", "internal"}


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (Overloaded(), ErrorCode.OVERLOADED),
        (DeadlineExceeded(), ErrorCode.UNAVAILABLE),
        (CommitFailed(), ErrorCode.UNAVAILABLE),
        (JournalUnavailable(), ErrorCode.UNAVAILABLE),
        (ActorStopped(), ErrorCode.UNAVAILABLE),
        (NoResponders(), ErrorCode.UNAVAILABLE),
        (TimeoutError(), ErrorCode.UNAVAILABLE),
        (ActorFailed(), ErrorCode.INTERNAL),
        (RuntimeError("secret path /x"), ErrorCode.INTERNAL),
    ],
)
def test_to_shop_error_maps_runtime_errors(exc: BaseException, code: ErrorCode) -> None:
    err = to_shop_error(exc)
    assert err.code is code
    assert err.retryable
    assert "secret" not in err.message


def test_to_shop_error_keeps_shop_errors() -> None:
    original = ShopError(ErrorCode.SOLD_OUT, "gone")
    assert to_shop_error(original) is original


# --------------------------------------------------------------------------- envelope


def test_ok_envelope_is_exact() -> None:
    reply = RegisterBuyerReply(buyer_id="b1", created=True)
    assert encode_ok(reply) == b'{"ok":true,"data":{"buyer_id":"b1","created":true}}'
    assert json.loads(encode_ok({"x": [1, None]})) == {"ok": True, "data": {"x": [1, None]}}


def test_error_envelope_with_and_without_details() -> None:
    sold = ShopError(ErrorCode.INSUFFICIENT_STOCK, "only 2 left", {"available": 2})
    assert json.loads(encode_error(sold)) == {
        "ok": False,
        "error": {
            "code": "insufficient_stock",
            "message": "only 2 left",
            "retryable": False,
            "details": {"available": 2},
        },
    }
    busy = ShopError(ErrorCode.OVERLOADED, "busy")
    assert encode_error(busy) == (
        b'{"ok":false,"error":{"code":"overloaded","message":"busy","retryable":true}}'
    )
    assert json.loads(encode_error(busy.to_reply()))["error"]["code"] == "overloaded"


def test_error_envelope_hides_unexpected_exceptions() -> None:
    raw = encode_error(ValueError("/etc/secret"))
    assert b"secret" not in raw
    assert json.loads(raw)["error"] == {
        "code": "internal",
        "message": "internal error",
        "retryable": True,
    }


def test_decode_reply_returns_data_or_raises() -> None:
    joined = JoinReply(
        join_id="j",
        window_id="w",
        status="reserved",
        quantity=2,
        unit_price_minor=5,
        currency="TRY",
    )
    assert decode_reply(encode_ok(joined), JoinReply) == joined
    assert decode_reply(encode_ok({"a": 1})) == {"a": 1}
    with pytest.raises(ShopError) as info:
        decode_reply(encode_error(ShopError(ErrorCode.SOLD_OUT, "gone", {"available": 0})))
    assert info.value.code is ErrorCode.SOLD_OUT
    assert info.value.details == {"available": 0}
    with pytest.raises(ShopError) as bad:
        decode_reply(b"not json")
    assert bad.value.code is ErrorCode.INTERNAL


# --------------------------------------------------------------------------- times


def test_format_time() -> None:
    assert format_time(0) == "1970-01-01T00:00:00.000Z"
    assert format_time(1_700_000_000.1234) == "2023-11-14T22:13:20.123Z"
    assert format_time(0.9996) == "1970-01-01T00:00:01.000Z"
    assert format_time(951_782_400.5) == "2000-02-29T00:00:00.500Z"
    with pytest.raises(ValueError, match="range"):
        format_time(-1)


def test_parse_time() -> None:
    assert parse_time("2023-11-14T22:13:20.123Z") == pytest.approx(1_700_000_000.123)
    assert parse_time("1970-01-01T00:00:00Z") == 0.0
    assert parse_time("1970-01-01T00:00:00.5Z") == 0.5
    for bad in [
        "2023-11-14 22:13:20.123Z",
        "2023-11-14T22:13:20.123+00:00",
        "2023-11-14T22:13:20.123z",
        "2023-02-30T00:00:00.000Z",
        "2023-11-14T24:00:00.000Z",
        "2023-13-01T00:00:00.000Z",
        "2023-11-14T22:13:20.123Z\n",
        "\u0662\u0660\u0663\u0660-01-31T12:00:00.000Z",  # Arabic-Indic digits are not digits here
        "",
    ]:
        with pytest.raises(ValueError, match="time"):
            parse_time(bad)


@given(st.integers(min_value=0, max_value=253402300799999))
def test_times_round_trip(millis: int) -> None:
    text = format_time(millis / 1000)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text)
    assert round(parse_time(text) * 1000) == millis


# --------------------------------------------------------------------------- headers


def test_headers_are_matched_case_insensitively() -> None:
    h = parse_headers(
        {
            "AUTHORIZATION": "bearer tok.en",
            "ICESHOP-deadline": "2025-01-31T12:00:00.000Z",
            "TraceParent": "00-abc-def-01",
            "Other": "x",
        }
    )
    assert h.authorization == "bearer tok.en"
    assert h.bearer_token() == "tok.en"
    assert h.traceparent == "00-abc-def-01"
    assert h.deadline_at() == 1_738_324_800.0
    assert parse_headers(None) is NO_HEADERS
    assert parse_headers({}) is NO_HEADERS
    assert NO_HEADERS.deadline_at() is None
    assert NO_HEADERS.bearer_token() is None


@pytest.mark.parametrize("value", ["Basic abc", "Bearer", "Bearer   ", "token"])
def test_non_bearer_authorization_has_no_token(value: str) -> None:
    assert parse_headers({"Authorization": value}).bearer_token() is None


def test_malformed_deadline_is_invalid_request() -> None:
    h = parse_headers({"Iceshop-Deadline": "tomorrow"})
    with pytest.raises(ShopError) as info:
        h.deadline_at()
    assert info.value.code is ErrorCode.INVALID_REQUEST
    assert info.value.details == {"field": "Iceshop-Deadline"}


# --------------------------------------------------------------------------- subjects


def sample_ids(kind: CommandKind) -> dict[str, str]:
    return {name: f"{name[0]}-{i}" for i, name in enumerate(SUBJECT_IDS[kind])}


@pytest.mark.parametrize("kind", list(CommandKind))
@pytest.mark.parametrize("prefix", ["iceshop", "acme.shop.v1"])
def test_every_subject_routes(kind: CommandKind, prefix: str) -> None:
    ids = sample_ids(kind)
    subject = command_subject(kind, prefix, **ids)
    assert subject == f"{prefix}.{SUBJECTS[kind].format(**ids)}"
    assert parse_subject(subject, prefix) == Route(kind, ids)
    assert route(subject[len(prefix) + 1 :].split(".")) == Route(kind, ids)


def test_subject_examples() -> None:
    assert parse_subject("iceshop.buyers.B1.intents.I-9.cancel") == Route(
        K.INTENT_CANCEL, {"buyer_id": "B1", "intent_id": "I-9"}
    )
    assert parse_subject("iceshop.sellers.s1.offers.o_1.reject") == Route(
        K.OFFER_REJECT, {"seller_id": "s1", "offer_id": "o_1"}
    )
    assert parse_subject("iceshop.windows.list") == Route(K.WINDOWS_LIST, {})
    # "list" is a fine window id when the subject has the join shape
    assert parse_subject("iceshop.windows.list.join") == Route(K.WINDOW_JOIN, {"window_id": "list"})
    assert parse_subject("iceshop.admin.windows.w1.cancel").kind is K.ADMIN_WINDOW_CANCEL
    assert parse_subject("iceshop.cluster.status").kind is K.CLUSTER_STATUS


@pytest.mark.parametrize(
    "subject",
    [
        "iceshop",
        "iceshop.",
        "iceshop.windows",
        "iceshop.windows.w1",
        "iceshop.windows.w1.explode",
        "iceshop.windows.w1.join.now",
        "iceshop.windows.list.extra",
        "iceshop.buyers.b1.intents.i1.cancel.x",
        "iceshop.buyers.b1.orders.i1.cancel",
        "iceshop.sellers.s1.listings.delete",
        "iceshop.admin.sellers.w1.cancel",
        "iceshopx.windows.list",
        "other.windows.list",
        "iceshop.Windows.list",
        "iceshop.windows.>",
        "iceshop.cluster.*",
    ],
)
def test_unknown_subjects_are_invalid(subject: str) -> None:
    with pytest.raises(ShopError) as info:
        parse_subject(subject)
    assert info.value.code is ErrorCode.INVALID_REQUEST
    assert "unknown command subject" in info.value.message


@pytest.mark.parametrize("bad", [b for b in BAD_IDS if "." not in b])
@pytest.mark.parametrize(
    ("template", "field"),
    [
        ("iceshop.windows.{}.join", "window_id"),
        ("iceshop.buyers.{}.register", "buyer_id"),
        ("iceshop.buyers.b1.intents.{}.cancel", "intent_id"),
        ("iceshop.sellers.{}.offers.o1.approve", "seller_id"),
        ("iceshop.decisions.{}.get", "decision_id"),
    ],
)
def test_unsafe_subject_ids_are_invalid(bad: str, template: str, field: str) -> None:
    with pytest.raises(ShopError) as info:
        parse_subject(template.format(bad))
    assert info.value.code is ErrorCode.INVALID_REQUEST
    assert info.value.details == {"field": field}


def test_dotted_id_changes_the_subject_shape() -> None:
    # "a.b" as a window id makes a 4-token subject: not a command at all
    with pytest.raises(ShopError, match="unknown command subject"):
        parse_subject("iceshop.windows.a.b.join")


def test_validate_id() -> None:
    assert validate_id("A-z_09", "buyer_id") == "A-z_09"
    assert validate_id("x" * 64, "buyer_id") == "x" * 64
    for bad in BAD_IDS:
        with pytest.raises(ShopError) as info:
            validate_id(bad, "buyer_id")
        assert info.value.details == {"field": "buyer_id"}


def test_command_subject_checks_ids() -> None:
    with pytest.raises(ShopError):
        command_subject(K.WINDOW_JOIN, window_id="a*")
    with pytest.raises(TypeError):
        command_subject(K.WINDOW_JOIN, buyer_id="b1")
    assert event_subject("window", "w1", "joined") == "iceshop.events.window.w1.joined"
    assert validate_prefix("a.b") == ("a", "b")
    for bad in ["", "a.", "a.*", "a b", ">"]:
        with pytest.raises(ValueError, match="prefix"):
            validate_prefix(bad)


# --------------------------------------------------------------------------- bodies


def test_every_command_has_a_decoder_and_a_subject() -> None:
    assert set(COMMAND_TYPES) == set(CommandKind) == set(SUBJECTS) == set(MINIMAL)


@pytest.mark.parametrize("kind", list(MINIMAL))
def test_minimal_bodies_decode_with_defaults(kind: CommandKind) -> None:
    value, expected = MINIMAL[kind]
    decoded = decode_command(kind, body(value))
    assert type(decoded) is COMMAND_TYPES[kind]
    assert decoded == expected


@pytest.mark.parametrize("kind", list(FULL))
def test_full_bodies_decode(kind: CommandKind) -> None:
    value, expected = FULL[kind]
    assert decode_command(kind, body(value)) == expected


@pytest.mark.parametrize("kind", [k for k, (v, _) in MINIMAL.items() if not v])
def test_empty_body_counts_as_empty_object(kind: CommandKind) -> None:
    assert decode_command(kind, b"") == decode_command(kind, b"{}") == MINIMAL[kind][1]


def test_empty_body_misses_required_fields() -> None:
    err = invalid(K.WINDOW_JOIN, b"")
    assert err.details == {"field": "join_id"}
    assert "missing" in err.message


def test_registration_leaves_omitted_fields_unset() -> None:
    buyer = decode_command(K.BUYER_REGISTER, body(MINIMAL[K.BUYER_REGISTER][0]))
    assert isinstance(buyer, RegisterBuyer)
    assert buyer.locale is UNSET
    assert buyer.whatsapp_opt_in is UNSET
    assert given_fields(buyer) == {"name": "Ayse", "phone": "+905551234567"}
    seller = decode_command(K.SELLER_REGISTER, b'{"name":"S","auto_approve":false}')
    assert given_fields(seller) == {"name": "S", "auto_approve": False}
    assert wire.DEFAULT_LOCALE == "tr"
    assert wire.DEFAULT_WHATSAPP_OPT_IN is False
    assert wire.DEFAULT_MAX_ACTIVE_WINDOWS == 3
    assert wire.DEFAULT_AUTO_APPROVE is True


@pytest.mark.parametrize("kind", list(CommandKind))
@pytest.mark.parametrize(
    "payload",
    [b"{", b"{}}", b"{'a': 1}", b'{"a":}', b"nul", b"\xef\xbb\xbf{}", b"   ", b'{"a":NaN}'],
)
def test_malformed_json_is_invalid(kind: CommandKind, payload: bytes) -> None:
    err = invalid(kind, payload)
    # msgspec may find a missing or unknown field before the syntax error after it
    if payload in {b"{", b"nul", b"\xef\xbb\xbf{}", b"   ", b"{'a': 1}"}:
        assert err.message.startswith("malformed JSON")


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        (K.WINDOW_GET, b'{"\xff\xfe":"b"}'),
        (K.WINDOW_JOIN, b'{"\xff\xfe":"b"}'),
        (K.WINDOW_JOIN, b'{"join_id":"\xc3","buyer_id":"b"}'),
        (K.ADMIN_WINDOW_CANCEL, b'{"reason":"\xed\xa0\x80"}'),  # a lone surrogate
    ],
)
def test_invalid_utf8_is_invalid(kind: CommandKind, payload: bytes) -> None:
    err = invalid(kind, payload)
    assert "UTF-8" in err.message


@pytest.mark.parametrize("kind", list(CommandKind))
@pytest.mark.parametrize("payload", [b"[]", b"[{}]", b"1", b'"x"', b"null", b"true"])
def test_non_object_bodies_are_invalid(kind: CommandKind, payload: bytes) -> None:
    err = invalid(kind, payload)
    assert "JSON object" in err.message


@pytest.mark.parametrize("kind", list(CommandKind))
def test_unknown_fields_are_named(kind: CommandKind) -> None:
    err = invalid_field(kind, with_(kind, färg=1), "färg")
    assert "unknown field" in err.message


@pytest.mark.parametrize("kind", [k for k in CommandKind if SUBJECT_IDS[k]])
def test_body_may_not_repeat_the_subject_id(kind: CommandKind) -> None:
    name = SUBJECT_IDS[kind][0]
    err = invalid_field(kind, with_(kind, **{name: "x1"}), name)
    assert "subject" in err.message


STRING_FIELDS = {"name", "title", "reason", "cursor", "join_id", "buyer_id", "intent_id"}
STRING_FIELDS |= {"product_id", "seller_id", "principal", "note"}

BOOL_FIELDS = {"whatsapp_opt_in", "auto_approve"}


def wrong_values(field: str) -> list[Any]:
    """Values of a JSON type the field does not take."""
    wrong: list[Any] = [[], {}, [1]]
    if field not in BOOL_FIELDS:
        wrong.append(True)
    if field not in STRING_FIELDS | {"phone", "locale", "currency", "state", "role"}:
        wrong.append("7")
    if field in STRING_FIELDS | BOOL_FIELDS | {"phone", "locale", "currency", "state", "role"}:
        wrong.append(7)
    return wrong


@pytest.mark.parametrize(
    ("kind", "field", "wrong"),
    [
        (k, f, w)
        for k, cls in COMMAND_TYPES.items()
        for f in cls.__struct_fields__
        for w in wrong_values(f)
    ],
)
def test_wrong_types_name_the_field(kind: CommandKind, field: str, wrong: Any) -> None:
    invalid_field(kind, with_(kind, **{field: wrong}), field)


ID_FIELDS = [
    (K.WINDOW_JOIN, "join_id"),
    (K.WINDOW_JOIN, "buyer_id"),
    (K.WINDOW_LEAVE, "join_id"),
    (K.WINDOW_LEAVE, "buyer_id"),
    (K.INTENT_SUBMIT, "intent_id"),
    (K.INTENT_SUBMIT, "product_id"),
    (K.LISTING_UPSERT, "product_id"),
    (K.WINDOWS_LIST, "product_id"),
    (K.WINDOWS_LIST, "seller_id"),
]


@pytest.mark.parametrize(("kind", "field"), ID_FIELDS)
@pytest.mark.parametrize("bad", BAD_IDS)
def test_unsafe_body_ids_are_invalid(kind: CommandKind, field: str, bad: str) -> None:
    err = invalid_field(kind, with_(kind, **{field: bad}), field)
    if bad:  # the rule is spelled out, not the regex
        assert "1-64 characters" in err.message


@pytest.mark.parametrize(("kind", "field"), ID_FIELDS)
def test_longest_id_is_fine(kind: CommandKind, field: str) -> None:
    decoded = decode_command(kind, body(with_(kind, **{field: "Z" * 64})))
    assert getattr(decoded, field) == "Z" * 64


INT_FIELDS = [
    (K.WINDOW_JOIN, "quantity", 1),
    (K.INTENT_SUBMIT, "quantity", 1),
    (K.INTENT_SUBMIT, "max_price_minor", 0),
    (K.LISTING_UPSERT, "stock", 0),
    (K.LISTING_UPSERT, "floor_price_minor", 0),
    (K.SELLER_REGISTER, "max_active_windows", 0),
    (K.WINDOWS_LIST, "limit", 1),
    (K.WINDOW_RESERVATIONS, "limit", 1),
]


@pytest.mark.parametrize(("kind", "field", "low"), INT_FIELDS)
@pytest.mark.parametrize("literal", ["1.0", "1e3", "1E3", "2e0", "1.5", "-0.0", "1e400"])
def test_integers_have_no_fraction_or_exponent(
    kind: CommandKind, field: str, low: int, literal: str
) -> None:
    raw = body(MINIMAL[kind][0])[:-1] + (b", " if MINIMAL[kind][0] else b"")
    payload = raw + f'"{field}": {literal}}}'.encode()
    invalid(kind, payload)
    assert invalid(kind, payload).details == {"field": field}


@pytest.mark.parametrize(("kind", "field", "low"), INT_FIELDS)
def test_integer_bounds(kind: CommandKind, field: str, low: int) -> None:
    assert getattr(decode_command(kind, body(with_(kind, **{field: low}))), field) == low
    invalid_field(kind, with_(kind, **{field: low - 1}), field)
    invalid_field(kind, with_(kind, **{field: -1}), field)
    invalid_field(kind, with_(kind, **{field: 2**53}), field)
    invalid_field(kind, with_(kind, **{field: 10**30}), field)


def test_largest_safe_integer_is_fine() -> None:
    decoded = decode_command(K.INTENT_SUBMIT, body(with_(K.INTENT_SUBMIT, max_price_minor=MAX_INT)))
    assert isinstance(decoded, SubmitIntent)
    assert decoded.max_price_minor == MAX_INT


def test_negative_and_zero_quantities_are_invalid() -> None:
    for kind in (K.WINDOW_JOIN, K.INTENT_SUBMIT):
        for q in (0, -1, -(2**53)):
            err = invalid_field(kind, with_(kind, quantity=q), "quantity")
            assert ">= 1" in err.message


def test_limit_bounds() -> None:
    assert decode_command(K.WINDOWS_LIST, b'{"limit":500}') == ListWindows(limit=500)
    invalid_field(K.WINDOWS_LIST, {"limit": 501}, "limit")
    invalid_field(K.WINDOW_RESERVATIONS, {"limit": 0}, "limit")


@pytest.mark.parametrize(
    ("ttl", "ok"),
    [
        (60, True),
        (60.0, True),
        (2_592_000, True),
        (3600.25, True),
        (59.999, False),
        (2_592_000.001, False),
        (0, False),
        (-60, False),
        ("3600", False),
    ],
)
def test_ttl_is_seconds_as_a_number(ttl: Any, ok: bool) -> None:
    value = with_(K.INTENT_SUBMIT, ttl_s=ttl)
    if ok:
        decoded = decode_command(K.INTENT_SUBMIT, body(value))
        assert isinstance(decoded, SubmitIntent)
        assert decoded.ttl_s == float(ttl)
    else:
        invalid_field(K.INTENT_SUBMIT, value, "ttl_s")


def test_ttl_accepts_an_exponent() -> None:
    payload = b'{"intent_id":"i","product_id":"p","max_price_minor":1,"ttl_s":1e4}'
    decoded = decode_command(K.INTENT_SUBMIT, payload)
    assert isinstance(decoded, SubmitIntent)
    assert decoded.ttl_s == 10_000.0


@pytest.mark.parametrize(
    ("phone", "ok"),
    [
        ("+905551234567", True),
        ("+12", True),
        ("+123456789012345", True),
        ("+1", False),
        ("+1234567890123456", False),
        ("905551234567", False),
        ("+0555", False),
        ("+90 555", False),
        ("+90555\n", False),
        ("+٩٠٥٥٥", False),
        ("", False),
    ],
)
def test_phone_is_e164(phone: str, ok: bool) -> None:
    value = with_(K.BUYER_REGISTER, phone=phone)
    if ok:
        decoded = decode_command(K.BUYER_REGISTER, body(value))
        assert isinstance(decoded, RegisterBuyer)
        assert decoded.phone == phone
    else:
        err = invalid_field(K.BUYER_REGISTER, value, "phone")
        assert "E.164" in err.message


@pytest.mark.parametrize("locale", ["de", "TR", "", "tr "])
def test_locale_is_tr_or_en(locale: str) -> None:
    invalid_field(K.BUYER_REGISTER, with_(K.BUYER_REGISTER, locale=locale), "locale")


@pytest.mark.parametrize("currency", ["try", "TR", "TRYY", "T1Y", "", "TRY\n"])
def test_currency_is_three_capitals(currency: str) -> None:
    err = invalid_field(K.LISTING_UPSERT, with_(K.LISTING_UPSERT, currency=currency), "currency")
    assert "ISO 4217" in err.message


@pytest.mark.parametrize("state", ["open", "ACTIVE", ""])
def test_window_state_filter(state: str) -> None:
    invalid_field(K.WINDOWS_LIST, {"state": state}, "state")


@pytest.mark.parametrize(
    ("kind", "field"),
    [(K.BUYER_REGISTER, "name"), (K.LISTING_UPSERT, "title"), (K.ADMIN_WINDOW_CANCEL, "reason")],
)
def test_strings_are_at_most_200_characters(kind: CommandKind, field: str) -> None:
    longest = "ş" * 200  # characters, not bytes
    assert getattr(decode_command(kind, body(with_(kind, **{field: longest}))), field) == longest
    invalid_field(kind, with_(kind, **{field: "x" * 201}), field)
    invalid_field(kind, with_(kind, **{field: ""}), field)


def test_floor_above_list_is_invalid() -> None:
    value = with_(K.LISTING_UPSERT, list_price_minor=100, floor_price_minor=101)
    err = invalid_field(K.LISTING_UPSERT, value, "floor_price_minor")
    assert "list_price_minor" in err.message
    # the same through the null path
    invalid_field(K.LISTING_UPSERT, {**value, "currency": None}, "floor_price_minor")
    equal = with_(K.LISTING_UPSERT, list_price_minor=100, floor_price_minor=100)
    assert isinstance(decode_command(K.LISTING_UPSERT, body(equal)), UpsertListing)


def test_oversized_bodies_are_rejected_before_decoding() -> None:
    base = body(MINIMAL[K.WINDOW_JOIN][0])
    fits = base + b" " * (MAX_BODY_BYTES - len(base))
    assert len(fits) == 64 * 1024
    assert decode_command(K.WINDOW_JOIN, fits) == MINIMAL[K.WINDOW_JOIN][1]
    err = invalid(K.WINDOW_JOIN, fits + b" ")
    assert "65536" in err.message
    # rejected on size even though the bytes are not JSON at all
    assert "65536" in invalid(K.WINDOW_GET, b"\xff" * (MAX_BODY_BYTES + 1)).message


# --------------------------------------------------------------------------- null


def test_null_takes_the_default() -> None:
    assert decode_command(K.WINDOW_JOIN, b'{"join_id":"j1","buyer_id":"b1","quantity":null}') == (
        Join(join_id="j1", buyer_id="b1", quantity=1)
    )
    submit = decode_command(
        K.INTENT_SUBMIT,
        b'{"intent_id":"i","product_id":"p","max_price_minor":1,"ttl_s":null,"quantity":null}',
    )
    assert submit == SubmitIntent(intent_id="i", product_id="p", max_price_minor=1)
    upsert = decode_command(K.LISTING_UPSERT, body(with_(K.LISTING_UPSERT, currency=None)))
    assert isinstance(upsert, UpsertListing)
    assert upsert.currency is UNSET  # omitted: the listing keeps its currency
    assert decode_command(
        K.WINDOWS_LIST, b'{"state":null,"product_id":null,"limit":null,"cursor":null}'
    ) == ListWindows(limit=100)


def test_null_in_registration_means_omitted() -> None:
    decoded = decode_command(
        K.BUYER_REGISTER, body(with_(K.BUYER_REGISTER, locale=None, whatsapp_opt_in=None))
    )
    assert isinstance(decoded, RegisterBuyer)
    assert decoded.locale is UNSET
    assert decoded.whatsapp_opt_in is UNSET


@pytest.mark.parametrize(
    ("kind", "field"),
    [(k, f) for k, (v, _) in MINIMAL.items() for f in v],
)
def test_null_for_a_required_field_is_invalid(kind: CommandKind, field: str) -> None:
    err = invalid_field(kind, with_(kind, **{field: None}), field)
    assert "required" in err.message


def test_null_does_not_hide_other_errors() -> None:
    invalid_field(K.WINDOW_JOIN, with_(K.WINDOW_JOIN, quantity=None, buyer_id="a b"), "buyer_id")
    invalid_field(K.WINDOW_JOIN, with_(K.WINDOW_JOIN, quantity=None, bogus=None), "bogus")
    invalid_field(K.WINDOW_GET, {"bogus": None}, "bogus")


def test_string_null_is_just_text() -> None:
    decoded = decode_command(K.ADMIN_WINDOW_CANCEL, b'{"reason":"null"}')
    assert decoded == AdminCancelWindow(reason="null")


# --------------------------------------------------------------------------- requests


def test_decode_request_routes_then_decodes() -> None:
    routed, command = decode_request(
        "iceshop.windows.w1.join", b'{"join_id":"j1","buyer_id":"b1","quantity":2}'
    )
    assert routed == Route(K.WINDOW_JOIN, {"window_id": "w1"})
    assert command == Join(join_id="j1", buyer_id="b1", quantity=2)
    routed, command = decode_request("eu.shop.cluster.status", b"", prefix="eu.shop")
    assert routed.kind is K.CLUSTER_STATUS
    assert command == ClusterStatus()


def test_subject_id_is_checked_before_the_body() -> None:
    with pytest.raises(ShopError) as info:
        decode_request("iceshop.windows.w*.join", b'{"join_id": "a b", "bogus": 1')
    assert info.value.details == {"field": "window_id"}
    with pytest.raises(ShopError) as unknown:
        decode_request("iceshop.windows.w1.jump", b"{")
    assert "unknown command subject" in unknown.value.message
    with pytest.raises(ShopError) as body_error:
        decode_request("iceshop.windows.w1.join", b'{"join_id":"a b","buyer_id":"b"}')
    assert body_error.value.details == {"field": "join_id"}


# --------------------------------------------------------------------------- views


def window_view(**changes: Any) -> WindowView:
    fields: dict[str, Any] = {
        "window_id": "w1",
        "product_id": "p1",
        "seller_id": "s1",
        "state": "active",
        "outcome": None,
        "close_reason": None,
        "unit_price_minor": 900,
        "currency": "TRY",
        "quantity_total": 10,
        "quantity_reserved": 2,
        "participants": 1,
        "min_participants": 3,
        "max_per_buyer": 2,
        "activates_at": "2025-01-01T00:00:00.000Z",
        "expires_at": "2025-01-01T01:00:00.000Z",
        "decision_id": "d1",
    }
    return WindowView(**{**fields, **changes})


def test_window_view_fields_are_the_contracts() -> None:
    data = json.loads(encode(window_view()))
    assert list(data) == [
        "window_id",
        "product_id",
        "seller_id",
        "state",
        "outcome",
        "close_reason",
        "unit_price_minor",
        "currency",
        "quantity_total",
        "quantity_reserved",
        "participants",
        "min_participants",
        "max_per_buyer",
        "activates_at",
        "expires_at",
        "decision_id",
    ]
    assert data["outcome"] is None  # null, not left out
    page = ReservationsReply(
        reservations=[
            ReservationView(
                join_id="j", buyer_id="b", quantity=1, status="reserved", reserved_at="t"
            )
        ],
        next_cursor=None,
    )
    assert json.loads(encode(page)) == {
        "reservations": [
            {
                "join_id": "j",
                "buyer_id": "b",
                "quantity": 1,
                "status": "reserved",
                "reserved_at": "t",
            }
        ],
        "next_cursor": None,
    }


def decision(reasons: int = 2) -> DecisionView:
    return DecisionView(
        decision_id="d1",
        product_id="p1",
        made_at="2025-01-01T00:00:00.000Z",
        outcome="window_proposed",
        reasons=[
            Reason(code=f"r{i}", text="demand is high", value=12.5, threshold=10)
            for i in range(reasons)
        ],
        inputs={"open_quantity": 12, "score": 3.25},
        offer=OfferView(
            offer_id="o1",
            seller_id="s1",
            unit_price_minor=900,
            quantity=10,
            activates_at="2025-01-01T00:05:00.000Z",
            expires_at="2025-01-01T01:05:00.000Z",
            status="pending",
        ),
        window_id=None,
    )


def test_decision_view_and_event() -> None:
    data = json.loads(encode(decision()))
    assert set(data) == {
        "decision_id",
        "product_id",
        "made_at",
        "outcome",
        "reasons",
        "inputs",
        "offer",
        "window_id",
    }
    assert data["reasons"][0] == {
        "code": "r0",
        "text": "demand is high",
        "value": 12.5,
        "threshold": 10,
    }
    assert set(data["offer"]) == {
        "offer_id",
        "seller_id",
        "unit_price_minor",
        "quantity",
        "activates_at",
        "expires_at",
        "status",
    }
    made = msgspec.json.decode(encode(decision()), type=DecisionMade)
    assert "inputs" not in json.loads(encode(made))
    assert decision(4).reasons[3].code == "r3"
    with pytest.raises(ValueError, match="at most 4"):
        decision(5)


def test_events_round_trip_with_typed_data() -> None:
    event = Event(
        event_id="e1",
        type="updated",
        at=format_time(1),
        seq=7,
        data=DemandUpdated(product_id="p1", score=2.5, open_intents=3, quantity=4),
    )
    raw = encode(event)
    assert json.loads(raw) == {
        "event_id": "e1",
        "type": "updated",
        "at": "1970-01-01T00:00:01.000Z",
        "seq": 7,
        "data": {"product_id": "p1", "score": 2.5, "open_intents": 3, "quantity": 4},
    }
    assert msgspec.json.decode(raw, type=Event[DemandUpdated]) == event


def test_cluster_status_shape() -> None:
    status = ClusterStatusReply(
        nodes=[NodeStatus(node_id="n1", started_at=format_time(0), shards=[0, 1])],
        shards=[ShardStatus(shard=0, owner="n1", lease_age_s=0.25)],
    )
    assert json.loads(encode_ok(status)) == {
        "ok": True,
        "data": {
            "nodes": [
                {"node_id": "n1", "started_at": "1970-01-01T00:00:00.000Z", "shards": [0, 1]}
            ],
            "shards": [{"shard": 0, "owner": "n1", "lease_age_s": 0.25}],
        },
    }


def test_public_surface() -> None:
    assert sorted(set(wire.__all__)) == sorted(wire.__all__)
    for name in wire.__all__:
        assert hasattr(wire, name), name
    for name in ["ErrorCode", "ShopError", "ErrorReply", "decode_command", "encode_ok"]:
        assert name in wire.__all__


def test_structs_are_frozen() -> None:
    join = Join(join_id="j", buyer_id="b")
    with pytest.raises(AttributeError):
        join.quantity = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        window_view().state = "closed"  # type: ignore[misc]
    reply = ErrorReply(code=ErrorCode.SOLD_OUT, message="m", retryable=False)
    with pytest.raises(AttributeError):
        reply.message = "x"  # type: ignore[misc]


# --------------------------------------------------------------------------- properties

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80)
    | st.sampled_from(["j1", "+905551234567", "tr", "TRY", "active", "x" * 65, "a.b"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
ALL_FIELDS = sorted({f for cls in COMMAND_TYPES.values() for f in cls.__struct_fields__})


def check_outcome(kind: CommandKind, payload: bytes) -> None:
    error: ShopError | None = None
    try:
        decoded = decode_command(kind, payload)
    except ShopError as err:
        error = err
    if error is not None:
        assert error.code is ErrorCode.INVALID_REQUEST
        assert error.message
        return
    assert type(decoded) is COMMAND_TYPES[kind]
    assert decode_command(kind, msgspec.json.encode(decoded)) == decoded


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(list(CommandKind)),
    st.dictionaries(st.sampled_from([*ALL_FIELDS, "bogus"]), json_values, max_size=7),
)
def test_any_json_object_decodes_or_is_invalid(kind: CommandKind, value: dict[str, Any]) -> None:
    check_outcome(kind, body(value))


@settings(max_examples=200)
@given(st.sampled_from(list(CommandKind)), json_values | st.binary(max_size=64).map(repr))
def test_any_json_value_decodes_or_is_invalid(kind: CommandKind, value: Any) -> None:
    check_outcome(kind, body(value))


@settings(max_examples=200)
@given(st.sampled_from(list(CommandKind)), st.binary(max_size=200))
def test_any_bytes_decode_or_are_invalid(kind: CommandKind, payload: bytes) -> None:
    check_outcome(kind, payload)


ids = st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z")
texts = st.text(min_size=1, max_size=200)
money = st.integers(min_value=0, max_value=MAX_INT)
quantities = st.integers(min_value=1, max_value=MAX_INT)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.just(UNSET) | strategy


valid_commands = st.one_of(
    st.builds(
        RegisterBuyer,
        name=texts,
        phone=st.from_regex(r"\A\+[1-9][0-9]{1,14}\Z"),
        locale=optional(st.sampled_from(["tr", "en"])),
        whatsapp_opt_in=optional(st.booleans()),
    ),
    st.builds(
        RegisterSeller,
        name=texts,
        max_active_windows=optional(money),
        auto_approve=optional(st.booleans()),
    ),
    st.tuples(money, money).flatmap(
        lambda prices: st.builds(
            UpsertListing,
            product_id=ids,
            title=texts,
            list_price_minor=st.just(max(prices)),
            floor_price_minor=st.just(min(prices)),
            stock=money,
            currency=st.from_regex(r"\A[A-Z]{3}\Z"),
        )
    ),
    st.builds(
        SubmitIntent,
        intent_id=ids,
        product_id=ids,
        quantity=quantities,
        max_price_minor=money,
        ttl_s=st.floats(min_value=60, max_value=2_592_000),
    ),
    st.builds(Join, join_id=ids, buyer_id=ids, quantity=quantities),
    st.builds(Leave, join_id=ids, buyer_id=ids),
    st.builds(
        ListReservations,
        limit=st.integers(1, 500),
        cursor=st.none() | st.text(min_size=1, max_size=200),
    ),
    st.builds(
        ListWindows,
        state=st.none() | st.sampled_from(["scheduled", "active", "closed", "cancelled"]),
        product_id=st.none() | ids,
        seller_id=st.none() | ids,
        limit=st.integers(1, 500),
        cursor=st.none() | st.text(min_size=1, max_size=200),
    ),
    st.builds(AdminCancelWindow, reason=texts),
)
KIND_OF = {cls: kind for kind, cls in COMMAND_TYPES.items()}


@settings(max_examples=150)
@given(valid_commands)
def test_valid_commands_round_trip(command: Any) -> None:
    kind = KIND_OF[type(command)]
    assert decode_command(kind, msgspec.json.encode(command)) == command
    # every field spelled out, defaults included, decodes to the same command
    spelled = {f: getattr(command, f) for f in command.__struct_fields__}
    spelled = {f: v for f, v in spelled.items() if v is not UNSET}
    assert decode_command(kind, body(spelled)) == command


@settings(max_examples=100)
@given(valid_commands, st.data())
def test_null_equals_absent(command: Any, data: st.DataObject) -> None:
    kind = KIND_OF[type(command)]
    cls = type(command)
    spelled = {f: getattr(command, f) for f in command.__struct_fields__}
    spelled = {f: v for f, v in spelled.items() if v is not UNSET}
    optional_fields = [f.name for f in msgspec.structs.fields(cls) if not f.required]
    nulled = data.draw(
        st.sets(st.sampled_from(optional_fields)) if optional_fields else st.just(set())
    )
    with_nulls = {**spelled, **dict.fromkeys(nulled)}
    without = {f: v for f, v in spelled.items() if f not in nulled}
    assert decode_command(kind, body(with_nulls)) == decode_command(kind, body(without))
